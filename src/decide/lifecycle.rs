//! Init, reset, runner sessions, job start and finish (with Torc's failure-handler table).

use super::{release_dependents, DecideError, Overlay};
use crate::event::{Body, Exit, InitKind, Why};
use crate::model::{JobId, JobStatus, WorkflowId};
use crate::state::{Job, State, Workflow};

fn workflow(state: &State, id: WorkflowId) -> Result<&Workflow, DecideError> {
    state.workflow(id).ok_or(DecideError::UnknownWorkflow(id))
}

fn job(state: &State, id: JobId) -> Result<&Job, DecideError> {
    state.job(id).ok_or(DecideError::UnknownJob(id))
}

fn running_count(state: &State, wf: &Workflow) -> usize {
    state
        .jobs_of(wf)
        .iter()
        .filter(|j| matches!(j.status, JobStatus::Running | JobStatus::Pending))
        .count()
}

fn change(job: &Job, to: JobStatus, why: Why) -> Body {
    Body::StatusChanged {
        job_id: job.id,
        from: job.status,
        to,
        attempt_id: job.attempt_id,
        prev_attempt_id: job.attempt_id,
        why,
    }
}

/// `init` starts run 1 from all-uninitialized; `reinit` starts the next run and (re)evaluates
/// uninitialized and blocked jobs. Either way: all dependencies done → ready (or canceled after
/// an upstream failure, per `cancel_on_blocking_job_failure`), otherwise blocked.
pub fn initialize(
    state: &State,
    workflow_id: WorkflowId,
    kind: InitKind,
) -> Result<Vec<Body>, DecideError> {
    let wf = workflow(state, workflow_id)?;
    let jobs = state.jobs_of(wf);
    let busy = running_count(state, wf);
    if busy > 0 {
        return Err(DecideError::Busy {
            workflow_id,
            count: busy,
            hint: "wait for the runner to finish or stop it with Ctrl-C; if no runner is alive, `torc-ledger workflows run` takes the jobs back".into(),
        });
    }
    if kind == InitKind::Init {
        if let Some(j) = jobs.iter().find(|j| j.status != JobStatus::Uninitialized) {
            return Err(DecideError::Refused(format!(
                "workflow {workflow_id} is already initialized (job {} is {}); use `torc-ledger workflows reinit {workflow_id}` to start a new run, or `workflows reset-status {workflow_id}` first",
                j.id, j.status
            )));
        }
    }
    let run_id = wf.run_id + 1;
    let mut out = vec![Body::RunInitialized {
        workflow_id,
        run_id,
        kind,
    }];
    let mut ov = Overlay::new(state);
    // Jobs to evaluate, in index order so that the outcome does not depend on hash order.
    let todo: Vec<&Job> = jobs
        .iter()
        .filter(|j| matches!(j.status, JobStatus::Uninitialized | JobStatus::Blocked))
        .collect();
    // First mark every job to evaluate as blocked, then release from the roots: this gives the
    // same answer as Torc's initialize + unblock pass, cascades included.
    for j in &todo {
        ov.changes.insert(j.id, JobStatus::Blocked);
    }
    let mut decided: Vec<(JobId, JobStatus, Why)> = Vec::new();
    for j in &todo {
        let def = &wf.def.jobs[j.index as usize];
        let mut all_done = true;
        let mut failed_up = None;
        for &u in &def.depends_on {
            let st = ov.status(wf.job_id_of(u));
            if !st.releases_dependents() {
                all_done = false;
                break;
            }
            if st.is_blocking_failure() && failed_up.is_none() {
                failed_up = Some(wf.job_id_of(u));
            }
        }
        if all_done {
            let (to, why) = match failed_up {
                Some(up) if def.cancel_on_blocking_job_failure => {
                    (JobStatus::Canceled, Why::UpstreamFailed { upstream: up })
                }
                _ => (JobStatus::Ready, Why::Initialized),
            };
            ov.changes.insert(j.id, to);
            decided.push((j.id, to, why));
        }
    }
    // Cancellations free their own dependents (which may cancel in turn).
    let mut cascade = Vec::new();
    for (id, to, _) in &decided {
        if *to == JobStatus::Canceled {
            release_dependents(&mut ov, *id, &mut cascade);
        }
    }
    let cascaded: std::collections::HashMap<JobId, (JobStatus, Why)> = cascade
        .into_iter()
        .filter_map(|b| match b {
            Body::StatusChanged {
                job_id, to, why, ..
            } => Some((job_id, (to, why))),
            _ => None,
        })
        .collect();
    let decided: std::collections::HashMap<JobId, (JobStatus, Why)> = decided
        .into_iter()
        .map(|(id, to, why)| (id, (to, why)))
        .collect();
    for j in todo {
        let (to, why) = decided
            .get(&j.id)
            .or_else(|| cascaded.get(&j.id))
            .cloned()
            .unwrap_or((JobStatus::Blocked, Why::Initialized));
        if to != j.status {
            out.push(change(j, to, why));
        }
    }
    Ok(out)
}

