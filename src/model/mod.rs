//! ECS's documents as validated types: names, ARNs, task definitions.
//!
//! Raw JSON comes in; a validated type comes out, or a [`FieldError`] that
//! names the field (`containerDefinitions[1].memory`) and says what would be
//! right. The raw document is kept verbatim beside the validated type, so
//! that what a client registered is what it reads back.

pub mod arn;
pub mod connect;
pub mod domain;
pub mod image;
pub mod outbound;
pub mod provider;
pub mod scaling;
pub mod service;
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
    let (year, month, day) = crate::auth::sigv4::civil_from_days(days);
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
