//! AWS Signature Version 4, as AWS verifies it: the canonical request
//! (method, normalised and encoded path, sorted query, the signed headers
//! with trimmed values, the payload's SHA-256), the string to sign over the
//! credential scope, and the HMAC chain from the secret key. [`verify`]
//! checks a request's `Authorization` header; [`sign`] makes one (for
//! skiff's own client and for tests).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::sha256_hex;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm SigV4 has.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's time may be from ours, either way (AWS: 15 minutes).
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request is not authenticated, in AWS's words. The messages say no
/// more than AWS says: never which key exists or what the right signature
/// would have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that cannot be read.
    Incomplete(String),
    /// The access key id is not one of ours.
    UnknownKey,
    /// The signature, time or scope is wrong.
    Invalid(String),
}

impl AuthError {
    /// ECS's exception name.
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Invalid(_) => "InvalidSignatureException",
        }
    }

    /// The message.
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "Missing Authentication Token".into(),
            AuthError::Incomplete(m) | AuthError::Invalid(m) => m.clone(),
            AuthError::UnknownKey => {
                "The security token included in the request is invalid.".into()
            }
        }
    }

    fn mismatch() -> AuthError {
        AuthError::Invalid(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .into(),
        )
    }
}

/// The parts of a request that are signed.
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Header names (any case) and values, repeated names allowed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Who signed a request, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key id.
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// The region the request was signed for.
    pub region: String,
    /// The service the request was signed for (`ecs`, `logs`).
    pub service: String,
}

struct Authorization {
    credential: Credential,
    signed_headers: Vec<String>,
    signature: Vec<u8>,
}

fn incomplete(what: &str) -> AuthError {
    AuthError::Incomplete(format!(
        "Authorization header requires '{what}' parameter. Authorization={ALGORITHM} \
         Credential=ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=HEX"
    ))
}

fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            AuthError::Incomplete(format!(
                "Authorization header must use the {ALGORITHM} algorithm (AWS Signature Version 4)"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts.iter().any(|p| p.is_empty()) {
        return Err(AuthError::Incomplete(format!(
            "Credential should be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, \
             got '{credential}'"
        )));
    }
    let signature = decode_hex(signature).ok_or_else(|| {
        AuthError::Incomplete("Signature must be 64 hexadecimal digits".to_string())
    })?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(AuthError::Incomplete(
            "SignedHeaders must be lower-case header names separated by ';'".to_string(),
        ));
    }
    Ok(Authorization {
        credential: Credential {
            access_key_id: parts[0].to_string(),
            date: parts[1].to_string(),
            region: parts[2].to_string(),
            service: parts[3].to_string(),
        },
        signed_headers,
        signature,
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac
}

/// The signing key: the secret's HMAC chain over date, region, service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), region.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), service.as_bytes()).finalize();
    hmac(&k.into_bytes(), b"aws4_request")
        .finalize()
        .into_bytes()
        .into()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters
/// (and `/` when `keep_slash`).
fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical path: dot segments resolved and empty segments dropped,
/// then encoded again (so an encoded path is encoded twice, as AWS does for
/// every service but S3).
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut p = format!("/{}", segments.join("/"));
    if path.ends_with('/') && p.len() > 1 {
        p.push('/');
    }
    uri_encode(p.as_bytes(), true)
}

/// The canonical query: each name and value decoded, encoded strictly,
/// sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as signed: trimmed, runs of spaces made one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn canonical_request(req: &Request, signed_headers: &[String], payload_hash: &str) -> String {
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_path(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

fn string_to_sign(amz_date: &str, c: &Credential, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        c.date,
        c.region,
        c.service,
        sha256_hex(canonical.as_bytes())
    )
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(crate::model::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// `YYYYMMDDTHHMMSSZ` of seconds since the epoch.
pub fn format_amz_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::model::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Verifies `req`'s signature. `secret_of` gives the secret of an access
/// key id, `now` is seconds since the epoch, and `service` the service name
/// the credential scope must carry. Returns who signed it.
pub fn verify<'s>(
    req: &Request,
    secret_of: impl Fn(&str) -> Option<&'s str>,
    now: i64,
    service: &str,
) -> Result<Credential, AuthError> {
    let auth = req.header("authorization").ok_or(AuthError::Missing)?;
    let auth = parse_authorization(auth)?;
    let amz_date = req.header("x-amz-date").ok_or_else(|| {
        AuthError::Incomplete(
            "Authorization header requires existence of a 'X-Amz-Date' header".to_string(),
        )
    })?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Incomplete(format!(
            "X-Amz-Date must be in the form YYYYMMDD'T'HHMMSS'Z', got '{amz_date}'"
        ))
    })?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Invalid(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".to_string(),
        ));
    }
    let secret = secret_of(&auth.credential.access_key_id).ok_or(AuthError::UnknownKey)?;
    if when < now - MAX_SKEW_SECS {
        return Err(AuthError::Invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - MAX_SKEW_SECS),
            format_amz_date(now)
        )));
    }
    if when > now + MAX_SKEW_SECS {
        return Err(AuthError::Invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now + MAX_SKEW_SECS),
            format_amz_date(now)
        )));
    }
    let c = &auth.credential;
    if c.date != amz_date[..8] {
        return Err(AuthError::Invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            c.date,
            &amz_date[..8]
        )));
    }
    if c.service != service {
        return Err(AuthError::Invalid(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let payload_hash = sha256_hex(req.body);
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash);
    let to_sign = string_to_sign(amz_date, c, &canonical);
    let key = signing_key(secret, &c.date, &c.region, &c.service);
    // verify_slice compares in constant time.
    hmac(&key, to_sign.as_bytes())
        .verify_slice(&auth.signature)
        .map_err(|_| AuthError::mismatch())?;
    Ok(auth.credential)
}

/// Signs a request: returns the `X-Amz-Date` and `Authorization` header
/// values. `req.headers` must hold every header to sign, `host` included.
pub fn sign(
    req: &Request,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: i64,
) -> (String, String) {
    let amz_date = format_amz_date(now);
    let c = Credential {
        access_key_id: access_key_id.to_string(),
        date: amz_date[..8].to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    let mut signed: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .chain(["x-amz-date".to_string()])
        .collect();
    signed.sort();
    signed.dedup();
    let mut headers = req.headers.to_vec();
    headers.push(("x-amz-date", &amz_date));
    let with_date = Request {
        headers: &headers,
        ..*req
    };
    let canonical = canonical_request(&with_date, &signed, &sha256_hex(req.body));
    let to_sign = string_to_sign(&amz_date, &c, &canonical);
    let key = signing_key(secret, &c.date, region, service);
    let signature = hex(&hmac(&key, to_sign.as_bytes()).finalize().into_bytes());
    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id}/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={signature}",
        c.date,
        signed.join(";")
    );
    (amz_date, authorization)
}

#[cfg(test)]
mod tests;