/// Torc's `reset-status`: all jobs (or, with `failed_only`, the failed, canceled, terminated and
/// pending_failed ones) back to uninitialized. The run id changes at the next `reinit`.
pub fn reset_status(
    state: &State,
    workflow_id: WorkflowId,
    failed_only: bool,
) -> Result<Vec<Body>, DecideError> {
    let wf = workflow(state, workflow_id)?;
    let busy = running_count(state, wf);
    if busy > 0 {
        return Err(DecideError::Busy {
            workflow_id,
            count: busy,
            hint: "reset after the runner stops".into(),
        });
    }
    let mut out = vec![Body::StatusReset {
        workflow_id,
        failed_only,
    }];
    for j in state.jobs_of(wf) {
        let hit = if failed_only {
            matches!(
                j.status,
                JobStatus::Failed
                    | JobStatus::Canceled
                    | JobStatus::Terminated
                    | JobStatus::PendingFailed
            )
        } else {
            j.status != JobStatus::Uninitialized
        };
        if hit {
            out.push(change(j, JobStatus::Uninitialized, Why::Reset));
        }
    }
    Ok(out)
}

/// A runner takes the workflow. Jobs still marked running belong to a runner that is gone
/// (the ledger only lets one runner per workflow live): their attempt is over, they run again
/// as the next attempt. A never-initialized workflow is initialized first.
pub fn start_runner(
    state: &State,
    workflow_id: WorkflowId,
    max_parallel: u32,
) -> Result<Vec<Body>, DecideError> {
    let wf = workflow(state, workflow_id)?;
    let jobs = state.jobs_of(wf);
    let busy = running_count(state, wf) > 0;
    let init = if !busy && jobs.iter().all(|j| j.status == JobStatus::Uninitialized) {
        Some(initialize(state, workflow_id, InitKind::Init)?)
    } else if !busy && jobs.iter().any(|j| j.status == JobStatus::Uninitialized) {
        // After `reset-status`: the reset jobs start a new run.
        Some(initialize(state, workflow_id, InitKind::Reinit)?)
    } else {
        None
    };
    // The run this session works on: the one its own initialization starts, if any.
    let run_id = if init.is_some() {
        wf.run_id + 1
    } else {
        wf.run_id.max(1)
    };
    let mut out = vec![Body::RunnerStarted {
        workflow_id,
        run_id,
        max_parallel,
    }];
    if let Some(init) = init {
        out.extend(init);
        return Ok(out);
    }
    for j in jobs {
        if matches!(j.status, JobStatus::Running | JobStatus::Pending) {
            out.push(Body::StatusChanged {
                job_id: j.id,
                from: j.status,
                to: JobStatus::Ready,
                attempt_id: j.attempt_id + 1,
                prev_attempt_id: j.attempt_id,
                why: Why::Interrupted,
            });
        }
    }
    Ok(out)
}

pub fn start_job(
    state: &State,
    job_id: JobId,
    stdout_path: &str,
    stderr_path: &str,
) -> Result<Vec<Body>, DecideError> {
    let j = job(state, job_id)?;
    if j.status != JobStatus::Ready {
        return Err(DecideError::WrongStatus {
            job_id,
            status: j.status,
            expected: "ready".into(),
        });
    }
    let wf = workflow(state, j.workflow_id)?;
    Ok(vec![
        change(j, JobStatus::Running, Why::Started),
        Body::JobStarted {
            job_id,
            run_id: wf.run_id,
            attempt_id: j.attempt_id,
            stdout_path: stdout_path.into(),
            stderr_path: stderr_path.into(),
        },
    ])
}

