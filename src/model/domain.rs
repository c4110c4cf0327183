//! Custom domains: the hostnames a service answers on besides
//! `SERVICE.CLUSTER.DOMAIN`, from its containers' `skiff.domains` label.
//!
//! A name is a DNS hostname (letters, digits and hyphens in dot-separated
//! labels, at least two labels), kept in lowercase; `*.example.com` is a
//! wildcard for any one label under `example.com` (as in a TLS
//! certificate: not `example.com` itself, not `a.b.example.com`). Each
//! name belongs to one service at a time: the store holds a claim record
//! per name ([`claim_key`]) written in the same transaction as the
//! service, so a second claim is refused naming the owner.

use serde::{Deserialize, Serialize};

/// The store prefix of domain claims.
pub const PREFIX: &str = "domains/";

/// The most names one task definition may claim.
pub const MAX_DOMAINS: usize = 100;

/// The claim record of `name`.
pub fn claim_key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Who owns a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The cluster of the owning service.
    pub cluster: String,
    /// The owning service.
    pub service: String,
    /// Whether plain HTTP requests for the name are redirected to HTTPS
    /// (`skiff.https-redirect`).
    #[serde(default)]
    pub https_redirect: bool,
}

/// What is wrong with a domain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// Nothing.
    #[error("is empty")]
    Empty,
    /// Past DNS's 253.
    #[error("is longer than 253 characters")]
    TooLong,
    /// A single label (`localhost`).
    #[error("is not a domain name with at least two labels")]
    OneLabel,
    /// An empty label, or one past 63 characters.
    #[error("has an empty label or one longer than 63 characters")]
    BadLabelLength,
    /// `*` anywhere but as the whole first label.
    #[error("has a wildcard other than a whole first label (*.)")]
    Wildcard,
    /// Not a letter, digit, hyphen or dot.
    #[error("has a character other than a letter, digit, hyphen or dot")]
    Character,
    /// `-a` or `a-`.
    #[error("has a label that starts or ends with a hyphen")]
    Hyphen,
    /// `10.0.0.1`.
    #[error("is an IP address, not a domain name")]
    IpAddress,
}

/// Why a `skiff.domains` label cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// One of its names.
    #[error("{name:?} {problem}; write hostnames such as app.example.com or *.example.com, separated by commas")]
    Name {
        /// The name, as written.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// No name at all.
    #[error("names no domain; write hostnames such as app.example.com, separated by commas, or leave the label out")]
    None,
    /// More than [`MAX_DOMAINS`].
    #[error("names {0} domains; at most {MAX_DOMAINS} per task definition")]
    TooMany(usize),
}

/// Checks one name and gives it in lowercase; the error says what a name
/// looks like.
pub fn parse(name: &str) -> Result<String, DomainError> {
    let bad = |problem: NameProblem| DomainError::Name {
        name: name.to_string(),
        problem,
    };
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return Err(bad(NameProblem::Empty));
    }
    if lower.len() > 253 {
        return Err(bad(NameProblem::TooLong));
    }
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.len() < 2 {
        return Err(bad(NameProblem::OneLabel));
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(bad(NameProblem::BadLabelLength));
        }
        if *l == "*" || l.contains('*') {
            return Err(bad(NameProblem::Wildcard));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(NameProblem::Character));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(bad(NameProblem::Hyphen));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(NameProblem::IpAddress));
    }
    Ok(lower)
}

/// The names of a `skiff.domains` label (commas or spaces between them),
/// checked, in lowercase, without repeats.
pub fn parse_list(value: &str) -> Result<Vec<String>, DomainError> {
    let mut names: Vec<String> = Vec::new();
    for n in value
        .split([',', ' ', '\n', '\t'])
        .filter(|n| !n.is_empty())
    {
        let n = parse(n)?;
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.is_empty() {
        return Err(DomainError::None);
    }
    if names.len() > MAX_DOMAINS {
        return Err(DomainError::TooMany(names.len()));
    }
    Ok(names)
}

/// The names a request's Host (or a TLS client's SNI name) is looked up
/// under, most specific first: the host itself, then the wildcard one
/// label up. The host is lowercased and stripped of its port and a final
/// dot.
pub fn lookup_names(host: &str) -> Option<(String, Option<String>)> {
    let host = host.trim().to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            h.to_string()
        }
        _ => host,
    };
    let host = host.trim_end_matches('.').to_string();
    if host.is_empty() {
        return None;
    }
    let wildcard = host
        .split_once('.')
        .filter(|(_, parent)| parent.contains('.'))
        .map(|(_, parent)| format!("*.{parent}"));
    Some((host, wildcard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(parse("App.Example.COM.").unwrap(), "app.example.com");
        assert_eq!(parse("*.example.com").unwrap(), "*.example.com");
        for bad in [
            "",
            "localhost",
            "*.com",
            "a.*.com",
            "a*.example.com",
            "-a.example.com",
            "a_b.example.com",
            "10.0.0.1",
            "a..b",
            &format!("{}.com", "a".repeat(64)),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(&e, DomainError::Name { name, .. } if name == bad),
                "{e:?}"
            );
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn lists_drop_repeats() {
        assert_eq!(
            parse_list("a.example.com, A.example.com b.example.com").unwrap(),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(parse_list(" , "), Err(DomainError::None));
    }

    #[test]
    fn lookups_try_the_name_then_its_wildcard() {
        assert_eq!(
            lookup_names("Api.Example.com:8443"),
            Some(("api.example.com".into(), Some("*.example.com".into())))
        );
        assert_eq!(
            lookup_names("example.com"),
            Some(("example.com".into(), None))
        );
        assert_eq!(lookup_names("[::1]:80"), Some(("[::1]:80".into(), None)));
        assert_eq!(lookup_names(""), None);
    }
}
