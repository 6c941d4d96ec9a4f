//! `jobs list` and `jobs get`.

use super::render::{clip, Out};
use super::{exit, open_existing, read_state, Cli, CliError, CliResult};
use crate::decide::DecideError;
use crate::ledger::LedgerError;
use crate::model::{JobId, JobStatus, WorkflowId};
use crate::runner::logs;
use crate::state::{Job, State};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// A workflow's jobs (Torc's `{"items": [...]}` with -f json).
    List {
        workflow_id: WorkflowId,
        /// Only jobs in this status (Torc's names: ready, running, completed, failed,
        /// pending_failed, blocked, canceled, terminated, ...; or their numbers 0-10).
        #[arg(long, short = 's')]
        status: Option<String>,
    },
    /// One job: effective resources (spec plus per-job override), attempts, decisions, and the
    /// tail of its last stderr.
    Get { job_id: JobId },
}

pub fn job_json(s: &State, j: &Job) -> Value {
    let wf = s.workflow(j.workflow_id).expect("job of a known workflow");
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

fn unknown_wf(wf: WorkflowId) -> CliError {
    CliError::from(LedgerError::from(DecideError::UnknownWorkflow(wf)))
}

pub fn dispatch(cli: &Cli, out: &Out, c: &JobsCmd) -> CliResult {
    match c {
        JobsCmd::List {
            workflow_id,
            status,
        } => {
            let filter = match status {
                None => None,
                Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                    CliError::bad_input(format!(
                        "unknown status {s:?}; use one of: {}",
                        JobStatus::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })?),
            };
            let ledger = open_existing(cli)?;
            let s = read_state(cli, &ledger)?;
            let wf = s
                .workflow(*workflow_id)
                .ok_or_else(|| unknown_wf(*workflow_id))?;
            let jobs: Vec<&Job> = s
                .jobs_of(wf)
                .iter()
                .filter(|j| filter.is_none_or(|f| j.status == f))
                .collect();
            if out.json() {
                let items: Vec<Value> = jobs.iter().map(|j| job_json(&s, j)).collect();
                out.print_json(&json!({"items": items}));
            } else {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        let def = &wf.def.jobs[j.index as usize];
                        let rc = j
                            .attempts
                            .last()
                            .and_then(|a| a.exit.as_ref())
                            .map(|e| e.return_code.to_string())
                            .unwrap_or_default();
                        vec![
                            j.id.to_string(),
                            def.name.clone(),
                            j.status.to_string(),
                            j.attempt_id.to_string(),
                            rc,
                            clip(&def.command, 60),
                        ]
                    })
                    .collect();
                out.table(&["ID", "NAME", "STATUS", "ATTEMPT", "RC", "COMMAND"], &rows);
                if jobs.is_empty() {
                    out.note("(no jobs match)");
                }
            }
            Ok(exit::OK)
        }
        JobsCmd::Get { job_id } => {
            let ledger = open_existing(cli)?;
            let s = read_state(cli, &ledger)?;
            let j = s.job(*job_id).ok_or_else(|| {
                CliError::from(LedgerError::from(DecideError::UnknownJob(*job_id)))
            })?;
            let rr = s.effective_resources(j);
            let mut v = job_json(&s, j);
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
                    "stdout_path": a.stdout_path,
                    "stderr_path": a.stderr_path,
                    "started_seq": a.started_seq,
                    "finished_seq": a.finished_seq,
                }))
                .collect::<Vec<_>>());
            v["decisions"] = json!(j
                .decisions
                .iter()
                .filter_map(|seq| s.classifications.get(seq))
                .map(|c| {
                    let item = c.items.iter().find(|i| i.job_id == j.id);
                    json!({
                        "seq": c.seq,
                        "action": item.map(|i| i.action.as_str()),
                        "reason": item.map(|i| i.reason.clone()),
                        "actor": c.actor,
                        "proposal_id": c.proposal,
                        "undone_by": c.undone_by,
                    })
                })
                .collect::<Vec<_>>());
            let tail = j
                .attempts
                .last()
                .map(|a| logs::tail(std::path::Path::new(&a.stderr_path), 10, logs::TAIL_BYTES));
            if out.json() {
                v["stderr_tail"] = match &tail {
                    Some(Ok(t)) => json!(t),
                    _ => Value::Null,
                };
                out.print_json(&v);
            } else {
                let wf = s.workflow(j.workflow_id).expect("known");
                let def = &wf.def.jobs[j.index as usize];
                out.line(format!(
                    "job {} \"{}\" in workflow {}: {} (attempt {})",
                    j.id, def.name, j.workflow_id, j.status, j.attempt_id
                ));
                out.line(format!("  command: {}", def.command));
                let ov = if j.resource_override.memory_bytes.is_some()
                    || j.resource_override.runtime_seconds.is_some()
                {
                    " (per-job override)"
                } else {
                    ""
                };
                out.line(format!(
                    "  resources: {} cpu, {} gpu, {} node, memory {}, runtime {} from group {}{ov}",
                    rr.num_cpus, rr.num_gpus, rr.num_nodes, rr.memory, rr.runtime, rr.name
                ));
                for a in &j.attempts {
                    let e = a.exit.as_ref();
                    out.line(format!(
                        "  attempt {} (run {}): {}",
                        a.attempt_id,
                        a.run_id,
                        match e {
                            None => "running or interrupted".to_string(),
                            Some(e) => format!(
                                "exit {} after {:.3}s{}{}",
                                e.return_code,
                                e.duration_ms as f64 / 1000.0,
                                if e.timed_out { ", timed out" } else { "" },
                                e.peak_memory_bytes
                                    .map(|p| format!(
                                        ", peak memory {}",
                                        crate::event::describe::human_bytes(p)
                                    ))
                                    .unwrap_or_default()
                            ),
                        }
                    ));
                }
                for d in v["decisions"].as_array().into_iter().flatten() {
                    out.line(format!(
                        "  decision {}: {} by {}: {}{}",
                        d["seq"],
                        d["action"].as_str().unwrap_or("?"),
                        d["actor"].as_str().unwrap_or("?"),
                        d["reason"].as_str().unwrap_or(""),
                        if d["undone_by"].is_null() {
                            ""
                        } else {
                            " (undone)"
                        }
                    ));
                }
                if let Some(Ok(t)) = tail {
                    if !t.is_empty() {
                        out.line("  stderr (last lines):");
                        for l in t.lines() {
                            out.line(format!("    {l}"));
                        }
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}