fn running_job(state: &State, job_id: JobId) -> Result<&Job, DecideError> {
    let j = job(state, job_id)?;
    if j.status != JobStatus::Running {
        return Err(DecideError::WrongStatus {
            job_id,
            status: j.status,
            expected: "running".into(),
        });
    }
    Ok(j)
}

/// A job's process ended. Success completes it and releases its dependents. A failure goes
/// through Torc's table: a matching failure-handler rule with retries left puts it back to ready
/// as the next attempt (its recovery script owed first); no handler or no matching rule parks
/// it in `pending_failed` when the workflow uses it, otherwise it fails; exhausted retries fail.
/// A job killed at its runtime limit ends `terminated` rather than `failed`.
pub fn finish_job(state: &State, job_id: JobId, exit: &Exit) -> Result<Vec<Body>, DecideError> {
    let j = running_job(state, job_id)?;
    let wf = workflow(state, j.workflow_id)?;
    let mut out = vec![Body::JobFinished {
        job_id,
        run_id: wf.run_id,
        attempt_id: j.attempt_id,
        exit: exit.clone(),
    }];
    let mut ov = Overlay::new(state);
    if exit.succeeded() {
        out.push(change(j, JobStatus::Completed, Why::Finished));
        ov.changes.insert(job_id, JobStatus::Completed);
        release_dependents(&mut ov, job_id, &mut out);
        return Ok(out);
    }
    let failed_status = if exit.timed_out {
        JobStatus::Terminated
    } else {
        JobStatus::Failed
    };
    let def = &wf.def.jobs[j.index as usize];
    let unexplained = match wf.def.handler_of(def) {
        None => Why::NoHandler,
        Some(h) => match h.match_rule(exit.return_code) {
            None => Why::NoMatchingRule,
            Some((idx, rule)) => {
                let used = if j.handler_retries.0 == wf.run_id {
                    j.handler_retries.1
                } else {
                    0
                };
                let retry = used < rule.max_retries;
                out.push(Body::HandlerMatched {
                    job_id,
                    handler: h.name.clone(),
                    rule_index: idx as u32,
                    return_code: exit.return_code,
                    retries_used: used,
                    max_retries: rule.max_retries,
                    retry,
                });
                if retry {
                    if let Some(script) = &rule.recovery_script {
                        out.push(Body::RecoveryScriptOwed {
                            job_id,
                            script: script.clone(),
                            return_code: exit.return_code,
                        });
                    }
                    out.push(Body::StatusChanged {
                        job_id,
                        from: JobStatus::Running,
                        to: JobStatus::Ready,
                        attempt_id: j.attempt_id + 1,
                        prev_attempt_id: j.attempt_id,
                        why: Why::HandlerRetry,
                    });
                } else {
                    out.push(change(j, failed_status, Why::MaxRetriesExceeded));
                    ov.changes.insert(job_id, failed_status);
                    release_dependents(&mut ov, job_id, &mut out);
                }
                return Ok(out);
            }
        },
    };
    if wf.def.use_pending_failed {
        // Parked: dependents stay blocked until someone classifies it.
        out.push(change(j, JobStatus::PendingFailed, unexplained));
    } else {
        out.push(change(j, failed_status, unexplained));
        ov.changes.insert(job_id, failed_status);
        release_dependents(&mut ov, job_id, &mut out);
    }
    Ok(out)
}

pub fn interrupt_job(state: &State, job_id: JobId, exit: &Exit) -> Result<Vec<Body>, DecideError> {
    let j = running_job(state, job_id)?;
    let wf = workflow(state, j.workflow_id)?;
    Ok(vec![
        Body::JobFinished {
            job_id,
            run_id: wf.run_id,
            attempt_id: j.attempt_id,
            exit: exit.clone(),
        },
        Body::StatusChanged {
            job_id,
            from: JobStatus::Running,
            to: JobStatus::Ready,
            attempt_id: j.attempt_id + 1,
            prev_attempt_id: j.attempt_id,
            why: Why::Interrupted,
        },
    ])
}
