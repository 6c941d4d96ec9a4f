//! `jobs list` and `jobs get`.

use super::render::{clip, Out};
use super::{exit, open_existing, read_state, Cli, CliError, CliResult};
use crate::decide::DecideError;
use crate::ledger::LedgerError;
use crate::model::{JobId, JobStatus, WorkflowId};
use crate::state::Job;
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
                let items: Vec<Value> = jobs.iter().map(|j| crate::views::job(&s, j)).collect();
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
            let v = crate::views::job_details(&s, j, 10);
            if out.json() {
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
                    for it in d["items"].as_array().into_iter().flatten() {
                        out.line(format!(
                            "  decision {}: {} by {}: {} — {}{}",
                            d["seq"],
                            it["action"].as_str().unwrap_or("?"),
                            d["actor"].as_str().unwrap_or("?"),
                            it["reason"].as_str().unwrap_or(""),
                            it["outcome"].as_str().unwrap_or(""),
                            if d["undone_by"].is_null() {
                                ""
                            } else {
                                " (undone)"
                            }
                        ));
                    }
                }
                if let Some(t) = v["stderr_tail"].as_str() {
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
