//! The rules of the domain, once: every write is a [`Command`] validated against the current
//! [`State`], producing event bodies or a typed [`DecideError`]. Pure: no I/O, no clock.
//!
//! Convention: one command is one atomic batch. The first body is the batch's head; every later
//! body is caused by the head (the ledger fills in the seqs).

mod classify;
mod lifecycle;
mod undo;

pub use classify::{validate as validate_classifications, ClassifyRequest, ItemError};
pub use undo::undo_effects;

use crate::event::{Body, Event, Exit, InitKind};
use crate::model::{JobId, JobStatus, Seq, WorkflowDef, WorkflowId};
use crate::state::State;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    CreateWorkflow {
        def: WorkflowDef,
        spec_digest: String,
    },
    Initialize {
        workflow_id: WorkflowId,
        kind: InitKind,
    },
    ResetStatus {
        workflow_id: WorkflowId,
        failed_only: bool,
    },
    /// A runner takes over the workflow; jobs left running by a runner that died are put back.
    StartRunner {
        workflow_id: WorkflowId,
        max_parallel: u32,
    },
    StopRunner {
        workflow_id: WorkflowId,
        outcome: String,
    },
    StartJob {
        job_id: JobId,
        stdout_path: String,
        stderr_path: String,
    },
    FinishJob {
        job_id: JobId,
        exit: Exit,
    },
    /// The process was stopped by Ctrl-C: the attempt is recorded and the job goes back to ready.
    InterruptJob {
        job_id: JobId,
        exit: Exit,
    },
    RecoveryScriptRan {
        job_id: JobId,
        return_code: i64,
    },
    Classify(ClassifyRequest),
    /// Recovery: retry failed or terminated jobs (with per-job overrides), putting back the
    /// dependents their failure canceled. `dry_run` is ignored: preview it instead.
    Requeue(ClassifyRequest),
    ApplyProposal {
        proposal_id: Seq,
    },
    /// `batch` is the target event and the events it caused, read from the log by the ledger.
    Undo {
        target: Seq,
        batch: Vec<Event>,
    },
    /// `eval`: record an offline evaluation of a classifier. Changes no job.
    RecordEvaluation(Evaluation),
}

/// What `eval` measured; becomes [`Body::EvaluationRecorded`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub classifier: String,
    pub classifier_version: String,
    pub model: Option<String>,
    pub prompt_digest: Option<String>,
    pub fixture_digest: String,
    pub fixture_files: Vec<String>,
    /// JSON text of the metrics object.
    pub metrics: String,
    pub predictions: Vec<crate::event::Prediction>,
}

