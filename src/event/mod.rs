//! The event vocabulary. Every state change is one of these bodies inside an [`Envelope`].
//!
//! On disk an event is `[format version: u8][hash: 32 bytes][bincode payload]` (see
//! [`codec`]). bincode cannot evolve a struct, so a body's meaning never changes: a new meaning
//! is a new variant appended at the end of [`Body`] (old bytes keep decoding), or a new format
//! version with an upcaster in `codec`.

pub mod codec;
pub mod describe;

use crate::model::{Action, JobId, JobStatus, Seq, WorkflowDef, WorkflowId};
use serde::{Deserialize, Serialize};

pub type Hash = [u8; 32];

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A person at the command line (their login name).
    User { name: String },
    /// An AI agent over MCP or invoked by the recovery loop.
    Agent {
        name: String,
        version: String,
        model: Option<String>,
        prompt_digest: Option<String>,
    },
    /// A built-in or external classifier (rules, precedent, ...).
    Classifier { name: String, version: String },
    /// The local runner executing jobs.
    Runner,
    /// The Torc connector (connected mode).
    Connector { url: String },
    /// The ledger itself (imports, maintenance).
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::User { name } => format!("user:{name}"),
            Actor::Agent {
                name,
                version,
                model,
                ..
            } => match model {
                Some(m) => format!("agent:{name}/{version} ({m})"),
                None => format!("agent:{name}/{version}"),
            },
            Actor::Classifier { name, version } => format!("classifier:{name}/{version}"),
            Actor::Runner => "runner".into(),
            Actor::Connector { url } => format!("connector:{url}"),
            Actor::System => "system".into(),
        }
    }

    /// The person running this process.
    pub fn current_user() -> Actor {
        let name = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(login_name);
        Actor::User { name }
    }
}

/// The login name of this process's user, from the password database.
fn login_name() -> String {
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy the name at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return format!("uid{}", libc::getuid());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Why a job's status changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// `init` / `reinit`: dependencies decide blocked or ready.
    Initialized,
    /// Every dependency is done; the job may run.
    Unblocked,
    /// A runner took the job.
    Started,
    /// The job's process ended.
    Finished,
    /// A failure-handler rule asked for a retry.
    HandlerRetry,
    /// A failure-handler rule was exhausted.
    MaxRetriesExceeded,
    /// No rule explains the failure: parked for classification, or failed.
    NoHandler,
    NoMatchingRule,
    /// An upstream job failed and this job has `cancel_on_blocking_job_failure`.
    UpstreamFailed {
        upstream: JobId,
    },
    /// A classification decided it.
    Classified,
    /// `reset-status`.
    Reset,
    /// The run was interrupted (Ctrl-C, or a runner that died) while the job ran.
    Interrupted,
    /// Compensation appended by `undo`.
    Undo,
    /// Recovery put a failed or terminated job (and the dependents it had canceled) back.
    Requeued,
}

/// One classification as asked for (the `classify_and_resolve_failures` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub job_id: JobId,
    pub action: Action,
    pub reason: String,
    /// Per-job memory override in bytes (retry only).
    pub memory_bytes: Option<u64>,
    /// Per-job runtime override in seconds (retry only).
    pub runtime_seconds: Option<u64>,
}

/// A job's resource override: replaces the spec's group values for that job only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Override {
    pub memory_bytes: Option<u64>,
    pub runtime_seconds: Option<u64>,
}

/// Which reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitKind {
    /// First initialization.
    Init,
    /// New run: uninitialized and blocked jobs are (re)evaluated.
    Reinit,
}

/// How a job's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, or 128+n for signal n; 152 for a job killed at its runtime limit.
    pub return_code: i64,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub peak_memory_bytes: Option<u64>,
    pub timed_out: bool,
}

impl Exit {
    /// The job did its work: exit 0 and not killed at its runtime limit.
    pub fn succeeded(&self) -> bool {
        self.return_code == 0 && !self.timed_out
    }
}

