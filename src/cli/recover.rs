//! `recover`, `watch` and `stats`: the recovery loop and how its decisions turned out.

use super::render::Out;
use super::run::{counts_line, status_json};
use super::{absolute, exit, no_at, open_existing, read_state, Cli, CliError, CliResult};
use crate::ledger::{remote, Ledger, LedgerError};
use crate::model::{JobStatus, WorkflowId};
use crate::recovery::agent::AgentKind;
use crate::recovery::{recover_pass, PassReport, RecoverOptions, StageMode};
use crate::runner::{self, RunOptions, StopReason};
use clap::Args;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct RecoverArgs {
    pub workflow_id: WorkflowId,
    /// Memory fix for an out-of-memory job: its limit (or measured peak) times this, for that job only.
    #[arg(long, default_value_t = 1.5)]
    pub memory_multiplier: f64,
    /// Runtime fix for a job killed at its limit: the limit times this, for that job only.
    #[arg(long, default_value_t = 1.5)]
    pub runtime_multiplier: f64,
    /// Also retry failed jobs whose failure no resource cause explains (unless rules say permanent).
    #[arg(long)]
    pub retry_unknown: bool,
    /// Run this before retrying unknown failures (gets the workflow id as last argument;
    /// non-zero exit aborts). Implies --retry-unknown.
    #[arg(long, value_name = "CMD")]
    pub recovery_hook: Option<String>,
    /// Show what would be decided and requeued; record nothing, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide only; do not run the jobs put back to ready.
    #[arg(long)]
    pub no_run: bool,
    /// Run at most N jobs at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Invoke an AI agent (over MCP) for the parked jobs that precedent and rules leave.
    #[arg(long)]
    pub ai_recovery: bool,
    /// claude (Claude Code), copilot (GitHub Copilot CLI), or any command (given the prompt on
    /// stdin and the MCP config path in TORC_LEDGER_MCP_CONFIG).
    #[arg(long, default_value = "claude", value_name = "AGENT")]
    pub ai_agent: String,
    /// The agent only proposes (dry runs); a person applies with `torc-ledger proposals apply`.
    #[arg(long)]
    pub ai_propose_only: bool,
    /// Stop an agent run after this long (ISO-8601 or seconds).
    #[arg(long, default_value = "PT10M")]
    pub ai_timeout: String,
    /// At most this many agent runs may concern the same job.
    #[arg(long, default_value_t = 2)]
    pub ai_max_runs_per_job: u32,
    /// Rules only propose (a person applies).
    #[arg(long)]
    pub rules_propose_only: bool,
    /// Precedent only proposes (a person applies).
    #[arg(long)]
    pub precedent_propose_only: bool,
    /// A job whose retries already failed again this many times is left to the agent or a person.
    #[arg(long, default_value_t = 2)]
    pub max_failed_retries: u32,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub recover: RecoverArgs,
    /// Stop after this many recovery passes (default: until nothing more can be done).
    #[arg(long, short = 'm')]
    pub max_retries: Option<u32>,
    /// Seconds between checks while another process runs the workflow's jobs.
    #[arg(long, short = 'p', default_value_t = 5)]
    pub poll_interval: u64,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only decisions about this workflow.
    pub workflow_id: Option<WorkflowId>,
}

