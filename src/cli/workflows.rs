//! `workflows ...` and `status`, with Torc's names and meanings.

use super::render::Out;
use super::run::{counts_line, create, load_spec, run_and_report, status_json};
use super::{exit, no_at, open, open_existing, read_state, Cli, CliResult};
use crate::decide::Command;
use crate::event::InitKind;
use crate::ledger::{Ctx, Ledger};
use crate::model::WorkflowId;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum WorkflowsCmd {
    /// Validate a spec and record the workflow (its jobs start uninitialized).
    Create {
        /// Workflow spec, YAML or JSON in Torc 1.0.0's format.
        spec: PathBuf,
    },
    /// All workflows in the ledger.
    List,
    /// One workflow: spec summary, run, counts.
    Get { workflow_id: WorkflowId },
    /// Initialize: jobs become ready (no dependencies) or blocked. Starts run 1.
    #[command(alias = "initialize")]
    Init { workflow_id: WorkflowId },
    /// Start a new run: uninitialized and blocked jobs are evaluated again (after reset-status).
    #[command(alias = "reinitialize")]
    Reinit { workflow_id: WorkflowId },
    /// Put jobs back to uninitialized: all of them, or with --failed-only the failed, canceled,
    /// terminated and pending_failed ones. Undo with `torc-ledger undo SEQ`.
    ResetStatus {
        workflow_id: WorkflowId,
        /// Only failed, canceled, terminated and pending_failed jobs.
        #[arg(long)]
        failed_only: bool,
        /// Start a new run right after (like `reinit`).
        #[arg(long)]
        reinitialize: bool,
    },
    /// Run a workflow's ready jobs until nothing can progress (initializes it if needed;
    /// resumes after Ctrl-C).
    Run {
        workflow_id: WorkflowId,
        /// Run at most N jobs at once (default: the number of CPUs).
        #[arg(long, short = 'j', value_name = "N")]
        max_parallel: Option<usize>,
    },
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub workflow_id: WorkflowId,
}

pub fn dispatch(cli: &Cli, out: &Out, c: &WorkflowsCmd) -> CliResult {
    match c {
        WorkflowsCmd::Create { spec } => {
            no_at(cli, "workflows create")?;
            let parsed = load_spec(out, spec)?;
            let jobs = parsed.def.jobs.len();
            let name = parsed.def.name.clone();
            let warnings = parsed.warnings.clone();
            let ledger = open(cli)?;
            let (wf, seqs) = create(&ledger, parsed)?;
            if out.json() {
                out.print_json(&json!({"id": wf, "workflow_id": wf, "name": name, "total_jobs": jobs, "warnings": warnings, "seqs": seqs}));
            } else {
                out.line(format!(
                    "created workflow {wf} \"{name}\" with {jobs} jobs (event {}); next: torc-ledger workflows run {wf}",
                    seqs[0]
                ));
            }
            Ok(exit::OK)
        }
        WorkflowsCmd::List => {
            let ledger = open_existing(cli)?;
            let s = read_state(cli, &ledger)?;
            let items: Vec<_> = s
                .workflows
                .iter()
                .map(|w| {
                    json!({
                        "id": w.id,
                        "name": w.def.name,
                        "description": w.def.description,
                        "run_id": w.run_id,
                        "total_jobs": w.def.jobs.len(),
                        "use_pending_failed": w.def.use_pending_failed,
                        "is_complete": s.is_complete(w),
                        "spec_digest": w.spec_digest,
                        "created_seq": w.created_seq,
                    })
                })
                .collect();
            if out.json() {
                out.print_json(&json!({"items": items}));
            } else {
                let rows: Vec<Vec<String>> = s
                    .workflows
                    .iter()
                    .map(|w| {
                        vec![
                            w.id.to_string(),
                            w.def.name.clone(),
                            w.run_id.to_string(),
                            w.def.jobs.len().to_string(),
                            counts_line(&s.counts_by_status(w)),
                        ]
                    })
                    .collect();
                out.table(&["ID", "NAME", "RUN", "JOBS", "STATUS"], &rows);
            }
            Ok(exit::OK)
        }
        WorkflowsCmd::Get { workflow_id } => {
            let ledger = open_existing(cli)?;
            let s = read_state(cli, &ledger)?;
            let mut v = status_json(&s, *workflow_id, cli.at)?;
            let w = s.workflow(*workflow_id).expect("checked by status_json");
            v["id"] = json!(w.id);
            v["name"] = json!(w.def.name);
            v["description"] = json!(w.def.description);
            v["use_pending_failed"] = json!(w.def.use_pending_failed);
            v["submit_dir"] = json!(w.def.submit_dir);
            v["spec_digest"] = json!(w.spec_digest);
            v["env"] = json!(w.def.env);
            v["resource_requirements"] = json!(w.def.resource_requirements);
            v["failure_handlers"] = json!(w.def.failure_handlers);
            if out.json() {
                out.print_json(&v);
            } else {
                out.line(format!("workflow {} \"{}\"", w.id, w.def.name));
                if let Some(d) = &w.def.description {
                    out.line(format!("  {d}"));
                }
                out.line(format!(
                    "  run {}, {} jobs, use_pending_failed: {}",
                    w.run_id,
                    w.def.jobs.len(),
                    w.def.use_pending_failed
                ));
                out.line(format!("  submitted from {}", w.def.submit_dir));
                out.line(format!("  status: {}", counts_line(&s.counts_by_status(w))));
                out.line(format!("  spec digest {}", w.spec_digest));
            }
            Ok(exit::OK)
        }
        WorkflowsCmd::Init { workflow_id } => init(cli, out, *workflow_id, InitKind::Init),
        WorkflowsCmd::Reinit { workflow_id } => init(cli, out, *workflow_id, InitKind::Reinit),
        WorkflowsCmd::ResetStatus {
            workflow_id,
            failed_only,
            reinitialize,
        } => {
            no_at(cli, "workflows reset-status")?;
            let ledger = open_existing(cli)?;
            let a = ledger.execute(
                Command::ResetStatus {
                    workflow_id: *workflow_id,
                    failed_only: *failed_only,
                },
                Ctx::user(),
            )?;
            let mut seqs = a.seqs.clone();
            if *reinitialize {
                let b = ledger.execute(
                    Command::Initialize {
                        workflow_id: *workflow_id,
                        kind: InitKind::Reinit,
                    },
                    Ctx::user(),
                )?;
                seqs.extend(b.seqs);
            }
            report_write(
                out,
                &ledger,
                *workflow_id,
                &seqs,
                &format!(
                    "reset {} job(s) to uninitialized (event {}; undo with `torc-ledger undo {}`)",
                    a.seqs.len() - 1,
                    a.head(),
                    a.head()
                ),
            )
        }
        WorkflowsCmd::Run {
            workflow_id,
            max_parallel,
        } => {
            no_at(cli, "workflows run")?;
            let ledger = Ledger::open_owner(&cli.ledger)?;
            // Fail early with a clear message for an unknown workflow.
            ledger.runner_view(*workflow_id)?;
            run_and_report(cli, out, &ledger, *workflow_id, *max_parallel)
        }
    }
}

