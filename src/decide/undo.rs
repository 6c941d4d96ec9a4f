//! `undo`: compensating events, never deletion. Undoing an undo redoes.

use super::{release_dependents, DecideError, Overlay};
use crate::event::{Body, Event, Why};
use crate::model::{JobId, Seq};
use crate::state::State;

/// The compensating bodies for a batch (the target and what it caused), newest change first.
pub fn undo_effects(batch: &[Event]) -> Vec<Body> {
    let mut out = Vec::new();
    for ev in batch.iter().skip(1).rev() {
        match &ev.body {
            Body::StatusChanged {
                job_id,
                from,
                to,
                attempt_id,
                prev_attempt_id,
                ..
            } => out.push(Body::StatusChanged {
                job_id: *job_id,
                from: *to,
                to: *from,
                attempt_id: *prev_attempt_id,
                prev_attempt_id: *attempt_id,
                why: Why::Undo,
            }),
            Body::OverrideSet { job_id, from, to } => out.push(Body::OverrideSet {
                job_id: *job_id,
                from: *to,
                to: *from,
            }),
            _ => {}
        }
    }
    out
}

pub fn undo(state: &State, target: Seq, batch: &[Event]) -> Result<Vec<Body>, DecideError> {
    let head = batch
        .first()
        .filter(|e| e.seq == target)
        .ok_or(DecideError::UnknownEvent(target))?;
    let not_undoable = |why: String| DecideError::NotUndoable {
        seq: target,
        kind: head.body.kind().into(),
        why,
    };
    match &head.body {
        Body::ClassificationApplied { .. } | Body::StatusReset { .. } | Body::Undone { .. } => {}
        Body::WorkflowCreated { .. } => {
            return Err(not_undoable("creating a workflow cannot be undone".into()))
        }
        Body::RunInitialized { .. } => {
            return Err(not_undoable(
                "a new run cannot be undone; use `torc-ledger workflows reset-status` to go back"
                    .into(),
            ))
        }
        Body::EvaluationRecorded { .. } => {
            return Err(not_undoable(
                "an evaluation changes no job; it stays in the log as a record".into(),
            ))
        }
        Body::ProposalRecorded { .. } => return Err(not_undoable(
            "a proposal changes nothing; apply it with `torc-ledger proposals apply` or leave it"
                .into(),
        )),
        _ => {
            let why = if head.index > 0 {
                let h = head.seq - head.index as u64;
                format!("it is part of event {h}; undo {h} instead")
            } else {
                "it records what the runner observed; undo the decision that led to it".into()
            };
            return Err(not_undoable(why));
        }
    }
    // Already reversed? Then its undo is what to undo (which redoes it).
    if let Some((&undo_seq, _)) = state
        .undos
        .iter()
        .find(|(u, t)| **t == target && in_effect(state, **u))
    {
        return Err(not_undoable(format!(
            "it was already undone by event {undo_seq}; run `torc-ledger undo {undo_seq}` to redo it"
        )));
    }
    let batch_end = batch.last().map(|e| e.seq).unwrap_or(target);
    // In the way: a later change to a job the batch changed, or to a direct dependent of one
    // (its status was decided knowing what the batch did, e.g. canceled after the batch failed
    // its upstream and another upstream finished).
    let mut in_the_way: Vec<(JobId, Seq)> = Vec::new();
    let mut note = |job_id: JobId| {
        let now = state.job(job_id).map(|j| j.last_seq).unwrap_or(0);
        if now > batch_end && !in_the_way.iter().any(|(j, _)| *j == job_id) {
            in_the_way.push((job_id, now));
        }
    };
    for ev in &batch[1..] {
        if let Some(job_id) = ev.body.job_id() {
            note(job_id);
            if let Some((wf, job)) = state
                .job(job_id)
                .and_then(|j| state.workflow(j.workflow_id).map(|w| (w, j)))
            {
                for &d in &wf.dependents[job.index as usize] {
                    note(wf.job_id_of(d));
                }
            }
        }
    }
    if !in_the_way.is_empty() {
        in_the_way.sort_by_key(|(_, s)| *s);
        return Err(DecideError::UndoBlocked { target, in_the_way });
    }
    let mut out = vec![Body::Undone { target }];
    let compensation = undo_effects(batch);
    // The restored statuses may release dependents that later events left waiting (an upstream
    // finished while this job was reset): decide them now, as part of the undo.
    let mut ov = Overlay::new(state);
    let mut restored = Vec::new();
    for b in &compensation {
        if let Body::StatusChanged { job_id, to, .. } = b {
            ov.changes.insert(*job_id, *to);
            restored.push(*job_id);
        }
    }
    out.extend(compensation);
    for job_id in restored {
        if ov.status(job_id).releases_dependents() {
            release_dependents(&mut ov, job_id, &mut out);
        }
    }
    Ok(out)
}

/// An event's effect still stands: no undo that is itself in effect targets it.
pub fn in_effect(state: &State, seq: Seq) -> bool {
    !state
        .undos
        .iter()
        .any(|(u, t)| *t == seq && in_effect(state, *u))
}
