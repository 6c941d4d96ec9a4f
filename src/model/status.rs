use serde::{Deserialize, Serialize};
use std::fmt;

/// Torc 1.0.0's job statuses, with Torc's wire names and integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Uninitialized = 0,
    Blocked = 1,
    Ready = 2,
    Pending = 3,
    Running = 4,
    Completed = 5,
    Failed = 6,
    Canceled = 7,
    Terminated = 8,
    Disabled = 9,
    PendingFailed = 10,
}

impl JobStatus {
    pub const ALL: [JobStatus; 11] = [
        JobStatus::Uninitialized,
        JobStatus::Blocked,
        JobStatus::Ready,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Terminated,
        JobStatus::Disabled,
        JobStatus::PendingFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Uninitialized => "uninitialized",
            JobStatus::Blocked => "blocked",
            JobStatus::Ready => "ready",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Terminated => "terminated",
            JobStatus::Disabled => "disabled",
            JobStatus::PendingFailed => "pending_failed",
        }
    }

    pub fn to_int(self) -> u8 {
        self as u8
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u8>() {
            return JobStatus::ALL.get(n as usize).copied();
        }
        JobStatus::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// Statuses that let a dependent job go on (Torc's unblock set: 5, 6, 7, 8).
    pub fn releases_dependents(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled | JobStatus::Terminated
        )
    }

    /// A dependency in this status makes dependents with `cancel_on_blocking_job_failure` cancel.
    pub fn is_blocking_failure(self) -> bool {
        matches!(
            self,
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Terminated
        )
    }

    /// Counts as done for workflow completion (Torc: 5, 6, 7, 8, 9; never `pending_failed`).
    pub fn is_done(self) -> bool {
        self.releases_dependents() || self == JobStatus::Disabled
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
