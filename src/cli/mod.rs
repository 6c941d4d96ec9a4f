//! The command line: parse, call the library, render. One file per command group.

mod classify;
mod demo;
mod eval;
mod fixtures;
mod jobs;
mod ledger_cmds;
mod mcp;
mod recover;
mod render;
mod run;
mod workflows;

use crate::ledger::{Ledger, LedgerError};
use clap::{Parser, Subcommand, ValueEnum};
use render::Out;
use std::path::PathBuf;

/// Exit codes. Each means one thing.
pub mod exit {
    /// Success; for `run`: every job completed.
    pub const OK: i32 = 0;
    /// Internal or I/O error.
    pub const INTERNAL: i32 = 1;
    /// Bad input: usage, invalid spec, unknown id, unreadable file.
    pub const BAD_INPUT: i32 = 2;
    /// `run`: nothing left to run and some jobs failed, were canceled or terminated.
    pub const JOBS_FAILED: i32 = 3;
    /// `run`: jobs are parked in pending_failed, awaiting classification.
    pub const AWAITING_CLASSIFICATION: i32 = 4;
    /// The ledger's rules refused the command (wrong status, stale proposal, undo blocked).
    pub const REFUSED: i32 = 5;
    /// Verification failed: broken hash chain, tampered import.
    pub const VERIFY_FAILED: i32 = 6;
    /// `run` stopped by Ctrl-C; run again to resume.
    pub const INTERRUPTED: i32 = 130;
}

const AFTER_HELP: &str = "\
Exit codes:
  0    success (run: every job completed)
  1    internal or I/O error
  2    bad input: usage, invalid spec, unknown id
  3    run: finished with failed, canceled or terminated jobs
  4    run: jobs parked in pending_failed await classification
  5    refused by the ledger's rules (wrong status, stale proposal, undo blocked)
  6    verification failed (broken hash chain, tampered import)
  130  run interrupted by Ctrl-C (run again to resume)

Start with `torc-ledger demo`, or `torc-ledger run workflow.yaml`.";

#[derive(Parser, Debug)]
#[command(
    name = "torc-ledger",
    version,
    about = "Run Torc workflows on an event-sourced ledger: unexplained failures park in pending_failed, \
             people and agents classify them, and every decision can be replayed, audited and undone.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Ledger directory (the sled event log lives here).
    #[arg(
        long,
        env = "TORC_LEDGER_DIR",
        default_value = "torc_ledger",
        global = true
    )]
    pub ledger: PathBuf,
    /// Where job logs go (`<dir>/job_stdio/job_wf{W}_j{J}_r{R}_a{A}.o|.e`).
    #[arg(short = 'o', long, default_value = "torc_output", global = true)]
    pub output_dir: PathBuf,
    /// Output format: `table` for people, `json` for scripts (Torc's shapes).
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Read commands: answer as of event SEQ (time travel; state is a fold of the log).
    #[arg(long, value_name = "SEQ", global = true)]
    pub at: Option<u64>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a workflow from a spec, initialize it and run it (Torc's `torc run SPEC`).
    Run(run::RunArgs),
    /// Create, inspect, initialize, reset and run workflows.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCmd),
    /// A workflow's job counts by status (Torc's `torc status`).
    Status(workflows::StatusArgs),
    /// List and inspect jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
    /// Classify pending_failed jobs: retry (optionally with more memory/time) or fail.
    Classify(classify::ClassifyArgs),
    /// Review and apply dry-run proposals.
    #[command(subcommand)]
    Proposals(classify::ProposalsCmd),
    /// The timeline: who did what and why, newest first.
    Log(ledger_cmds::LogArgs),
    /// One event in full, with the events it caused.
    Show(ledger_cmds::ShowArgs),
    /// Fold the log from the start: event count, state digest, hash-chain check.
    Replay(ledger_cmds::ReplayArgs),
    /// Reverse a decision (or a reset) by appending compensating events. Undo an undo to redo.
    Undo(ledger_cmds::UndoArgs),
    /// Write the whole log as JSON Lines on stdout, one event a line with its hashes.
    Export,
    /// Load an exported log into an empty ledger, verifying every hash first.
    Import(ledger_cmds::ImportArgs),
    /// One recovery pass: decide failed and parked jobs (precedent, rules, optionally an AI
    /// agent over MCP), fix OOM/timeouts with per-job overrides, and run what was put back.
    Recover(recover::RecoverArgs),
    /// Keep a workflow running and recovering until it is complete or nothing more can be done.
    Watch(recover::WatchArgs),
    /// How each decider's decisions turned out: retries that succeeded or failed again.
    Stats(recover::StatsArgs),
    /// Serve the ledger to AI agents over MCP (stdio, or streamable HTTP with --http).
    Mcp(mcp::McpArgs),
    /// Run the bundled demo: a workflow with a flaky job and a permanent failure, classified,
    /// undone, rerun and replayed, each step shown as the command that does it.
    Demo(demo::DemoArgs),
    /// Score a classifier (rules, precedent, an agent command, an OpenAI-compatible endpoint)
    /// or a prompt on labeled failures, offline; `eval history` and `eval compare A B` read the
    /// recorded runs.
    Eval(eval::EvalArgs),
    /// Labeled failures: export the ledger's decided failures with known outcomes, check files.
    #[command(subcommand)]
    Fixtures(fixtures::FixturesCmd),
}

