//! Units typed by users: durations (`500ms`, `2s`, `1m`, `1h`) and sizes.

use std::time::Duration;

/// Why a duration does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A number without a unit.
    #[error("`{0}` has no unit: write it as 500ms, 2s, 1m or 1h")]
    NoUnit(String),
    /// No number before the unit.
    #[error("`{0}` is not a duration: write it as 500ms, 2s, 1m or 1h")]
    NotANumber(String),
    /// A unit other than ms, s, m and h.
    #[error("`{given}` has an unknown unit `{unit}`: use ms, s, m or h (500ms, 2s, 1m, 1h)")]
    UnknownUnit {
        /// What was written.
        given: String,
        /// Its unit.
        unit: String,
    },
    /// Zero, or more than a year.
    #[error("`{0}` is out of range: a duration must be more than 0 and at most a year")]
    OutOfRange(String),
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`. A bare number is refused:
/// the unit must be said.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| DurationError::NoUnit(s.to_string()))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(DurationError::UnknownUnit {
                given: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 24.0 * 3600.0 {
        return Err(DurationError::OutOfRange(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        let e = parse_duration("5").unwrap_err();
        assert_eq!(e, DurationError::NoUnit("5".into()));
        assert_eq!(
            e.to_string(),
            "`5` has no unit: write it as 500ms, 2s, 1m or 1h"
        );
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "d"
        ));
        assert!(parse_duration("5d")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert_eq!(
            parse_duration("0s"),
            Err(DurationError::OutOfRange("0s".into()))
        );
        assert!(parse_duration("0s")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert_eq!(
            parse_duration("ms"),
            Err(DurationError::NotANumber("ms".into()))
        );
    }
}
