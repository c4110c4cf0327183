//! ECS's documents as validated types: names, ARNs, task definitions.
//!
//! Raw JSON comes in; a validated type comes out, or a [`FieldError`] that
//! names the field (`containerDefinitions[1].memory`) and says what would be
//! right. The raw document is kept verbatim beside the validated type, so
//! that what a client registered is what it reads back.

pub mod acme;
pub mod arn;
pub mod cluster;
pub mod connect;
pub mod definitions;
pub mod domain;
pub mod hostfs;
pub mod image;
pub mod leader;
pub mod logs;
pub mod node;
pub mod outbound;
pub mod overrides;
pub mod protection;
pub mod provider;
pub mod scaling;
pub mod service;
pub mod settings;
pub mod tags;
pub mod task;
pub mod taskdef;

use std::fmt;

/// A bad value in a request: which field, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as the client wrote it (`containerDefinitions[0].image`).
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Decodes `part` of a document, found at `at` (`overrides`; `""` for the
/// whole of it), into its typed shape; a value of the wrong type is a
/// [`FieldError`] naming its path from the document's root
/// (`overrides.containerOverrides[0].command[1]`; an empty field when the
/// whole document is of the wrong type).
pub fn decode_at<T: serde::de::DeserializeOwned>(
    part: &serde_json::Value,
    at: &str,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(part).map_err(|e| {
        let path = e.path().to_string();
        let field = match (at, path.as_str()) {
            (a, ".") => a.to_string(),
            ("", p) => p.to_string(),
            (a, p) if p.starts_with('[') => format!("{a}{p}"),
            (a, p) => format!("{a}.{p}"),
        };
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// Seconds since the epoch, as ECS's JSON 1.1 timestamps are written.
pub fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// `secs` since the epoch as RFC 3339 in UTC: `2026-12-01T19:50:10Z`,
/// or `2026-12-01T19:50:10.125Z` when there are milliseconds.
pub fn rfc3339(secs: f64) -> String {
    let millis = (secs * 1000.0).round() as i64;
    let (whole, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, rem) = (whole.div_euclid(86_400), whole.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let fraction = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}")
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's date algorithms.
/// Days since 1970-01-01 of (year, month, day).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// A random id: 32 hex digits, as ECS task ids. Unique, not secret: each
/// thread draws from its own generator, seeded once from the OS (a
/// system call per id showed in the ingress's profile: every request that
/// comes without an `X-Request-Id` gets one).
pub fn new_id() -> String {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(id_seed());
    }
    // SplitMix64: a full-period sequence per thread; each output mixes the
    // state so that consecutive ids share no visible digits.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    format!("{:016x}{:016x}", next(), next())
}

/// 64 bits from the OS, or where it has none to give, from the clock and
/// the thread (ids must still differ between threads and processes).
fn id_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::thread::current().id().hash(&mut h);
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}

/// The SHA-256 of `data`, in lowercase hex: a module's digest, a
/// payload's hash in a signature.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a name of a cluster, family or container: 1-255 letters,
/// numbers, hyphens and underscores.
pub fn check_name(field: &str, what: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{name:?} is not a valid {what} name: use 1 to 255 letters, numbers, hyphens and underscores"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_differ_within_and_across_threads() {
        let mut ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        for _ in 0..4 {
            ids.extend(
                std::thread::spawn(|| (0..1000).map(|_| new_id()).collect::<Vec<_>>())
                    .join()
                    .unwrap(),
            );
        }
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "an id repeated");
    }

    #[test]
    fn names() {
        assert!(check_name("family", "family", "web-app_2").is_ok());
        let e = check_name("family", "family", "my app").unwrap_err();
        assert_eq!(e.field, "family");
        assert!(e
            .message
            .contains("letters, numbers, hyphens and underscores"));
        assert!(check_name("f", "family", "").is_err());
        assert!(check_name("f", "family", &"a".repeat(256)).is_err());
    }
}