fn options(cli: &Cli, a: &RecoverArgs) -> Result<RecoverOptions, CliError> {
    for (name, m) in [
        ("--memory-multiplier", a.memory_multiplier),
        ("--runtime-multiplier", a.runtime_multiplier),
    ] {
        if !(m.is_finite() && (1.0..=100.0).contains(&m)) {
            return Err(CliError::bad_input(format!(
                "{name} {m} must be between 1 and 100"
            )));
        }
    }
    let timeout = match a.ai_timeout.parse::<u64>() {
        Ok(s) => s,
        Err(_) => crate::model::parse_duration(&a.ai_timeout)
            .map_err(|e| CliError::bad_input(format!("--ai-timeout: {e}")))?,
    };
    Ok(RecoverOptions {
        memory_multiplier: a.memory_multiplier,
        runtime_multiplier: a.runtime_multiplier,
        retry_unknown: a.retry_unknown,
        recovery_hook: a.recovery_hook.clone(),
        dry_run: a.dry_run,
        precedent: if a.precedent_propose_only {
            StageMode::Propose
        } else {
            StageMode::Apply
        },
        rules: if a.rules_propose_only {
            StageMode::Propose
        } else {
            StageMode::Apply
        },
        agent: a.ai_recovery.then(|| AgentKind::parse(&a.ai_agent)),
        agent_mode: if a.ai_propose_only {
            StageMode::Propose
        } else {
            StageMode::Apply
        },
        agent_timeout: Duration::from_secs(timeout.max(1)),
        max_agent_runs_per_job: a.ai_max_runs_per_job.max(1),
        max_failed_retries: a.max_failed_retries.max(1),
        output_dir: absolute(&cli.output_dir),
        ..RecoverOptions::default()
    })
}