/// The event bodies, format version 1. Append new variants only at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    WorkflowCreated {
        workflow_id: WorkflowId,
        /// Jobs get the ids `first_job_id ..` in spec order.
        first_job_id: JobId,
        spec_digest: String,
        def: WorkflowDef,
    },
    /// A new run begins (`init`, `reinit`); the status changes follow with this as cause.
    RunInitialized {
        workflow_id: WorkflowId,
        run_id: u64,
        kind: InitKind,
    },
    /// `reset-status [--failed-only]`; the status changes follow with this as cause.
    StatusReset {
        workflow_id: WorkflowId,
        failed_only: bool,
    },
    StatusChanged {
        job_id: JobId,
        from: JobStatus,
        to: JobStatus,
        /// The job's attempt after the change.
        attempt_id: u32,
        /// The attempt before the change (differs on retries and their undo).
        prev_attempt_id: u32,
        why: Why,
    },
    JobStarted {
        job_id: JobId,
        run_id: u64,
        attempt_id: u32,
        stdout_path: String,
        stderr_path: String,
    },
    JobFinished {
        job_id: JobId,
        run_id: u64,
        attempt_id: u32,
        exit: Exit,
    },
    HandlerMatched {
        job_id: JobId,
        handler: String,
        rule_index: u32,
        return_code: i64,
        /// Retries the job's failure handler granted it earlier in this run (all rules).
        retries_used: u32,
        max_retries: u32,
        retry: bool,
    },
    RecoveryScriptRan {
        job_id: JobId,
        attempt_id: u32,
        script: String,
        return_code: i64,
    },
    /// A dry run: who asked for what, and the version (last seq) of each job it looked at.
    ProposalRecorded {
        workflow_id: WorkflowId,
        items: Vec<Classification>,
        job_versions: Vec<(JobId, Seq)>,
    },
    /// A batch of classifications; status changes, overrides and cancellations follow with this
    /// as cause, in the same durable batch.
    ClassificationApplied {
        workflow_id: WorkflowId,
        proposal: Option<Seq>,
        items: Vec<Classification>,
        evidence_digest: Option<String>,
    },
    OverrideSet {
        job_id: JobId,
        from: Override,
        to: Override,
    },
    /// Compensation for `target`; the restoring changes follow with this as cause.
    Undone { target: Seq },
    /// A runner session started or ended.
    RunnerStarted {
        workflow_id: WorkflowId,
        run_id: u64,
        max_parallel: u32,
    },
    RunnerStopped {
        workflow_id: WorkflowId,
        run_id: u64,
        outcome: String,
    },
    /// The handler's recovery script is owed before the next attempt runs.
    RecoveryScriptOwed {
        job_id: JobId,
        script: String,
        return_code: i64,
    },
    /// An offline evaluation of a classifier over labeled fixtures (`torc-ledger eval`): what
    /// was measured, on which cases, and every case's prediction. Changes no job.
    EvaluationRecorded {
        /// `rules`, `precedent`, `agent:<command>`, `http:<url>`.
        classifier: String,
        classifier_version: String,
        model: Option<String>,
        /// blake3 of the prompt file, for classifiers that take one.
        prompt_digest: Option<String>,
        /// blake3 over the evaluated cases (after skipping bad lines and `--limit`).
        fixture_digest: String,
        fixture_files: Vec<String>,
        /// The metrics as JSON text (accuracy, per class, confusion, costly errors, ...).
        metrics: String,
        predictions: Vec<Prediction>,
    },
}

/// One case of an evaluation: the label, the classifier's answer (or its error) and how long
/// it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    /// `retry`, `fail` or `retry_with_resources`.
    pub expected: String,
    /// The predicted label; `None` when the classifier gave no verdict (an error).
    pub predicted: Option<String>,
    /// The classifier's reason, or its error.
    pub reason: String,
    pub latency_us: u64,
}

impl Body {
    /// A short name for logs and JSON (`status_changed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Body::WorkflowCreated { .. } => "workflow_created",
            Body::RunInitialized { .. } => "run_initialized",
            Body::StatusReset { .. } => "status_reset",
            Body::StatusChanged { .. } => "status_changed",
            Body::JobStarted { .. } => "job_started",
            Body::JobFinished { .. } => "job_finished",
            Body::HandlerMatched { .. } => "handler_matched",
            Body::RecoveryScriptRan { .. } => "recovery_script_ran",
            Body::ProposalRecorded { .. } => "proposal_recorded",
            Body::ClassificationApplied { .. } => "classification_applied",
            Body::OverrideSet { .. } => "override_set",
            Body::Undone { .. } => "undone",
            Body::RunnerStarted { .. } => "runner_started",
            Body::RunnerStopped { .. } => "runner_stopped",
            Body::RecoveryScriptOwed { .. } => "recovery_script_owed",
            Body::EvaluationRecorded { .. } => "evaluation_recorded",
        }
    }

    /// The job this event is about, if one.
    pub fn job_id(&self) -> Option<JobId> {
        match self {
            Body::StatusChanged { job_id, .. }
            | Body::JobStarted { job_id, .. }
            | Body::JobFinished { job_id, .. }
            | Body::HandlerMatched { job_id, .. }
            | Body::RecoveryScriptRan { job_id, .. }
            | Body::RecoveryScriptOwed { job_id, .. }
            | Body::OverrideSet { job_id, .. } => Some(*job_id),
            _ => None,
        }
    }
}

/// The envelope: position, time, who, why, and the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub seq: Seq,
    /// Milliseconds since the Unix epoch. Never part of the state digest.
    pub time_ms: u64,
    pub actor: Actor,
    /// The event that caused this one. For the head of a command's batch it is what the
    /// caller named (a runner session, a decision); for the rest of the batch it is the head.
    pub cause: Option<Seq>,
    /// Position in its command's atomic batch: 0 for the head. The head is `seq - index`.
    pub index: u32,
    pub idempotency_key: Option<String>,
    pub prev_hash: Hash,
    pub body: Body,
}

/// A stored event: the envelope plus the hash over its encoded payload and `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub env: Envelope,
    pub hash: Hash,
}

impl std::ops::Deref for Event {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        &self.env
    }
}

pub fn hex(h: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(h.len() * 2);
    for b in h {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let v = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        out[i] = v;
    }
    Some(out)
}
