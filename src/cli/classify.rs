//! `classify` and `proposals`: decisions about pending_failed jobs.

use super::render::{clip, Out};
use super::{exit, no_at, open_existing, read_state, Cli, CliError, CliResult};
use crate::decide::{ClassifyRequest, Command, DecideError};
use crate::event::Classification;
use crate::ledger::{Ctx, LedgerError};
use crate::model::{parse_duration, parse_memory, Action, JobId, Seq, WorkflowId};
use crate::state::State;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  torc-ledger classify 1 --job 3 --action retry --reason \"NCCL timeout on a flaky node\" --dry-run
  torc-ledger proposals apply 42
  torc-ledger classify 1 --job 4 --action retry --memory 8g --reason \"OOM at 4g\"
  torc-ledger classify 1 --job 5 --action fail --reason \"KeyError in our code\"
  torc-ledger classify 1 --from decisions.json      # [{\"job_id\": 3, \"action\": \"retry\", \"reason\": \"...\"}]")]
pub struct ClassifyArgs {
    pub workflow_id: WorkflowId,
    /// Job id to classify (repeat for several jobs with the same decision).
    #[arg(long = "job", value_name = "ID", required_unless_present = "from")]
    pub jobs: Vec<JobId>,
    /// retry: back to ready as the next attempt; fail: failed, dependents canceled.
    #[arg(long, value_parser = ["retry", "fail"], required_unless_present = "from")]
    pub action: Option<String>,
    /// Why (recorded with the decision; shown by `log` and `jobs get`).
    #[arg(long, required_unless_present = "from")]
    pub reason: Option<String>,
    /// retry with this memory for this job only (e.g. 8g); shared resource groups are never edited.
    #[arg(long)]
    pub memory: Option<String>,
    /// retry with this runtime for this job only (ISO-8601, e.g. PT2H).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Record a proposal instead of applying; apply it later with `proposals apply ID`.
    #[arg(long)]
    pub dry_run: bool,
    /// A JSON list in the classify_and_resolve_failures format ("-" for stdin):
    /// [{"job_id": 3, "action": "retry", "memory": "8g", "runtime": "PT2H", "reason": "..."}]
    #[arg(long, value_name = "FILE", conflicts_with_all = ["jobs", "action", "memory", "runtime"])]
    pub from: Option<PathBuf>,
    /// Same key, same answer: a repeated command with this key appends nothing.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProposalsCmd {
    /// A workflow's proposals (dry runs): open, applied or stale.
    List { workflow_id: WorkflowId },
    /// Apply exactly what a proposal says, or refuse it as stale or already applied.
    Apply {
        proposal_id: Seq,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

/// One item of the `classify_and_resolve_failures` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    pub job_id: i64,
    pub action: String,
    pub memory: Option<String>,
    pub runtime: Option<String>,
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileIn {
    List(Vec<ItemIn>),
    Wrapped { classifications: Vec<ItemIn> },
}

/// Turn input items into classifications, or say what is wrong with each bad one.
pub fn to_classifications(items: &[ItemIn]) -> Result<Vec<Classification>, Vec<(i64, String)>> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for it in items {
        let mut bad = |m: String| errs.push((it.job_id, m));
        if it.job_id <= 0 {
            bad("job_id must be a positive job id".into());
            continue;
        }
        let Some(action) = Action::parse(&it.action) else {
            bad(format!("unknown action {:?}; use retry or fail", it.action));
            continue;
        };
        let memory_bytes = match it.memory.as_deref().map(parse_memory).transpose() {
            Ok(m) => m,
            Err(e) => {
                bad(e.to_string());
                continue;
            }
        };
        let runtime_seconds = match it.runtime.as_deref().map(parse_duration).transpose() {
            Ok(r) => r,
            Err(e) => {
                bad(e.to_string());
                continue;
            }
        };
        out.push(Classification {
            job_id: it.job_id as u64,
            action,
            reason: it.reason.clone().unwrap_or_default(),
            memory_bytes,
            runtime_seconds,
        });
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn read_items(a: &ClassifyArgs) -> Result<Vec<Classification>, CliError> {
    if let Some(path) = &a.from {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| CliError::bad_input(format!("cannot read stdin: {e}")))?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?
        };
        let parsed: FileIn = serde_json::from_str(&text).map_err(|e| {
            CliError::bad_input(format!(
                "{}: not a JSON list of classifications ({e}); expected [{{\"job_id\": 3, \"action\": \"retry\", \"reason\": \"...\"}}]",
                path.display()
            ))
        })?;
        let items = match parsed {
            FileIn::List(v) | FileIn::Wrapped { classifications: v } => v,
        };
        return to_classifications(&items).map_err(|errs| {
            let mut e = CliError::bad_input(format!(
                "{}: {}",
                path.display(),
                errs.iter()
                    .map(|(j, m)| format!("job {j}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            e.detail = Some(json!(errs
                .iter()
                .map(|(j, m)| json!({"job_id": j, "status": "error", "message": m}))
                .collect::<Vec<_>>()));
            e
        });
    }
    let action = a
        .action
        .as_deref()
        .and_then(Action::parse)
        .expect("clap checked");
    let memory_bytes = a
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    let runtime_seconds = a
        .runtime
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    Ok(a.jobs
        .iter()
        .map(|&job_id| Classification {
            job_id,
            action,
            reason: a.reason.clone().unwrap_or_default(),
            memory_bytes,
            runtime_seconds,
        })
        .collect())
}

fn results_json(s: &State, items: &[Classification], status: &str) -> Vec<Value> {
    items
        .iter()
        .map(|c| {
            let mut v = json!({
                "job_id": c.job_id,
                "job_name": crate::views::job_name(s, c.job_id),
                "action": c.action.as_str(),
                "reason": c.reason,
                "status": status,
            });
            if let Some(m) = c.memory_bytes {
                v["memory"] = json!(crate::model::format_memory(m));
            }
            if let Some(r) = c.runtime_seconds {
                v["runtime"] = json!(crate::model::format_duration(r));
            }
            v
        })
        .collect()
}

/// Per-item results for a refused batch: the bad items with their reason, the rest skipped.
fn refusal_detail(s: &State, items: &[Classification], e: &DecideError) -> Option<Value> {
    let DecideError::ItemsRefused(errs) = e else {
        return None;
    };
    let mut results = results_json(s, items, "skipped");
    for r in results.iter_mut() {
        let id = r["job_id"].as_u64().unwrap_or(0);
        match errs.iter().find(|e| e.job_id == id) {
            Some(err) => {
                r["status"] = json!("error");
                r["message"] = json!(err.reason);
            }
            None => r["message"] = json!("not applied because other items were refused"),
        }
    }
    Some(json!(results))
}

pub fn classify(cli: &Cli, out: &Out, a: &ClassifyArgs) -> CliResult {
    no_at(cli, "classify")?;
    let items = read_items(a)?;
    let ledger = open_existing(cli)?;
    let before = ledger.state(None)?;
    let req = ClassifyRequest {
        workflow_id: a.workflow_id,
        items: items.clone(),
        dry_run: a.dry_run,
        evidence_digest: None,
    };
    let ctx = Ctx {
        idempotency_key: a.idempotency_key.clone(),
        ..Ctx::user()
    };
    let appended = match ledger.execute(Command::Classify(req), ctx) {
        Ok(x) => x,
        Err(LedgerError::Decide(d)) => {
            let detail = refusal_detail(&before, &items, &d);
            let mut e = CliError::from(LedgerError::Decide(d));
            e.detail = detail;
            return Err(e);
        }
        Err(e) => return Err(e.into()),
    };
    let after = ledger.state(None)?;
    let status = if a.dry_run { "would_apply" } else { "applied" };
    if out.json() {
        let mut v = json!({
            "workflow_id": a.workflow_id,
            "dry_run": a.dry_run,
            "results": results_json(&after, &items, status),
            "seqs": appended.seqs,
            "replayed": appended.replayed,
        });
        if a.dry_run {
            v["proposal_id"] = json!(appended.head());
        }
        out.print_json(&v);
    } else {
        for r in results_json(&after, &items, status) {
            out.line(format!(
                "job {} ({}): {} {}{}",
                r["job_id"],
                r["job_name"].as_str().unwrap_or("?"),
                status.replace('_', " "),
                r["action"].as_str().unwrap_or(""),
                r["memory"]
                    .as_str()
                    .map(|m| format!(" with memory {m}"))
                    .unwrap_or_default()
                    + &r["runtime"]
                        .as_str()
                        .map(|m| format!(" with runtime {m}"))
                        .unwrap_or_default()
            ));
        }
        if a.dry_run {
            out.line(format!(
                "proposal {} recorded (nothing changed); apply it with: torc-ledger proposals apply {}",
                appended.head(),
                appended.head()
            ));
        } else {
            out.line(format!(
                "recorded as event {} ({} events); undo with: torc-ledger undo {}",
                appended.head(),
                appended.seqs.len(),
                appended.head()
            ));
            if items.iter().any(|i| i.action == Action::Retry) {
                out.line(format!("next: torc-ledger workflows run {}", a.workflow_id));
            }
        }
        if appended.replayed {
            out.note("(idempotency key seen before: nothing new was recorded)");
        }
    }
    Ok(exit::OK)
}

pub fn proposals(cli: &Cli, out: &Out, c: &ProposalsCmd) -> CliResult {
    match c {
        ProposalsCmd::List { workflow_id } => {
            let ledger = open_existing(cli)?;
            let s = read_state(cli, &ledger)?;
            if s.workflow(*workflow_id).is_none() {
                return Err(LedgerError::from(DecideError::UnknownWorkflow(*workflow_id)).into());
            }
            let items: Vec<Value> = s
                .proposals
                .values()
                .filter(|p| p.workflow_id == *workflow_id)
                .map(|p| {
                    let stale = p
                        .job_versions
                        .iter()
                        .any(|(j, v)| s.job(*j).map(|x| x.last_seq) != Some(*v));
                    let status = if p.applied_by.is_some() {
                        "applied"
                    } else if stale {
                        "stale"
                    } else {
                        "open"
                    };
                    json!({
                        "proposal_id": p.id,
                        "workflow_id": p.workflow_id,
                        "actor": p.actor,
                        "status": status,
                        "applied_by": p.applied_by,
                        "classifications": results_json(&s, &p.items, "would_apply"),
                    })
                })
                .collect();
            if out.json() {
                out.print_json(&json!({"items": items}));
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|p| {
                        let what = p["classifications"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| {
                                format!(
                                    "{} {} ({})",
                                    c["action"].as_str().unwrap_or(""),
                                    c["job_id"],
                                    c["reason"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                        vec![
                            p["proposal_id"].to_string(),
                            p["status"].as_str().unwrap_or("").into(),
                            p["actor"].as_str().unwrap_or("").into(),
                            clip(&what, 70),
                        ]
                    })
                    .collect();
                out.table(&["ID", "STATUS", "BY", "CLASSIFICATIONS"], &rows);
            }
            Ok(exit::OK)
        }
        ProposalsCmd::Apply {
            proposal_id,
            idempotency_key,
        } => {
            no_at(cli, "proposals apply")?;
            let ledger = open_existing(cli)?;
            let appended = ledger.execute(
                Command::ApplyProposal {
                    proposal_id: *proposal_id,
                },
                Ctx {
                    idempotency_key: idempotency_key.clone(),
                    ..Ctx::user()
                },
            )?;
            let s = ledger.state(None)?;
            let p = s.proposals.get(proposal_id).ok_or_else(|| {
                CliError::internal(format!("proposal {proposal_id} vanished after applying"))
            })?;
            if out.json() {
                out.print_json(&json!({
                    "proposal_id": proposal_id,
                    "workflow_id": p.workflow_id,
                    "dry_run": false,
                    "results": results_json(&s, &p.items, "applied"),
                    "seqs": appended.seqs,
                    "replayed": appended.replayed,
                }));
            } else {
                out.line(format!(
                    "applied proposal {proposal_id} as event {} ({} events); undo with: torc-ledger undo {}",
                    appended.head(),
                    appended.seqs.len(),
                    appended.head()
                ));
            }
            Ok(exit::OK)
        }
    }
}
