//! Task scale-in protection as the task record holds it
//! (`protectedUntil`): which tasks may have it, and for how long.
//!
//! A protected task of a service is passed over when the service scales
//! in (a lower desired count, by hand or by autoscaling) and waited for by
//! a deployment, until its protection ends or is removed. It is still
//! stopped when it fails its health checks, when its node drains, by
//! StopTask and by DeleteService. Both UpdateTaskProtection and a task's
//! own `ECS_AGENT_URI/task-protection/v1/state` set it
//! ([`crate::store::records::protect`]).

use super::task::{DesiredStatus, TaskRecord, TaskStatus};

/// How long a task is protected unless the call says (2 hours, as ECS).
pub const DEFAULT_MINUTES: i64 = 120;

/// The longest protection one call gives (48 hours, as ECS).
pub const MAX_MINUTES: i64 = 2880;

/// Whether a service started the task (only those have protection).
pub fn of_service(t: &TaskRecord) -> bool {
    t.service.is_some() || t.group.starts_with("service:")
}

/// Why a task's protection cannot be read, when it is not a service's
/// (a TASK_NOT_VALID failure's detail).
pub fn unreadable(t: &TaskRecord) -> Option<String> {
    (!of_service(t)).then(|| {
        format!(
            "task {} was not started by a service; only a service's tasks have scale-in protection",
            t.id
        )
    })
}

/// Why a task cannot be protected, as a failure entry's `detail`; `None`
/// when it can.
pub fn not_protectable(t: &TaskRecord) -> Option<String> {
    if !of_service(t) {
        return Some(format!(
            "task {} was not started by a service (its group is {}): scale-in protection is only for the tasks of a service",
            t.id, t.group
        ));
    }
    if t.desired_status == DesiredStatus::Stopped || t.last_status == TaskStatus::Stopped {
        return Some(format!(
            "task {} is stopping or stopped; only a running task can be protected",
            t.id
        ));
    }
    None
}

/// A protection's expiry (the request's `field`) out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be from 1 to {MAX_MINUTES} (48 hours), got {minutes}")]
pub struct MinutesOutOfRange {
    /// The field, as the request names it.
    pub field: String,
    /// What it gave.
    pub minutes: i64,
}

/// Whether the expiry (the request's `field`) is in range (only
/// protection being turned on reads it).
pub fn check_minutes(field: &str, enabled: bool, minutes: i64) -> Result<(), MinutesOutOfRange> {
    if enabled && !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(MinutesOutOfRange {
            field: field.to_string(),
            minutes,
        });
    }
    Ok(())
}

/// A failure to protect one task: its reason (`MISSING`, `TASK_NOT_VALID`)
/// and the detail in words.
pub type Refusal = (&'static str, String);
