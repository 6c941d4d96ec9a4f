//! One line per event, for people: the timeline of `log` and the decision history.

use super::{Body, Classification, Event};
use crate::model::{format_duration, format_memory, JobId};

/// Describe an event; `name` gives a job's name when known.
pub fn describe(ev: &Event, name: &dyn Fn(JobId) -> Option<String>) -> String {
    let job = |id: JobId| match name(id) {
        Some(n) => format!("job {id} ({n})"),
        None => format!("job {id}"),
    };
    match &ev.body {
        Body::WorkflowCreated {
            workflow_id,
            first_job_id,
            def,
            ..
        } => format!(
            "created workflow {workflow_id} \"{}\" with {} jobs (ids {}..{})",
            def.name,
            def.jobs.len(),
            first_job_id,
            first_job_id + def.jobs.len() as u64 - 1
        ),
        Body::RunInitialized {
            workflow_id,
            run_id,
            kind,
        } => format!("workflow {workflow_id}: run {run_id} initialized ({kind:?})").to_lowercase(),
        Body::StatusReset {
            workflow_id,
            failed_only,
        } => format!(
            "workflow {workflow_id}: reset {} jobs to uninitialized",
            if *failed_only { "failed" } else { "all" }
        ),
        Body::StatusChanged {
            job_id,
            from,
            to,
            attempt_id,
            prev_attempt_id,
            why,
        } => {
            let attempt = if attempt_id != prev_attempt_id {
                format!(" (attempt {prev_attempt_id} → {attempt_id})")
            } else {
                String::new()
            };
            format!(
                "{}: {from} → {to}{attempt}: {}",
                job(*job_id),
                crate::state::describe_why(why)
            )
        }
        Body::JobStarted {
            job_id,
            run_id,
            attempt_id,
            ..
        } => format!("{} started (run {run_id}, attempt {attempt_id})", job(*job_id)),
        Body::JobFinished { job_id, exit, .. } => {
            let mut s = format!(
                "{} exited with {} after {:.1}s",
                job(*job_id),
                exit.return_code,
                exit.duration_ms as f64 / 1000.0
            );
            if exit.timed_out {
                s.push_str(" (killed at its runtime limit)");
            } else if let Some(sig) = exit.signal {
                s.push_str(&format!(" (signal {sig})"));
            }
            if let Some(p) = exit.peak_memory_bytes {
                s.push_str(&format!(", peak memory {}", human_bytes(p)));
            }
            s
        }
        Body::HandlerMatched {
            job_id,
            handler,
            rule_index,
            return_code,
            retries_used,
            max_retries,
            retry,
        } => {
            if *retry {
                format!(
                    "{}: handler {handler} rule {rule_index} matched exit {return_code}: retry {} of {max_retries}",
                    job(*job_id),
                    retries_used + 1
                )
            } else {
                format!(
                    "{}: handler {handler} rule {rule_index} matched exit {return_code}: all {max_retries} retries used",
                    job(*job_id)
                )
            }
        }
        Body::RecoveryScriptOwed { job_id, script, .. } => {
            format!("{}: recovery script due before the retry: {script}", job(*job_id))
        }
        Body::RecoveryScriptRan {
            job_id,
            return_code,
            ..
        } => format!("{}: recovery script exited with {return_code}", job(*job_id)),
        Body::ProposalRecorded {
            workflow_id, items, ..
        } => format!(
            "proposal {} (dry run) for workflow {workflow_id}: {}",
            ev.seq,
            items_summary(items, &job)
        ),
        Body::ClassificationApplied {
            workflow_id,
            proposal,
            items,
            ..
        } => {
            let from = proposal
                .map(|p| format!(" [from proposal {p}]"))
                .unwrap_or_default();
            format!(
                "classified in workflow {workflow_id}: {}{from}",
                items_summary(items, &job)
            )
        }
        Body::OverrideSet { job_id, to, .. } => {
            let mut parts = Vec::new();
            if let Some(m) = to.memory_bytes {
                parts.push(format!("memory {}", format_memory(m)));
            }
            if let Some(r) = to.runtime_seconds {
                parts.push(format!("runtime {}", format_duration(r)));
            }
            if parts.is_empty() {
                format!("{}: resource override removed", job(*job_id))
            } else {
                format!("{}: resource override {}", job(*job_id), parts.join(", "))
            }
        }
        Body::Undone { target } => format!("undo of event {target}"),
        Body::RunnerStarted {
            workflow_id,
            run_id,
            max_parallel,
        } => format!(
            "runner started on workflow {workflow_id} (run {run_id}, up to {max_parallel} jobs at once)"
        ),
        Body::RunnerStopped {
            workflow_id,
            outcome,
            ..
        } => format!("runner stopped on workflow {workflow_id}: {outcome}"),
        Body::EvaluationRecorded {
            classifier,
            model,
            metrics,
            predictions,
            ..
        } => {
            let accuracy = serde_json::from_str::<serde_json::Value>(metrics)
                .ok()
                .and_then(|m| m["accuracy"].as_f64())
                .map(|a| format!(": accuracy {a:.3}"))
                .unwrap_or_default();
            let model = model
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            format!(
                "evaluation {} of {classifier}{model} on {} case(s){accuracy}",
                ev.seq,
                predictions.len()
            )
        }
    }
}

fn items_summary(items: &[Classification], job: &dyn Fn(JobId) -> String) -> String {
    items
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", c.action.as_str(), job(c.job_id));
            if let Some(m) = c.memory_bytes {
                s.push_str(&format!(" memory={}", format_memory(m)));
            }
            if let Some(r) = c.runtime_seconds {
                s.push_str(&format!(" runtime={}", format_duration(r)));
            }
            if !c.reason.is_empty() {
                s.push_str(&format!(" \"{}\"", c.reason));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
