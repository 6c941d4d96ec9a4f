//! Domain vocabulary: ids, Torc's job statuses, resources and failure-handler rules. No I/O.

mod resources;
mod status;

pub use resources::{format_duration, format_memory, parse_duration, parse_memory, ResourceError};
pub use status::JobStatus;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type WorkflowId = u64;
pub type JobId = u64;
pub type Seq = u64;

/// A named resource group as written in the spec (`resource_requirements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    pub name: String,
    pub num_cpus: u64,
    pub num_gpus: u64,
    pub num_nodes: u64,
    /// The memory string as written (`2g`).
    pub memory: String,
    pub memory_bytes: u64,
    /// The runtime string as written (`PT30M`).
    pub runtime: String,
    pub runtime_seconds: u64,
}

impl ResourceRequirements {
    /// Torc's hidden `default` group: 1 CPU, `1m`, one minute. Jobs that name no group get it.
    /// (Torc attaches it the same way; its one-minute runtime is generous enough for no-op jobs
    /// but short for real work, so specs should name a group.)
    pub fn torc_default() -> Self {
        ResourceRequirements {
            name: "default".into(),
            num_cpus: 1,
            num_gpus: 0,
            num_nodes: 1,
            memory: "1m".into(),
            memory_bytes: 1 << 20,
            runtime: "P0DT1M".into(),
            runtime_seconds: 60,
        }
    }
}

/// One rule of a failure handler (Torc field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRule {
    pub exit_codes: Vec<i64>,
    pub match_all_exit_codes: bool,
    pub recovery_script: Option<String>,
    /// Number of retries this rule allows: `max_retries: N` gives N+1 attempts.
    pub max_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureHandler {
    pub name: String,
    pub rules: Vec<FailureRule>,
}

impl FailureHandler {
    /// Torc's matching: the first rule that lists the code wins; otherwise the first rule with
    /// `match_all_exit_codes: true`; otherwise none.
    pub fn match_rule(&self, return_code: i64) -> Option<(usize, &FailureRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.exit_codes.contains(&return_code))
            .or_else(|| {
                self.rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.match_all_exit_codes)
            })
    }
}

/// A job after the spec has been validated and expanded: dependencies are indexes into the
/// workflow's job list, `${files.*}` references are substituted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDef {
    pub name: String,
    pub command: String,
    /// Indexes (into `WorkflowDef::jobs`) of the jobs this one waits for, sorted, deduplicated.
    pub depends_on: Vec<u32>,
    /// Name of a group in `WorkflowDef::resource_requirements`; `None` means Torc's `default`.
    pub resource_requirements: Option<String>,
    pub failure_handler: Option<String>,
    pub cancel_on_blocking_job_failure: bool,
    pub env: BTreeMap<String, String>,
    pub priority: i64,
}

/// A validated, expanded workflow: what `WorkflowCreated` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowDef {
    pub name: String,
    pub description: Option<String>,
    pub use_pending_failed: bool,
    pub env: BTreeMap<String, String>,
    /// Absolute directory the workflow was submitted from; jobs run there.
    pub submit_dir: String,
    pub jobs: Vec<JobDef>,
    pub resource_requirements: Vec<ResourceRequirements>,
    pub failure_handlers: Vec<FailureHandler>,
}

impl WorkflowDef {
    pub fn resources_of(&self, job: &JobDef) -> ResourceRequirements {
        job.resource_requirements
            .as_ref()
            .and_then(|n| self.resource_requirements.iter().find(|r| &r.name == n))
            .cloned()
            .unwrap_or_else(ResourceRequirements::torc_default)
    }

    pub fn handler_of(&self, job: &JobDef) -> Option<&FailureHandler> {
        job.failure_handler
            .as_ref()
            .and_then(|n| self.failure_handlers.iter().find(|h| &h.name == n))
    }
}

/// What a classification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Retry,
    Fail,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Fail => "fail",
        }
    }
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "retry" => Some(Action::Retry),
            "fail" => Some(Action::Fail),
            _ => None,
        }
    }
}