fn init(cli: &Cli, out: &Out, wf: WorkflowId, kind: InitKind) -> CliResult {
    no_at(cli, "workflows init")?;
    let ledger = open_existing(cli)?;
    let a = ledger.execute(
        Command::Initialize {
            workflow_id: wf,
            kind,
        },
        Ctx::user(),
    )?;
    let s = ledger.state(None)?;
    let run = s.workflow(wf).map(|w| w.run_id).unwrap_or(0);
    report_write(
        out,
        &ledger,
        wf,
        &a.seqs,
        &format!("workflow {wf}: run {run} initialized; next: torc-ledger workflows run {wf}"),
    )
}

fn report_write(out: &Out, ledger: &Ledger, wf: WorkflowId, seqs: &[u64], msg: &str) -> CliResult {
    let s = ledger.state(None)?;
    if out.json() {
        let mut v = status_json(&s, wf, None)?;
        v["seqs"] = json!(seqs);
        out.print_json(&v);
    } else {
        out.line(msg);
        if let Some(w) = s.workflow(wf) {
            out.line(format!("  {}", counts_line(&s.counts_by_status(w))));
        }
    }
    Ok(exit::OK)
}

pub fn status(cli: &Cli, out: &Out, a: &StatusArgs) -> CliResult {
    let ledger = open_existing(cli)?;
    let s = read_state(cli, &ledger)?;
    let v = status_json(&s, a.workflow_id, cli.at)?;
    if out.json() {
        out.print_json(&v);
    } else {
        let w = s.workflow(a.workflow_id).expect("checked");
        let at = cli
            .at
            .map(|at| format!(" (as of event {at})"))
            .unwrap_or_default();
        out.line(format!(
            "workflow {} \"{}\", run {}{at}: {} jobs, {}",
            w.id,
            w.def.name,
            w.run_id,
            w.def.jobs.len(),
            if s.is_complete(w) {
                "complete"
            } else {
                "not complete"
            }
        ));
        let rows: Vec<Vec<String>> = s
            .counts_by_status(w)
            .iter()
            .map(|(st, c)| vec![st.to_string(), c.to_string()])
            .collect();
        out.table(&["STATUS", "COUNT"], &rows);
    }
    Ok(exit::OK)
}