/// A user-facing error: what went wrong, what to do next, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    /// Extra JSON for `-f json` (e.g. per-item results).
    pub detail: Option<serde_json::Value>,
}

impl CliError {
    pub fn bad_input(msg: impl Into<String>) -> CliError {
        CliError {
            code: exit::BAD_INPUT,
            message: msg.into(),
            detail: None,
        }
    }
    pub fn internal(msg: impl Into<String>) -> CliError {
        CliError {
            code: exit::INTERNAL,
            message: msg.into(),
            detail: None,
        }
    }
}

impl From<LedgerError> for CliError {
    fn from(e: LedgerError) -> Self {
        let code = match &e {
            LedgerError::Decide(d) if d.is_not_found() => exit::BAD_INPUT,
            LedgerError::Decide(_) => exit::REFUSED,
            LedgerError::Invalid(_) => exit::BAD_INPUT,
            LedgerError::Verify { .. } => exit::VERIFY_FAILED,
            LedgerError::Busy(_) => exit::REFUSED,
            LedgerError::Store(_) | LedgerError::Remote(_) => exit::INTERNAL,
        };
        CliError {
            code,
            message: e.to_string(),
            detail: None,
        }
    }
}

pub type CliResult = Result<i32, CliError>;

/// Parse the arguments, run the command, print, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    exit::BAD_INPUT
                } else {
                    exit::OK
                };
            }
            // With -f json, a usage error is JSON on stdout too (scripts parse stdout).
            let args: Vec<String> = std::env::args().collect();
            let json = args
                .windows(2)
                .any(|w| (w[0] == "-f" || w[0] == "--format") && w[1] == "json")
                || args.iter().any(|a| a == "--format=json" || a == "-fjson");
            if json {
                let msg = e.to_string();
                let first = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                println!(
                    "{}",
                    serde_json::json!({"error": {"message": first, "exit_code": exit::BAD_INPUT}})
                );
            }
            let _ = e.print();
            return exit::BAD_INPUT;
        }
    };
    let out = Out::new(cli.format);
    let result = dispatch(&cli, &out);
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.code
        }
    }
}

fn dispatch(cli: &Cli, out: &Out) -> CliResult {
    match &cli.command {
        Cmd::Run(a) => run::run_spec(cli, out, a),
        Cmd::Workflows(c) => workflows::dispatch(cli, out, c),
        Cmd::Status(a) => workflows::status(cli, out, a),
        Cmd::Jobs(c) => jobs::dispatch(cli, out, c),
        Cmd::Classify(a) => classify::classify(cli, out, a),
        Cmd::Proposals(c) => classify::proposals(cli, out, c),
        Cmd::Log(a) => ledger_cmds::log(cli, out, a),
        Cmd::Show(a) => ledger_cmds::show(cli, out, a),
        Cmd::Replay(a) => ledger_cmds::replay(cli, out, a),
        Cmd::Undo(a) => ledger_cmds::undo(cli, out, a),
        Cmd::Export => ledger_cmds::export(cli, out),
        Cmd::Import(a) => ledger_cmds::import(cli, out, a),
        Cmd::Demo(a) => demo::demo(cli, a),
        Cmd::Eval(a) => eval::eval(cli, out, a),
        Cmd::Fixtures(c) => fixtures::dispatch(cli, out, c),
        Cmd::Mcp(a) => mcp::mcp(cli, out, a),
        Cmd::Recover(a) => recover::recover(cli, out, a),
        Cmd::Watch(a) => recover::watch(cli, out, a),
        Cmd::Stats(a) => recover::stats(cli, out, a),
    }
}

/// Open the ledger for a short command (directly, or through the owner process).
pub(crate) fn open(cli: &Cli) -> Result<Ledger, CliError> {
    Ok(Ledger::open(&cli.ledger)?)
}

/// Open for a read: the ledger must exist already (a read never creates one).
pub(crate) fn open_existing(cli: &Cli) -> Result<Ledger, CliError> {
    if !cli.ledger.join("db").exists() {
        return Err(CliError::bad_input(format!(
            "no ledger at {}; create one with `torc-ledger run SPEC` or `torc-ledger workflows create SPEC`, or point --ledger (TORC_LEDGER_DIR) at an existing one",
            cli.ledger.display()
        )));
    }
    open(cli)
}

/// The state a read command answers from: now, or `--at SEQ`.
pub(crate) fn read_state(cli: &Cli, ledger: &Ledger) -> Result<crate::state::State, CliError> {
    if let Some(at) = cli.at {
        let last = ledger.last_seq()?;
        if at > last {
            return Err(CliError::bad_input(format!(
                "--at {at} is past the last event ({last}); see `torc-ledger log`"
            )));
        }
    }
    Ok(ledger.state(cli.at)?)
}

/// Refuse `--at` on commands that write.
pub(crate) fn no_at(cli: &Cli, what: &str) -> Result<(), CliError> {
    if cli.at.is_some() {
        return Err(CliError::bad_input(format!(
            "--at reads the past; `{what}` writes now, so it does not take --at"
        )));
    }
    Ok(())
}

pub(crate) fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