fn print_pass(out: &Out, n: u32, r: &PassReport) {
    if out.json() {
        return;
    }
    out.line(format!("recovery pass {n} on workflow {}:", r.workflow_id));
    if r.decisions.is_empty() {
        out.line("  no decisions");
    }
    for d in &r.decisions {
        let mut extra = String::new();
        if let Some(m) = &d.memory {
            extra.push_str(&format!(" memory={m}"));
        }
        if let Some(t) = &d.runtime {
            extra.push_str(&format!(" runtime={t}"));
        }
        out.line(format!(
            "  job {} ({}): {} {}{} by {} [{}{}] — {}",
            d.job_id,
            d.job_name,
            d.status.replace('_', " "),
            d.action,
            extra,
            d.stage,
            d.seq
                .map(|s| format!("event {s}"))
                .unwrap_or_else(|| "not recorded".into()),
            "",
            super::render::clip(&d.reason, 100)
        ));
    }
    for (j, why) in &r.left_alone {
        out.line(format!("  job {j}: left alone: {why}"));
    }
    for a in &r.agent_runs {
        out.line(format!(
            "  agent {} ran {:.1}s (exit {}{}): resolved {} job(s), {} unresolved",
            a.agent,
            a.duration_ms as f64 / 1000.0,
            a.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
            if a.timed_out { ", timed out" } else { "" },
            a.resolved.len(),
            a.unresolved.len()
        ));
    }
    if let Some(e) = &r.agent_error {
        out.line(format!("  agent not run: {e}"));
    }
    if !r.still_parked.is_empty() {
        out.line(format!(
            "  still parked (awaiting classification): job {}",
            r.still_parked
                .iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

struct Session {
    ledger: Ledger,
    run_opts: RunOptions,
}

impl Session {
    fn open(cli: &Cli, max_parallel: Option<usize>) -> Result<Session, CliError> {
        if !cli.ledger.join("db").exists() {
            return Err(CliError::bad_input(format!(
                "no ledger at {}; run a workflow first (`torc-ledger run SPEC`)",
                cli.ledger.display()
            )));
        }
        let ledger = Ledger::open_owner(&cli.ledger)?;
        let mut run_opts = RunOptions::new(absolute(&cli.output_dir));
        if let Some(n) = max_parallel {
            run_opts.max_parallel = n.max(1);
        }
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, run_opts.stop.clone());
        }
        Ok(Session { ledger, run_opts })
    }

    /// Run ready jobs; `None` when another process is running this workflow.
    fn run(&self, wf: WorkflowId) -> Result<Option<runner::RunReport>, CliError> {
        match runner::run_workflow(&self.ledger, wf, &self.run_opts) {
            Ok(r) => Ok(Some(r)),
            Err(LedgerError::Busy(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn close(&self) {
        if self.ledger.is_owner() {
            remote::cleanup(&self.ledger.dir());
        }
    }
}

fn finish(
    out: &Out,
    ledger: &Ledger,
    wf: WorkflowId,
    passes: &[PassReport],
    stopped: &str,
    before: u64,
    ran: bool,
) -> CliResult {
    let s = ledger.state(None)?;
    let w = s
        .workflow(wf)
        .ok_or_else(|| CliError::bad_input(format!("unknown workflow {wf}")))?;
    let counts = s.counts_by_status(w);
    let reason = runner::reason_of(&counts);
    let code = match reason {
        StopReason::Complete => exit::OK,
        StopReason::AwaitingClassification => exit::AWAITING_CLASSIFICATION,
        // Without running, jobs left ready are the expected result, not a stall.
        StopReason::Stalled if !ran => exit::OK,
        _ => exit::JOBS_FAILED,
    };
    if out.json() {
        let mut v = status_json(&s, wf, None)?;
        v["passes"] = json!(passes);
        v["events_appended"] = super::run::events_appended(before, s.last_seq);
        v["stopped"] = json!({"reason": reason, "message": stopped});
        out.print_json(&v);
    } else {
        out.line(format!("workflow {wf}: {}", counts_line(&counts)));
        out.line(stopped);
        let parked = counts.get(&JobStatus::PendingFailed).copied().unwrap_or(0);
        if parked > 0 {
            out.line(format!(
                "next: torc-ledger jobs list {wf} --status pending_failed, then torc-ledger classify {wf} --job ID --action retry|fail --reason \"...\" (or --ai-recovery)"
            ));
        }
    }
    Ok(code)
}

pub fn recover(cli: &Cli, out: &Out, a: &RecoverArgs) -> CliResult {
    no_at(cli, "recover")?;
    let mut opts = options(cli, a)?;
    let session = Session::open(cli, a.max_parallel)?;
    opts.stop = session.run_opts.stop.clone();
    let result = (|| {
        let before = session.ledger.runner_view(a.workflow_id)?.last_seq;
        let mut runs = HashMap::new();
        let report = recover_pass(&session.ledger, a.workflow_id, &opts, &mut runs)?;
        print_pass(out, 1, &report);
        if session.run_opts.stop.load(Ordering::Relaxed) {
            finish(
                out,
                &session.ledger,
                a.workflow_id,
                &[report],
                "interrupted",
                before,
                false,
            )?;
            return Ok(exit::INTERRUPTED);
        }
        let retried = report
            .decisions
            .iter()
            .any(|d| d.action == "retry" && d.status == "applied");
        if !a.dry_run && !a.no_run && retried {
            session.run(a.workflow_id)?;
        }
        let msg = if a.dry_run {
            "dry run: nothing was recorded or run".to_string()
        } else if !report.changed_anything() {
            "recovery changed nothing".to_string()
        } else if !retried {
            "decided; nothing was put back to run".to_string()
        } else if a.no_run {
            format!(
                "decided; run them with: torc-ledger workflows run {}",
                a.workflow_id
            )
        } else {
            "recovered and ran the jobs it put back".to_string()
        };
        let ran = !a.dry_run && !a.no_run && retried;
        let code = finish(
            out,
            &session.ledger,
            a.workflow_id,
            &[report],
            &msg,
            before,
            ran,
        )?;
        Ok(if session.run_opts.stop.load(Ordering::Relaxed) {
            exit::INTERRUPTED
        } else {
            code
        })
    })();
    session.close();
    result
}

pub fn watch(cli: &Cli, out: &Out, a: &WatchArgs) -> CliResult {
    no_at(cli, "watch")?;
    let mut opts = options(cli, &a.recover)?;
    let wf = a.recover.workflow_id;
    let session = Session::open(cli, a.recover.max_parallel)?;
    opts.stop = session.run_opts.stop.clone();
    let stopped_by_user = || session.run_opts.stop.load(Ordering::Relaxed);
    let result = (|| {
        let before = session.ledger.runner_view(wf)?.last_seq;
        let mut runs = HashMap::new();
        let mut passes = Vec::new();
        let mut n = 0u32;
        let stopped = loop {
            if session.run_opts.stop.load(Ordering::Relaxed) {
                break "interrupted".to_string();
            }
            match session.run(wf)? {
                Some(_) => {}
                None => {
                    // Another process runs the jobs: look again later.
                    std::thread::sleep(Duration::from_secs(a.poll_interval.max(1)));
                    let s = session.ledger.state(None)?;
                    let w = s.workflow(wf).expect("checked");
                    if s.jobs_of(w)
                        .iter()
                        .any(|j| matches!(j.status, JobStatus::Running | JobStatus::Ready))
                    {
                        continue;
                    }
                }
            }
            if stopped_by_user() {
                break "interrupted".to_string();
            }
            let s = session.ledger.state(None)?;
            let w = s.workflow(wf).expect("checked");
            if runner::reason_of(&s.counts_by_status(w)) == StopReason::Complete {
                break "complete: every job completed".to_string();
            }
            if let Some(max) = a.max_retries {
                if n >= max {
                    break format!("stopped after {max} recovery pass(es) (--max-retries)");
                }
            }
            n += 1;
            let report = recover_pass(&session.ledger, wf, &opts, &mut runs)?;
            print_pass(out, n, &report);
            let changed = report.changed_anything();
            let agent_stuck = report.agent_runs.iter().any(|r| r.resolved.is_empty());
            let agent_error = report.agent_error.clone();
            passes.push(report);
            if stopped_by_user() {
                break "interrupted".into();
            }
            if a.recover.dry_run {
                break "dry run: nothing was recorded or run".into();
            }
            if let Some(e) = agent_error {
                break format!("the agent could not run: {e}");
            }
            if agent_stuck && !changed {
                break "the agent resolved nothing; stopping (the jobs stay parked)".into();
            }
            if !changed {
                break "nothing more can be done automatically".into();
            }
            // Only proposals (from any stage): a person decides next, not another pass.
            if passes.last().is_some_and(|p| {
                !p.decisions.is_empty() && p.decisions.iter().all(|d| d.status == "proposed")
            }) {
                break "proposals recorded; a person applies them with `torc-ledger proposals apply ID`".into();
            }
        };
        let code = finish(
            out,
            &session.ledger,
            wf,
            &passes,
            &stopped,
            before,
            !a.recover.dry_run,
        )?;
        Ok(if stopped_by_user() {
            exit::INTERRUPTED
        } else {
            code
        })
    })();
    session.close();
    result
}

pub fn stats(cli: &Cli, out: &Out, a: &StatsArgs) -> CliResult {
    let ledger = open_existing(cli)?;
    let s = read_state(cli, &ledger)?;
    if let Some(wf) = a.workflow_id {
        if s.workflow(wf).is_none() {
            return Err(CliError::bad_input(format!(
                "unknown workflow {wf}; run `torc-ledger workflows list`"
            )));
        }
    }
    let rows = crate::views::stats(&s, a.workflow_id);
    if out.json() {
        out.print_json(&json!({"workflow_id": a.workflow_id, "deciders": rows}));
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        out.note("(no decisions yet)");
        return Ok(exit::OK);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["actor"].as_str().unwrap_or("").to_string(),
                r["decisions"].to_string(),
                r["retries"].to_string(),
                r["retries_succeeded"].to_string(),
                r["retries_failed_again"].to_string(),
                r["retries_not_run_yet"].to_string(),
                r["fails"].to_string(),
                r["fails_stayed_failed"].to_string(),
                r["undone"].to_string(),
            ]
        })
        .collect();
    out.table(
        &[
            "DECIDER",
            "DECISIONS",
            "RETRIES",
            "SUCCEEDED",
            "FAILED AGAIN",
            "NOT RUN",
            "FAILS",
            "STAYED FAILED",
            "UNDONE",
        ],
        &table,
    );
    Ok(exit::OK)
}