fn record_evaluation(e: &Evaluation) -> Result<Vec<Body>, DecideError> {
    if e.classifier.trim().is_empty() {
        return Err(DecideError::Refused(
            "an evaluation needs the classifier's name".into(),
        ));
    }
    if e.predictions.is_empty() {
        return Err(DecideError::Refused(
            "an evaluation needs at least one case; check the fixture files".into(),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&e.metrics) {
        Ok(v) if v.is_object() => {}
        _ => {
            return Err(DecideError::Refused(
                "an evaluation's metrics must be a JSON object".into(),
            ))
        }
    }
    let mut ids = std::collections::HashSet::new();
    if let Some(p) = e.predictions.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(DecideError::Refused(format!(
            "case id {:?} appears twice in the evaluation; ids must be unique",
            p.id
        )));
    }
    Ok(vec![Body::EvaluationRecorded {
        classifier: e.classifier.clone(),
        classifier_version: e.classifier_version.clone(),
        model: e.model.clone(),
        prompt_digest: e.prompt_digest.clone(),
        fixture_digest: e.fixture_digest.clone(),
        fixture_files: e.fixture_files.clone(),
        metrics: e.metrics.clone(),
        predictions: e.predictions.clone(),
    }])
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DecideError {
    #[error("unknown workflow {0}; run `torc-ledger workflows list` to see the workflows")]
    UnknownWorkflow(WorkflowId),
    #[error("unknown job {0}; run `torc-ledger jobs list <WORKFLOW>` to see its jobs")]
    UnknownJob(JobId),
    #[error("job {job_id} is {status}, expected {expected}")]
    WrongStatus {
        job_id: JobId,
        status: JobStatus,
        expected: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("classification refused, nothing was recorded:\n{}", format_items(.0))]
    ItemsRefused(Vec<ItemError>),
    #[error("proposal {0} does not exist; run `torc-ledger proposals list <WORKFLOW>`")]
    UnknownProposal(Seq),
    #[error("proposal {proposal} was already applied by event {by}; run `torc-ledger show {by}`")]
    AlreadyApplied { proposal: Seq, by: Seq },
    #[error("proposal {proposal} is stale: {}. Review the jobs again and make a new dry run", format_stale(.changed))]
    Stale {
        proposal: Seq,
        /// (job, version the proposal saw, version now)
        changed: Vec<(JobId, Seq, Seq)>,
    },
    #[error("event {0} does not exist")]
    UnknownEvent(Seq),
    #[error("event {seq} ({kind}) cannot be undone: {why}")]
    NotUndoable { seq: Seq, kind: String, why: String },
    #[error("cannot undo event {target}: later events changed what it changed ({}). Undo those first, newest first", format_in_way(.in_the_way))]
    UndoBlocked {
        target: Seq,
        /// (job, the later event that touched it)
        in_the_way: Vec<(JobId, Seq)>,
    },
    #[error("workflow {workflow_id} has {count} running job(s); {hint}")]
    Busy {
        workflow_id: WorkflowId,
        count: usize,
        hint: String,
    },
}

fn format_items(items: &[ItemError]) -> String {
    items
        .iter()
        .map(|e| format!("  job {}: {}", e.job_id, e.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_stale(changed: &[(JobId, Seq, Seq)]) -> String {
    changed
        .iter()
        .map(|(j, then, now)| format!("job {j} changed since (event {then} then, event {now} now)"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn format_in_way(v: &[(JobId, Seq)]) -> String {
    v.iter()
        .map(|(j, s)| format!("job {j} by event {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl DecideError {
    /// Bad input (an id that does not exist) rather than a rule that refused a valid request.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DecideError::UnknownWorkflow(_)
                | DecideError::UnknownJob(_)
                | DecideError::UnknownProposal(_)
                | DecideError::UnknownEvent(_)
        )
    }
}

/// Decide what a command means in `state`: the bodies to append, head first.
pub fn decide(state: &State, cmd: &Command) -> Result<Vec<Body>, DecideError> {
    match cmd {
        Command::CreateWorkflow { def, spec_digest } => Ok(vec![Body::WorkflowCreated {
            workflow_id: state.next_workflow_id(),
            first_job_id: state.next_job_id(),
            spec_digest: spec_digest.clone(),
            def: def.clone(),
        }]),
        Command::Initialize { workflow_id, kind } => {
            lifecycle::initialize(state, *workflow_id, *kind)
        }
        Command::ResetStatus {
            workflow_id,
            failed_only,
        } => lifecycle::reset_status(state, *workflow_id, *failed_only),
        Command::StartRunner {
            workflow_id,
            max_parallel,
        } => lifecycle::start_runner(state, *workflow_id, *max_parallel),
        Command::StopRunner {
            workflow_id,
            outcome,
        } => {
            let wf = state
                .workflow(*workflow_id)
                .ok_or(DecideError::UnknownWorkflow(*workflow_id))?;
            Ok(vec![Body::RunnerStopped {
                workflow_id: *workflow_id,
                run_id: wf.run_id,
                outcome: outcome.clone(),
            }])
        }
        Command::StartJob {
            job_id,
            stdout_path,
            stderr_path,
        } => lifecycle::start_job(state, *job_id, stdout_path, stderr_path),
        Command::FinishJob { job_id, exit } => lifecycle::finish_job(state, *job_id, exit),
        Command::InterruptJob { job_id, exit } => lifecycle::interrupt_job(state, *job_id, exit),
        Command::RecoveryScriptRan {
            job_id,
            return_code,
        } => {
            let job = state.job(*job_id).ok_or(DecideError::UnknownJob(*job_id))?;
            let (script, _) = job.owed_script.clone().ok_or_else(|| {
                DecideError::Refused(format!("job {job_id} owes no recovery script"))
            })?;
            Ok(vec![Body::RecoveryScriptRan {
                job_id: *job_id,
                attempt_id: job.attempt_id,
                script,
                return_code: *return_code,
            }])
        }
        Command::Classify(req) => classify::classify(state, req),
        Command::Requeue(req) => classify::requeue(state, req),
        Command::ApplyProposal { proposal_id } => classify::apply_proposal(state, *proposal_id),
        Command::Undo { target, batch } => undo::undo(state, *target, batch),
        Command::RecordEvaluation(e) => record_evaluation(e),
    }
}

/// Working statuses while deciding: the state plus the changes decided so far.
pub(crate) struct Overlay<'a> {
    pub state: &'a State,
    pub changes: std::collections::HashMap<JobId, JobStatus>,
}

impl<'a> Overlay<'a> {
    pub fn new(state: &'a State) -> Self {
        Overlay {
            state,
            changes: Default::default(),
        }
    }
    pub fn status(&self, job: JobId) -> JobStatus {
        self.changes
            .get(&job)
            .copied()
            .unwrap_or_else(|| state_status(self.state, job))
    }
}

fn state_status(state: &State, job: JobId) -> JobStatus {
    state
        .job(job)
        .map(|j| j.status)
        .unwrap_or(JobStatus::Uninitialized)
}

/// Something that changed job `job_id`'s status now releases its blocked dependents: each whose
/// dependencies are all done becomes ready, or canceled when one of them did not succeed and it
/// has `cancel_on_blocking_job_failure`. Cancellations cascade.
pub(crate) fn release_dependents(ov: &mut Overlay, job_id: JobId, out: &mut Vec<Body>) {
    let state = ov.state;
    let job = match state.job(job_id) {
        Some(j) => j,
        None => return,
    };
    let wf = state
        .workflow(job.workflow_id)
        .expect("job of a known workflow");
    let mut queue = vec![job.index];
    while let Some(idx) = queue.pop() {
        for &d in &wf.dependents[idx as usize] {
            let dep_id = wf.job_id_of(d);
            if ov.status(dep_id) != JobStatus::Blocked {
                continue;
            }
            let def = &wf.def.jobs[d as usize];
            let mut all_done = true;
            let mut failed_upstream = None;
            for &u in &def.depends_on {
                let uid = wf.job_id_of(u);
                let st = ov.status(uid);
                if !st.releases_dependents() {
                    all_done = false;
                    break;
                }
                if st.is_blocking_failure() && failed_upstream.is_none() {
                    failed_upstream = Some(uid);
                }
            }
            if !all_done {
                continue;
            }
            let dep_job = state.job(dep_id).expect("known job");
            let (to, why) = match failed_upstream {
                Some(up) if def.cancel_on_blocking_job_failure => (
                    JobStatus::Canceled,
                    crate::event::Why::UpstreamFailed { upstream: up },
                ),
                _ => (JobStatus::Ready, crate::event::Why::Unblocked),
            };
            out.push(Body::StatusChanged {
                job_id: dep_id,
                from: JobStatus::Blocked,
                to,
                attempt_id: dep_job.attempt_id,
                prev_attempt_id: dep_job.attempt_id,
                why,
            });
            ov.changes.insert(dep_id, to);
            if to == JobStatus::Canceled {
                queue.push(d);
            }
        }
    }
}
