//! `fixtures export` and `fixtures check`: the ledger's own history as labeled failures, and
//! fixture files checked line by line.

use super::render::Out;
use super::{exit, open_existing, read_state, Cli, CliError, CliResult};
use crate::classify::precedent::{outcomes, Outcome};
use crate::classify::Label;
use crate::decide::DecideError;
use crate::eval::fixtures::{self, Fixture};
use crate::ledger::LedgerError;
use crate::model::WorkflowId;
use crate::runner::logs;
use clap::Subcommand;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum FixturesCmd {
    /// Turn decided failures whose outcome is known into labeled fixtures (JSON Lines): a
    /// retry whose next attempt succeeded is `retry` (or `retry_with_resources` when it got
    /// more memory or time), a plain retry that failed the same way again is `fail`. Each case
    /// keeps the failed attempt's command, exit code, stderr tail (read from its log file),
    /// duration, peak memory and limits.
    #[command(after_help = "\
Examples:
  torc-ledger fixtures export > ours.jsonl
  torc-ledger fixtures export --workflow 3 --out fixtures/failures/team.jsonl
  torc-ledger eval --fixtures ours.jsonl --classifier rules")]
    Export {
        /// Only this workflow's decisions.
        #[arg(long, short = 'w')]
        workflow: Option<WorkflowId>,
        /// Write the fixtures to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Lines of stderr to keep per case.
        #[arg(long, default_value_t = 40)]
        tail_lines: usize,
    },
    /// Check fixture files against the format: every bad line with its file and line number.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn dispatch(cli: &Cli, out: &Out, c: &FixturesCmd) -> CliResult {
    match c {
        FixturesCmd::Export {
            workflow,
            out: file,
            tail_lines,
        } => export(cli, out, *workflow, file.as_deref(), *tail_lines),
        FixturesCmd::Check { files } => check(out, files),
    }
}

fn fixture_of(o: &Outcome, job_name: &str) -> Fixture {
    Fixture {
        id: o.case.id.clone(),
        category: "ledger".into(),
        action: o.label,
        adjust: if o.label == Label::RetryWithResources {
            o.adjust
        } else {
            None
        },
        difficulty: "medium".into(),
        command: o.case.command.clone(),
        return_code: o.case.return_code,
        stderr_tail: o.case.stderr_tail.clone(),
        rationale: o.rationale.clone(),
        source: format!(
            "torc-ledger: workflow {} job {} ({job_name}), decision {}",
            o.workflow_id, o.job_id, o.decision_seq
        ),
        exec_time_s: o.case.exec_time_s,
        runtime_limit_s: o.case.runtime_limit_s,
        peak_memory_bytes: o.case.peak_memory_bytes,
        memory_limit_bytes: o.case.memory_limit_bytes,
    }
}

fn export(
    cli: &Cli,
    out: &Out,
    workflow: Option<WorkflowId>,
    file: Option<&Path>,
    tail_lines: usize,
) -> CliResult {
    let ledger = open_existing(cli)?;
    let state = read_state(cli, &ledger)?;
    if let Some(w) = workflow {
        if state.workflow(w).is_none() {
            return Err(LedgerError::from(DecideError::UnknownWorkflow(w)).into());
        }
    }
    let read = |p: &str| logs::tail(Path::new(p), tail_lines.max(1), logs::TAIL_BYTES).ok();
    let (found, skipped) = outcomes(&state, workflow, &read);
    let fixtures: Vec<Fixture> = found
        .iter()
        .map(|o| {
            let name = crate::views::job_name(&state, o.job_id).unwrap_or_default();
            fixture_of(o, &name)
        })
        .collect();
    let count = |l: Label| fixtures.iter().filter(|f| f.action == l).count();
    let summary = format!(
        "exported {} fixture(s): {} retry, {} fail, {} retry_with_resources; {} decided failure(s) skipped",
        fixtures.len(),
        count(Label::Retry),
        count(Label::Fail),
        count(Label::RetryWithResources),
        skipped.len()
    );
    let lines: String = fixtures
        .iter()
        .map(|f| serde_json::to_string(f).expect("fixtures serialize") + "\n")
        .collect();
    if let Some(path) = file {
        std::fs::write(path, &lines)
            .map_err(|e| CliError::internal(format!("cannot write {}: {e}", path.display())))?;
    }
    if out.json() {
        out.print_json(&json!({
            "out": file.map(|p| p.display().to_string()),
            "count": fixtures.len(),
            "items": fixtures,
            "skipped": skipped.iter().map(|s| json!({
                "job_id": s.job_id, "decision_seq": s.decision_seq, "why": s.why,
            })).collect::<Vec<_>>(),
        }));
        return Ok(exit::OK);
    }
    if file.is_none() {
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(lines.as_bytes()).is_err() {
            return Ok(exit::OK); // reader went away
        }
    }
    out.note(summary);
    for s in skipped.iter().take(20) {
        out.note(format!(
            "  skipped job {} (decision {}): {}",
            s.job_id, s.decision_seq, s.why
        ));
    }
    if let Some(p) = file {
        out.note(format!(
            "wrote {}; score a classifier on it with: torc-ledger eval --fixtures {}",
            p.display(),
            p.display()
        ));
    }
    Ok(exit::OK)
}

fn check(out: &Out, files: &[PathBuf]) -> CliResult {
    let loaded = fixtures::load(files).map_err(CliError::bad_input)?;
    if out.json() {
        out.print_json(&json!({
            "files": loaded.files,
            "cases": loaded.fixtures.len(),
            "bad_lines": loaded.bad,
        }));
    } else {
        for b in &loaded.bad {
            out.line(b.to_string());
        }
        out.line(format!(
            "{} good case(s), {} bad line(s) in {}",
            loaded.fixtures.len(),
            loaded.bad.len(),
            loaded.files.join(", ")
        ));
    }
    Ok(if loaded.bad.is_empty() {
        exit::OK
    } else {
        exit::BAD_INPUT
    })
}
