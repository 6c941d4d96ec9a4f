//! Read models shared by the CLI and the MCP tools: the JSON a person or an agent sees for a
//! workflow, a job, a decision. Torc's field names where Torc has them.

use crate::event::Body;
use crate::model::{format_duration, format_memory, JobId, JobStatus, Seq, WorkflowId};
use crate::runner::logs;
use crate::state::{Job, State};
use serde_json::{json, Value};
use std::path::Path;

/// Torc's `status` shape, plus the run id and the seq it is as of.
pub fn status(state: &State, wf: WorkflowId) -> Option<Value> {
    let w = state.workflow(wf)?;
    let by: serde_json::Map<String, Value> = state
        .counts_by_status(w)
        .iter()
        .map(|(s, c)| (s.as_str().to_string(), json!(c)))
        .collect();
    Some(json!({
        "workflow_id": wf,
        "workflow_name": w.def.name,
        "run_id": w.run_id,
        "total_jobs": w.def.jobs.len(),
        "jobs_by_status": by,
        "is_complete": state.is_complete(w),
        "is_canceled": false,
        "as_of_seq": state.last_seq,
    }))
}

pub fn job_name(state: &State, id: JobId) -> Option<String> {
    let j = state.job(id)?;
    let wf = state.workflow(j.workflow_id)?;
    Some(wf.def.jobs[j.index as usize].name.clone())
}

/// A job as in Torc's `jobs list` items.
pub fn job(state: &State, j: &Job) -> Value {
    let wf = state
        .workflow(j.workflow_id)
        .expect("job of a known workflow");
    let def = &wf.def.jobs[j.index as usize];
    let last = j.attempts.last();
    json!({
        "id": j.id,
        "workflow_id": j.workflow_id,
        "name": def.name,
        "command": def.command,
        "status": j.status.as_str(),
        "attempt_id": j.attempt_id,
        "run_id": wf.run_id,
        "resource_requirements": def.resource_requirements.clone().unwrap_or_else(|| "default".into()),
        "failure_handler": def.failure_handler,
        "cancel_on_blocking_job_failure": def.cancel_on_blocking_job_failure,
        "priority": def.priority,
        "depends_on": def.depends_on.iter().map(|&d| wf.job_id_of(d)).collect::<Vec<_>>(),
        "return_code": last.and_then(|a| a.exit.as_ref()).map(|e| e.return_code),
        "stdout_path": last.map(|a| a.stdout_path.clone()),
        "stderr_path": last.map(|a| a.stderr_path.clone()),
        "version": j.last_seq,
    })
}

/// The last `lines` lines of a job's latest stderr (or stdout): `(text, read error)`.
pub fn log_tail(j: &Job, stderr: bool, lines: usize) -> (Option<String>, Option<String>) {
    let Some(a) = j.attempts.last() else {
        return (None, Some("the job has not run yet".into()));
    };
    let path = if stderr {
        &a.stderr_path
    } else {
        &a.stdout_path
    };
    match logs::tail(Path::new(path), lines, logs::TAIL_BYTES) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("cannot read {path}: {e}"))),
    }
}

/// A job with its effective resources, attempts, decisions and stderr tail.
pub fn job_details(state: &State, j: &Job, tail_lines: usize) -> Value {
    let rr = state.effective_resources(j);
    let mut v = job(state, j);
    v["resources"] = json!({
        "name": rr.name,
        "num_cpus": rr.num_cpus,
        "num_gpus": rr.num_gpus,
        "num_nodes": rr.num_nodes,
        "memory": rr.memory,
        "memory_bytes": rr.memory_bytes,
        "runtime": rr.runtime,
        "runtime_seconds": rr.runtime_seconds,
        "override": j.resource_override,
    });
    v["memory_bytes"] = json!(rr.memory_bytes);
    v["runtime_seconds"] = json!(rr.runtime_seconds);
    v["attempts"] = json!(j
        .attempts
        .iter()
        .map(|a| json!({
            "run_id": a.run_id,
            "attempt_id": a.attempt_id,
            "return_code": a.exit.as_ref().map(|e| e.return_code),
            "signal": a.exit.as_ref().and_then(|e| e.signal),
            "duration_ms": a.exit.as_ref().map(|e| e.duration_ms),
            "peak_memory_bytes": a.exit.as_ref().and_then(|e| e.peak_memory_bytes),
            "timed_out": a.exit.as_ref().map(|e| e.timed_out),
            "decision": a.decision,
            "stdout_path": a.stdout_path,
            "stderr_path": a.stderr_path,
            "started_seq": a.started_seq,
            "finished_seq": a.finished_seq,
        }))
        .collect::<Vec<_>>());
    // Each decision about this job, with only this job's item of its batch.
    v["decisions"] = json!(j
        .decisions
        .iter()
        .filter_map(|seq| decision(state, *seq))
        .map(|mut d| {
            if let Some(items) = d["items"].as_array_mut() {
                items.retain(|i| i["job_id"] == j.id);
            }
            d
        })
        .collect::<Vec<_>>());
    let (tail, err) = log_tail(j, true, tail_lines);
    v["stderr_tail"] = json!(tail);
    v["stderr_read_error"] = json!(err);
    v
}

