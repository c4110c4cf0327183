//! The controller's error policy: a service whose reconcile fails (the
//! store out of reach, say) is tried again after a delay that doubles with
//! each failure in a row, from [`FIRST`] up to [`MAX`], and is back to
//! nothing after a success. Each service keeps its own count, so one that
//! keeps failing does not slow the others (as a kube-rs controller pairs
//! `reconcile` with an `error_policy`).

use std::collections::HashMap;
use std::time::Duration;

/// The delay after a first failure.
pub const FIRST: Duration = Duration::from_secs(1);

/// The longest delay.
pub const MAX: Duration = Duration::from_secs(60);

/// Failures in a row, per service key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: HashMap<String, u32>,
}

impl Backoff {
    /// Counts a failure of `key`; how long to wait before trying it again.
    pub fn failed(&mut self, key: &str) -> Duration {
        let n = self.failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        FIRST.saturating_mul(1u32 << (*n - 1).min(16)).min(MAX)
    }

    /// `key` reconciled: its next failure waits [`FIRST`] again.
    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Whether `key`'s last reconcile failed (it waits for its timer, not
    /// for the periodic resync).
    pub fn failing(&self, key: &str) -> bool {
        self.failures.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_per_service_and_a_success_resets_them() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Another service starts from the first delay.
        assert_eq!(b.failed("b"), FIRST);
        assert!(b.failing("a") && b.failing("b"));
        b.succeeded("a");
        assert!(!b.failing("a"));
        assert_eq!(b.failed("a"), FIRST);
        assert_eq!(b.failed("b"), 2 * FIRST);
        // Thousands of failures in a row stay at the cap.
        for _ in 0..10_000 {
            b.failed("c");
        }
        assert_eq!(b.failed("c"), MAX);
    }
}
