//! Classifications of `pending_failed` jobs: dry runs (proposals), applies, proposal applies.

use super::{release_dependents, DecideError, Overlay};
use crate::event::{Body, Classification, Override, Why};
use crate::model::{Action, JobId, JobStatus, Seq, WorkflowId};
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyRequest {
    pub workflow_id: WorkflowId,
    pub items: Vec<Classification>,
    pub dry_run: bool,
    /// A digest of the evidence the classifier looked at (stderr tails), if known.
    pub evidence_digest: Option<String>,
}

/// Why one item of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub job_id: JobId,
    pub reason: String,
}

/// Check every item; all must be valid for anything to be recorded.
pub fn validate(
    state: &State,
    workflow_id: WorkflowId,
    items: &[Classification],
) -> Result<(), DecideError> {
    state
        .workflow(workflow_id)
        .ok_or(DecideError::UnknownWorkflow(workflow_id))?;
    if items.is_empty() {
        return Err(DecideError::Refused(
            "no classifications given; name at least one job".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    for it in items {
        let err = |reason: String| ItemError {
            job_id: it.job_id,
            reason,
        };
        if !seen.insert(it.job_id) {
            errors.push(err(
                "classified twice in the same request; give each job once".into(),
            ));
            continue;
        }
        let Some(job) = state.job(it.job_id) else {
            errors.push(err(format!(
                "no such job; run `torc-ledger jobs list {workflow_id} --status pending_failed`"
            )));
            continue;
        };
        if job.workflow_id != workflow_id {
            errors.push(err(format!(
                "belongs to workflow {}, not workflow {workflow_id}",
                job.workflow_id
            )));
            continue;
        }
        if job.status != JobStatus::PendingFailed {
            errors.push(err(format!(
                "is {}; only pending_failed jobs can be classified",
                job.status
            )));
            continue;
        }
        if it.action == Action::Fail && (it.memory_bytes.is_some() || it.runtime_seconds.is_some())
        {
            errors.push(err(
                "memory and runtime only apply to action retry; drop them or use retry".into(),
            ));
            continue;
        }
        if it.memory_bytes == Some(0) || it.runtime_seconds == Some(0) {
            errors.push(err("memory and runtime must be greater than zero".into()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DecideError::ItemsRefused(errors))
    }
}

pub fn classify(state: &State, req: &ClassifyRequest) -> Result<Vec<Body>, DecideError> {
    validate(state, req.workflow_id, &req.items)?;
    if req.dry_run {
        let job_versions = req
            .items
            .iter()
            .map(|it| {
                (
                    it.job_id,
                    state.job(it.job_id).map(|j| j.last_seq).unwrap_or(0),
                )
            })
            .collect();
        return Ok(vec![Body::ProposalRecorded {
            workflow_id: req.workflow_id,
            items: req.items.clone(),
            job_versions,
        }]);
    }
    Ok(effects(
        state,
        req.workflow_id,
        None,
        &req.items,
        req.evidence_digest.clone(),
    ))
}

pub fn apply_proposal(state: &State, proposal_id: Seq) -> Result<Vec<Body>, DecideError> {
    let p = state
        .proposals
        .get(&proposal_id)
        .ok_or(DecideError::UnknownProposal(proposal_id))?;
    if let Some(by) = p.applied_by {
        return Err(DecideError::AlreadyApplied {
            proposal: proposal_id,
            by,
        });
    }
    let changed: Vec<(JobId, Seq, Seq)> = p
        .job_versions
        .iter()
        .filter_map(|(job, then)| {
            let now = state.job(*job).map(|j| j.last_seq).unwrap_or(0);
            (now != *then).then_some((*job, *then, now))
        })
        .collect();
    if !changed.is_empty() {
        return Err(DecideError::Stale {
            proposal: proposal_id,
            changed,
        });
    }
    validate(state, p.workflow_id, &p.items)?;
    Ok(effects(
        state,
        p.workflow_id,
        Some(proposal_id),
        &p.items,
        None,
    ))
}

/// The override a retry asks for, as an event, if it changes the job's current one.
fn override_change(job: &crate::state::Job, it: &Classification) -> Option<Body> {
    let from = job.resource_override;
    let to = Override {
        memory_bytes: it.memory_bytes.or(from.memory_bytes),
        runtime_seconds: it.runtime_seconds.or(from.runtime_seconds),
    };
    (to != from).then_some(Body::OverrideSet {
        job_id: job.id,
        from,
        to,
    })
}

/// Recovery's retry of failed or terminated jobs: each goes back to ready as its next attempt
/// (with its override), and the dependents its failure canceled go back to blocked, to be
/// decided again when it ends.
pub fn requeue(state: &State, req: &ClassifyRequest) -> Result<Vec<Body>, DecideError> {
    let wf = state
        .workflow(req.workflow_id)
        .ok_or(DecideError::UnknownWorkflow(req.workflow_id))?;
    if req.items.is_empty() {
        return Err(DecideError::Refused("no jobs to requeue".into()));
    }
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    for it in &req.items {
        let err = |reason: String| ItemError {
            job_id: it.job_id,
            reason,
        };
        match state.job(it.job_id) {
            _ if !seen.insert(it.job_id) => errors.push(err("given twice".into())),
            None => errors.push(err("no such job".into())),
            Some(j) if j.workflow_id != req.workflow_id => errors.push(err(format!(
                "belongs to workflow {}, not workflow {}",
                j.workflow_id, req.workflow_id
            ))),
            Some(j) if !matches!(j.status, JobStatus::Failed | JobStatus::Terminated) => errors
                .push(err(format!(
                    "is {}; recovery requeues failed or terminated jobs",
                    j.status
                ))),
            Some(_) if it.action != Action::Retry => errors.push(err(
                "the job has already failed; requeue only retries".into(),
            )),
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(DecideError::ItemsRefused(errors));
    }
    let mut out = vec![Body::ClassificationApplied {
        workflow_id: req.workflow_id,
        proposal: None,
        items: req.items.clone(),
        evidence_digest: req.evidence_digest.clone(),
    }];
    // Every requeued job stops releasing its dependents, and the dependents its failure canceled
    // wait again; then a requeued job whose own upstream is back in play waits (blocked) instead
    // of running first.
    let mut ov = Overlay::new(state);
    for it in &req.items {
        ov.changes.insert(it.job_id, JobStatus::Ready);
    }
    let mut uncanceled = Vec::new();
    let mut back: HashSet<JobId> = HashSet::new();
    for it in &req.items {
        let mut queue = vec![state.job(it.job_id).expect("validated").index];
        while let Some(idx) = queue.pop() {
            for &d in &wf.dependents[idx as usize] {
                let dep = state.job(wf.job_id_of(d)).expect("known");
                if dep.status == JobStatus::Canceled && back.insert(dep.id) {
                    uncanceled.push(Body::StatusChanged {
                        job_id: dep.id,
                        from: JobStatus::Canceled,
                        to: JobStatus::Blocked,
                        attempt_id: dep.attempt_id,
                        prev_attempt_id: dep.attempt_id,
                        why: Why::Requeued,
                    });
                    ov.changes.insert(dep.id, JobStatus::Blocked);
                    queue.push(d);
                }
            }
        }
    }
    for it in &req.items {
        let job = state.job(it.job_id).expect("validated");
        out.extend(override_change(job, it));
        let deps_done = wf.def.jobs[job.index as usize]
            .depends_on
            .iter()
            .all(|&u| ov.status(wf.job_id_of(u)).releases_dependents());
        out.push(Body::StatusChanged {
            job_id: job.id,
            from: job.status,
            to: if deps_done {
                JobStatus::Ready
            } else {
                JobStatus::Blocked
            },
            attempt_id: job.attempt_id + 1,
            prev_attempt_id: job.attempt_id,
            why: Why::Requeued,
        });
    }
    out.extend(uncanceled);
    Ok(out)
}

/// The batch for validated items: the head, then per job its override, its status change and,
/// for `fail`, the cancellations downstream.
fn effects(
    state: &State,
    workflow_id: WorkflowId,
    proposal: Option<Seq>,
    items: &[Classification],
    evidence_digest: Option<String>,
) -> Vec<Body> {
    let mut out = vec![Body::ClassificationApplied {
        workflow_id,
        proposal,
        items: items.to_vec(),
        evidence_digest,
    }];
    let mut ov = Overlay::new(state);
    for it in items {
        let job = state.job(it.job_id).expect("validated");
        match it.action {
            Action::Retry => {
                out.extend(override_change(job, it));
                out.push(Body::StatusChanged {
                    job_id: job.id,
                    from: JobStatus::PendingFailed,
                    to: JobStatus::Ready,
                    attempt_id: job.attempt_id + 1,
                    prev_attempt_id: job.attempt_id,
                    why: Why::Classified,
                });
                ov.changes.insert(job.id, JobStatus::Ready);
            }
            Action::Fail => {
                out.push(Body::StatusChanged {
                    job_id: job.id,
                    from: JobStatus::PendingFailed,
                    to: JobStatus::Failed,
                    attempt_id: job.attempt_id,
                    prev_attempt_id: job.attempt_id,
                    why: Why::Classified,
                });
                ov.changes.insert(job.id, JobStatus::Failed);
                release_dependents(&mut ov, job.id, &mut out);
            }
        }
    }
    out
}