/// One applied classification, with how each job's next attempt turned out.
pub fn decision(state: &State, seq: Seq) -> Option<Value> {
    let c = state.classifications.get(&seq)?;
    let items: Vec<Value> = c
        .items
        .iter()
        .map(|it| {
            let job = state.job(it.job_id);
            // The attempt this decision put the job back for (linked by the fold).
            let next = job.and_then(|j| j.attempt_for(seq));
            let outcome = match (it.action, next) {
                (crate::model::Action::Fail, _) => "failed by this decision",
                (_, None) => "not run yet",
                (_, Some(a)) => match &a.exit {
                    None => "running",
                    Some(e) if e.succeeded() => "retry succeeded",
                    Some(_) => "retry failed again",
                },
            };
            json!({
                "job_id": it.job_id,
                "job_name": job_name(state, it.job_id),
                "action": it.action.as_str(),
                "reason": it.reason,
                "memory": it.memory_bytes.map(format_memory),
                "runtime": it.runtime_seconds.map(format_duration),
                "outcome": outcome,
                "next_attempt": next.map(|a| json!({
                    "attempt_id": a.attempt_id,
                    "return_code": a.exit.as_ref().map(|e| e.return_code),
                    "timed_out": a.exit.as_ref().map(|e| e.timed_out),
                })),
                "job_status_now": job.map(|j| j.status.as_str()),
            })
        })
        .collect();
    Some(json!({
        "seq": c.seq,
        "workflow_id": c.workflow_id,
        "actor": c.actor,
        "proposal_id": c.proposal,
        "undone_by": c.undone_by,
        "items": items,
    }))
}

/// Decisions about a workflow or a job, oldest first.
pub fn decision_history(state: &State, wf: Option<WorkflowId>, job: Option<JobId>) -> Vec<Value> {
    state
        .classifications
        .values()
        .filter(|c| wf.is_none_or(|w| c.workflow_id == w))
        .filter(|c| job.is_none_or(|j| c.items.iter().any(|i| i.job_id == j)))
        .filter_map(|c| decision(state, c.seq))
        .collect()
}

/// Jobs of a workflow in one status.
pub fn jobs_in(state: &State, wf: WorkflowId, status: JobStatus) -> Vec<&Job> {
    state
        .workflow(wf)
        .map(|w| {
            state
                .jobs_of(w)
                .iter()
                .filter(|j| j.status == status)
                .collect()
        })
        .unwrap_or_default()
}

/// The workflow an event is about, if any.
pub fn workflow_of(s: &State, b: &Body) -> Option<WorkflowId> {
    match b {
        Body::WorkflowCreated { workflow_id, .. }
        | Body::RunInitialized { workflow_id, .. }
        | Body::StatusReset { workflow_id, .. }
        | Body::ProposalRecorded { workflow_id, .. }
        | Body::ClassificationApplied { workflow_id, .. }
        | Body::RunnerStarted { workflow_id, .. }
        | Body::RunnerStopped { workflow_id, .. } => Some(*workflow_id),
        Body::Undone { target } => s.classifications.get(target).map(|c| c.workflow_id),
        _ => b.job_id().and_then(|j| s.job(j)).map(|j| j.workflow_id),
    }
}

/// An event time for people (UTC, seconds).
pub fn time_str(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How each decider's decisions turned out: per actor, decisions, retries that succeeded,
/// retries that failed again, retries not run yet, and failures that stayed failed. Undone
/// decisions are counted apart.
pub fn stats(state: &State, wf: Option<WorkflowId>) -> Vec<Value> {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Tally {
        decisions: u64,
        retries: u64,
        retry_succeeded: u64,
        retry_failed_again: u64,
        retry_pending: u64,
        fails: u64,
        fail_stayed_failed: u64,
        undone: u64,
    }
    let mut by: BTreeMap<String, Tally> = BTreeMap::new();
    for c in state.classifications.values() {
        if wf.is_some_and(|w| c.workflow_id != w) {
            continue;
        }
        let t = by.entry(c.actor.clone()).or_default();
        for it in &c.items {
            t.decisions += 1;
            if c.undone_by.is_some() {
                t.undone += 1;
                continue;
            }
            let job = state.job(it.job_id);
            match it.action {
                crate::model::Action::Retry => {
                    t.retries += 1;
                    let next = job.and_then(|j| j.attempt_for(c.seq));
                    match next.and_then(|a| a.exit.as_ref()) {
                        Some(e) if e.succeeded() => t.retry_succeeded += 1,
                        Some(_) => t.retry_failed_again += 1,
                        None => t.retry_pending += 1,
                    }
                }
                crate::model::Action::Fail => {
                    t.fails += 1;
                    if job.is_some_and(|j| j.status == JobStatus::Failed) {
                        t.fail_stayed_failed += 1;
                    }
                }
            }
        }
    }
    by.into_iter()
        .map(|(actor, t)| {
            let judged = t.retry_succeeded + t.retry_failed_again;
            json!({
                "actor": actor,
                "decisions": t.decisions,
                "retries": t.retries,
                "retries_succeeded": t.retry_succeeded,
                "retries_failed_again": t.retry_failed_again,
                "retries_not_run_yet": t.retry_pending,
                "fails": t.fails,
                "fails_stayed_failed": t.fail_stayed_failed,
                "undone": t.undone,
                "retry_precision": (judged > 0).then(|| t.retry_succeeded as f64 / judged as f64),
            })
        })
        .collect()
}
