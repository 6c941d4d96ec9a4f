//! The spec exactly as written: serde structs with Torc 1.0.0 field names.
//!
//! Every struct denies unknown fields, so a typo is a hard error carrying a line number, as in
//! Torc. Fields Torc understands but torc-ledger does not act on are still listed (as
//! `Option<IgnoredAny>`) so that they parse; `build.rs` then turns each into a warning or an
//! error that says what happens instead.

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// `Some` when the key is present with a non-null value; the value itself is not needed.
pub(super) type Present = Option<IgnoredAny>;

// The `rename`s below only change the struct names serde prints in type errors
// ("expected struct job" rather than "expected struct RawJob").

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "workflow spec")]
pub(super) struct RawSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Accepted for compatibility; a local ledger has no owner or project to record.
    #[serde(default, rename = "user")]
    pub _user: Present,
    #[serde(default, rename = "project")]
    pub _project: Present,
    #[serde(default)]
    pub use_pending_failed: Option<bool>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    pub jobs: Vec<RawJob>,
    #[serde(default)]
    pub files: Option<Vec<RawFile>>,
    #[serde(default)]
    pub resource_requirements: Option<Vec<RawResources>>,
    #[serde(default)]
    pub failure_handlers: Option<Vec<RawHandler>>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, Scalar>>,

    // Understood, ignored with a warning.
    #[serde(default)]
    pub slurm_schedulers: Present,
    #[serde(default)]
    pub slurm_defaults: Present,
    #[serde(default)]
    pub resource_monitor: Present,
    #[serde(default)]
    pub execution_config: Present,
    #[serde(default)]
    pub compute_node_expiration_buffer_seconds: Present,
    #[serde(default)]
    pub compute_node_wait_for_new_jobs_seconds: Present,
    #[serde(default)]
    pub compute_node_ignore_workflow_completion: Present,
    #[serde(default)]
    pub compute_node_wait_for_healthy_database_minutes: Present,
    #[serde(default)]
    pub enable_ro_crate: Present,
    #[serde(default)]
    pub metadata: Present,
    #[serde(default)]
    pub access_groups: Present,
    #[serde(default)]
    pub actions: Present,
    #[serde(default)]
    pub user_data: Present,

    // Understood, refused: ignoring them would change the job set.
    #[serde(default)]
    pub dynamic_jobs: Present,
    #[serde(default)]
    pub parameters: Present,
    #[serde(default)]
    pub parameters_file: Present,
}

/// Top-level keys that have an effect here (for "did you mean" and the accepted-keys list).
pub(super) const SPEC_FIELDS: &[&str] = &[
    "name",
    "description",
    "user",
    "project",
    "use_pending_failed",
    "env",
    "jobs",
    "files",
    "resource_requirements",
    "failure_handlers",
    "variables",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "job")]
pub(super) struct RawJob {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub depends_on: Option<Vec<String>>,
    #[serde(default)]
    pub depends_on_regexes: Option<Vec<String>>,
    #[serde(default)]
    pub resource_requirements: Option<String>,
    #[serde(default)]
    pub failure_handler: Option<String>,
    #[serde(default)]
    pub cancel_on_blocking_job_failure: Option<bool>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub input_files: Option<Vec<String>>,
    #[serde(default)]
    pub output_files: Option<Vec<String>>,

    // Understood, ignored with a warning.
    #[serde(default)]
    pub scheduler: Present,
    #[serde(default)]
    pub labels: Present,
    #[serde(default)]
    pub stdio: Present,
    #[serde(default)]
    pub supports_termination: Present,

    // Understood, refused.
    #[serde(default)]
    pub invocation_script: Present,
    #[serde(default)]
    pub input_user_data: Present,
    #[serde(default)]
    pub output_user_data: Present,
    #[serde(default)]
    pub input_user_data_regexes: Present,
    #[serde(default)]
    pub output_user_data_regexes: Present,
    #[serde(default)]
    pub input_file_regexes: Present,
    #[serde(default)]
    pub output_file_regexes: Present,
    #[serde(default)]
    pub parameters: Present,
    #[serde(default)]
    pub parameter_mode: Present,
    #[serde(default)]
    pub use_parameters: Present,
    #[serde(default)]
    pub parameters_file: Present,
    #[serde(default)]
    pub use_parameters_file: Present,
}

pub(super) const JOB_FIELDS: &[&str] = &[
    "name",
    "command",
    "depends_on",
    "depends_on_regexes",
    "resource_requirements",
    "failure_handler",
    "cancel_on_blocking_job_failure",
    "env",
    "priority",
    "input_files",
    "output_files",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "file")]
pub(super) struct RawFile {
    pub name: String,
    pub path: String,
    // Understood, ignored with a warning (RO-Crate provenance only).
    #[serde(default)]
    pub identifier: Present,
    #[serde(default)]
    pub st_mtime: Present,
    // Understood, refused (file expansion).
    #[serde(default)]
    pub parameters: Present,
    #[serde(default)]
    pub parameter_mode: Present,
    #[serde(default)]
    pub use_parameters: Present,
}

pub(super) const FILE_FIELDS: &[&str] = &["name", "path"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "resource requirements")]
pub(super) struct RawResources {
    pub name: String,
    // Signed so that a negative value gets our message rather than serde's.
    #[serde(default)]
    pub num_cpus: Option<i64>,
    #[serde(default)]
    pub num_gpus: Option<i64>,
    #[serde(default)]
    pub num_nodes: Option<i64>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub runtime: Option<String>,
}

pub(super) const RESOURCE_FIELDS: &[&str] = &[
    "name",
    "num_cpus",
    "num_gpus",
    "num_nodes",
    "memory",
    "runtime",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "failure handler")]
pub(super) struct RawHandler {
    pub name: String,
    pub rules: Vec<RawRule>,
}

pub(super) const HANDLER_FIELDS: &[&str] = &["name", "rules"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "failure handler rule")]
pub(super) struct RawRule {
    #[serde(default)]
    pub exit_codes: Option<Vec<i64>>,
    #[serde(default)]
    pub match_all_exit_codes: Option<bool>,
    #[serde(default)]
    pub recovery_script: Option<String>,
    #[serde(default)]
    pub max_retries: Option<i64>,
}

pub(super) const RULE_FIELDS: &[&str] = &[
    "exit_codes",
    "match_all_exit_codes",
    "recovery_script",
    "max_retries",
];

/// A `variables` value. Torc documents strings, but `n: 4` in YAML is a number, and refusing
/// it would only annoy; any scalar is taken as its text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}
