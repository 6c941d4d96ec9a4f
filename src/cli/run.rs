//! `run SPEC` and the run-and-report step that `workflows run` shares.

use super::render::Out;
use super::{absolute, exit, no_at, Cli, CliError, CliResult};
use crate::decide::Command;
use crate::ledger::{remote, Ctx, Ledger};
use crate::model::{JobStatus, WorkflowId};
use crate::runner::{self, RunOptions, StopReason};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workflow spec, YAML or JSON in Torc 1.0.0's format.
    pub spec: PathBuf,
    /// Run at most N jobs at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub max_parallel: Option<usize>,
}

/// Parse and validate a spec file; warnings go to stderr.
pub fn load_spec(out: &Out, path: &std::path::Path) -> Result<crate::spec::ParsedSpec, CliError> {
    let submit_dir = std::env::current_dir()
        .map_err(|e| CliError::internal(format!("cannot read the current directory: {e}")))?;
    let parsed = crate::spec::parse_spec_file(path, &submit_dir.display().to_string())
        .map_err(|e| CliError::bad_input(format!("{}: {e}", path.display())))?;
    for w in &parsed.warnings {
        out.note(format!("warning: {w}"));
    }
    Ok(parsed)
}

pub fn create(
    ledger: &Ledger,
    parsed: crate::spec::ParsedSpec,
) -> Result<(WorkflowId, Vec<u64>), CliError> {
    let appended = ledger.execute(
        Command::CreateWorkflow {
            def: parsed.def,
            spec_digest: parsed.digest,
        },
        Ctx::user(),
    )?;
    // The id is assigned by the ledger; read it back from the event we appended.
    let ev = ledger.events(appended.head(), Some(appended.head()), 1)?;
    let id = match ev.first().map(|e| &e.body) {
        Some(crate::event::Body::WorkflowCreated { workflow_id, .. }) => *workflow_id,
        other => {
            return Err(CliError::internal(format!(
                "event {} should record the new workflow but is {:?}",
                appended.head(),
                other.map(|b| b.kind())
            )))
        }
    };
    Ok((id, appended.seqs))
}

pub fn run_spec(cli: &Cli, out: &Out, a: &RunArgs) -> CliResult {
    no_at(cli, "run")?;
    let parsed = load_spec(out, &a.spec)?;
    let ledger = Ledger::open_owner(&cli.ledger)?;
    let (wf, _) = create(&ledger, parsed)?;
    if !out.json() {
        out.note(format!(
            "created workflow {wf} from {}; ledger {}",
            a.spec.display(),
            cli.ledger.display()
        ));
    }
    run_and_report(cli, out, &ledger, wf, a.max_parallel)
}

/// Run a workflow until nothing can progress and say why it stopped.
pub fn run_and_report(
    cli: &Cli,
    out: &Out,
    ledger: &Ledger,
    wf: WorkflowId,
    max_parallel: Option<usize>,
) -> CliResult {
    let mut opts = RunOptions::new(absolute(&cli.output_dir));
    if let Some(n) = max_parallel {
        if n == 0 {
            return Err(CliError::bad_input("--max-parallel must be at least 1"));
        }
        opts.max_parallel = n;
    }
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, opts.stop.clone());
    }
    let before = ledger.runner_view(wf)?.last_seq;
    let result = runner::run_workflow(ledger, wf, &opts);
    if ledger.is_owner() {
        remote::cleanup(&ledger.dir());
    }
    let report = result?;
    let state = ledger.state(None)?;
    let n = |s: JobStatus| report.counts.get(&s).copied().unwrap_or(0);
    let (code, message, next): (i32, String, Option<String>) = match report.reason {
        StopReason::Complete => (exit::OK, "complete: every job completed".into(), None),
        StopReason::Failed => (
            exit::JOBS_FAILED,
            format!(
                "finished: {} failed, {} canceled, {} terminated",
                n(JobStatus::Failed),
                n(JobStatus::Canceled),
                n(JobStatus::Terminated)
            ),
            Some(format!(
                "torc-ledger jobs list {wf} --status failed   # then: torc-ledger workflows reset-status {wf} --failed-only && torc-ledger workflows run {wf}"
            )),
        ),
        StopReason::AwaitingClassification => {
            let parked: Vec<String> = state
                .workflow(wf)
                .map(|w| {
                    state
                        .jobs_of(w)
                        .iter()
                        .filter(|j| j.status == JobStatus::PendingFailed)
                        .map(|j| j.id.to_string())
                        .collect()
                })
                .unwrap_or_default();
            (
                exit::AWAITING_CLASSIFICATION,
                format!(
                    "stopped: {} job(s) awaiting classification in pending_failed (job {})",
                    parked.len(),
                    parked.join(", ")
                ),
                Some(format!(
                    "torc-ledger classify {wf} --job {} --action retry|fail --reason \"...\"   (see why: torc-ledger jobs list {wf} --status pending_failed)",
                    parked.first().cloned().unwrap_or_default()
                )),
            )
        }
        StopReason::Interrupted => (
            exit::INTERRUPTED,
            "interrupted: running jobs were stopped and recorded".into(),
            Some(format!("torc-ledger workflows run {wf}   # resumes")),
        ),
        StopReason::Stalled => (
            exit::JOBS_FAILED,
            "stalled: jobs remain that nothing will make ready".into(),
            Some(format!("torc-ledger jobs list {wf}")),
        ),
    };
    if out.json() {
        let mut v = status_json(&state, wf, None)?;
        v["stopped"] = json!({
            "reason": report.reason,
            "message": message,
            "next": next,
        });
        v["jobs_run"] = json!(report.jobs_run);
        v["events_appended"] = events_appended(before, state.last_seq);
        out.print_json(&v);
    } else {
        out.line(format!(
            "workflow {wf} ({}), run {}: {} job(s) run",
            report.workflow_name, report.run_id, report.jobs_run
        ));
        out.line(format!("  {}", counts_line(&report.counts)));
        out.line(message);
        if let Some(next) = next {
            out.line(format!("next: {next}"));
        }
    }
    if opts.stop.load(Ordering::Relaxed) && code != exit::INTERRUPTED {
        return Ok(exit::INTERRUPTED);
    }
    Ok(code)
}

/// The range of seqs a long write appended (all events from `before + 1` to `last`).
pub fn events_appended(before: u64, last: u64) -> Value {
    if last > before {
        json!({"from": before + 1, "to": last})
    } else {
        Value::Null
    }
}

pub fn counts_line(counts: &std::collections::BTreeMap<JobStatus, usize>) -> String {
    counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(s, c)| format!("{s} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Torc's `status` JSON shape, plus the run id and the seq it is as of.
pub fn status_json(
    state: &crate::state::State,
    wf: WorkflowId,
    at: Option<u64>,
) -> Result<Value, CliError> {
    let mut v = crate::views::status(state, wf).ok_or_else(|| {
        CliError::from(crate::ledger::LedgerError::from(
            crate::decide::DecideError::UnknownWorkflow(wf),
        ))
    })?;
    if let Some(at) = at {
        v["as_of_seq"] = json!(at);
    }
    Ok(v)
}
