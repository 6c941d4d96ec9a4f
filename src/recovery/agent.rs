//! Invoking an AI agent for real: Claude Code or GitHub Copilot CLI in non-interactive mode, or
//! any command, each given an MCP configuration that starts `torc-ledger mcp` on this ledger.
//! Bounded by a timeout; a missing binary is a clear error and nothing changes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The recovery prompt (a versioned file; recorded by digest with every decision it leads to).
pub const RECOVER_PROMPT: &str = include_str!("../../prompts/recover_v1.md");
pub const RECOVER_PROMPT_NAME: &str = "prompts/recover_v1.md";

/// The torc-ledger tools an agent is allowed to use (nothing else).
pub const TOOLS: [&str; 10] = [
    "list_pending_failed_jobs",
    "classify_and_resolve_failures",
    "apply_proposal",
    "get_workflow_status",
    "get_job_details",
    "get_job_logs",
    "list_jobs_by_status",
    "list_failed_jobs",
    "get_decision_history",
    "undo_decision",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    Claude,
    Copilot,
    /// Any command: the prompt on stdin, the MCP config path in `TORC_LEDGER_MCP_CONFIG`.
    Command(String),
}

impl AgentKind {
    pub fn parse(s: &str) -> AgentKind {
        match s.trim() {
            "claude" => AgentKind::Claude,
            "copilot" | "github-copilot" => AgentKind::Copilot,
            other => AgentKind::Command(other.to_string()),
        }
    }

    pub fn label(&self) -> String {
        match self {
            AgentKind::Claude => "claude".into(),
            AgentKind::Copilot => "copilot".into(),
            AgentKind::Command(c) => format!("command:{c}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentOutcome {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last lines of what it printed (for the report).
    pub stdout_tail: String,
    pub stderr_tail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{binary} was not found on PATH. Install it, or classify the parked jobs yourself: `torc-ledger jobs list {workflow_id} --status pending_failed`, then `torc-ledger classify {workflow_id} --job ID --action retry|fail --reason ...` (or give --ai-agent another command). The jobs stay parked.")]
    Missing { binary: String, workflow_id: u64 },
    #[error("cannot start the agent {agent}: {err}")]
    Spawn { agent: String, err: String },
}

/// The prompt for a workflow.
pub fn render_prompt(workflow_id: u64, output_dir: &Path, propose_only: bool) -> String {
    let apply = if propose_only {
        "Call `classify_and_resolve_failures` with `dry_run: true` for all jobs at once. This \
         records a proposal that a person will review and apply; it is all you need to do."
    } else {
        "Call `classify_and_resolve_failures` with `dry_run: true` for all jobs at once, check the \
         results, then apply exactly that proposal with `apply_proposal(proposal_id)`. If it is \
         refused as stale, list the jobs again and start over."
    };
    RECOVER_PROMPT
        .replace("{workflow_id}", &workflow_id.to_string())
        .replace("{output_dir}", &output_dir.display().to_string())
        .replace("{apply_instructions}", apply)
}

fn on_path(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    })
}

/// The command line for an agent (program, args, stdin).
pub fn command_for(
    kind: &AgentKind,
    prompt: &str,
    mcp_config: &Path,
) -> (String, Vec<String>, Option<String>) {
    match kind {
        AgentKind::Claude => {
            let allowed: Vec<String> = TOOLS
                .iter()
                .map(|t| format!("mcp__torc-ledger__{t}"))
                .collect();
            (
                "claude".into(),
                vec![
                    "-p".into(),
                    prompt.into(),
                    "--mcp-config".into(),
                    mcp_config.display().to_string(),
                    // Only this server, and only its tools: no shell, no file edits.
                    "--strict-mcp-config".into(),
                    "--allowedTools".into(),
                    allowed.join(","),
                    "--output-format".into(),
                    "json".into(),
                ],
                None,
            )
        }
        AgentKind::Copilot => (
            "copilot".into(),
            vec![
                "-p".into(),
                prompt.into(),
                "-s".into(),
                "--additional-mcp-config".into(),
                format!("@{}", mcp_config.display()),
                // Only the torc-ledger server's tools; never the shell or file writes.
                "--allow-tool".into(),
                "torc-ledger".into(),
                "--deny-tool".into(),
                "shell".into(),
                "--deny-tool".into(),
                "write".into(),
                "--no-color".into(),
            ],
            None,
        ),
        AgentKind::Command(cmd) => (
            "bash".into(),
            vec!["-c".into(), cmd.clone()],
            Some(prompt.to_string()),
        ),
    }
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run the agent to completion or until `timeout` (then its process group is killed).
pub fn invoke(
    kind: &AgentKind,
    workflow_id: u64,
    prompt: &str,
    mcp_config: &Path,
    cwd: &Path,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<AgentOutcome, AgentError> {
    let (program, args, stdin) = command_for(kind, prompt, mcp_config);
    if matches!(kind, AgentKind::Claude | AgentKind::Copilot) && on_path(&program).is_none() {
        return Err(AgentError::Missing {
            binary: program,
            workflow_id,
        });
    }
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .current_dir(cwd)
        .env("TORC_LEDGER_MCP_CONFIG", mcp_config)
        .env("TORC_WORKFLOW_ID", workflow_id.to_string())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| AgentError::Spawn {
        agent: kind.label(),
        err: e.to_string(),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    // Drain both pipes in the background so a chatty agent never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None)
                if started.elapsed() >= timeout
                    || stop.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                timed_out = started.elapsed() >= timeout;
                // SAFETY: signalling our own child's process group.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let exit_code = status.and_then(|s| s.code());
    if let AgentKind::Command(c) = kind {
        if exit_code == Some(127) {
            let first = c.split_whitespace().next().unwrap_or(c).to_string();
            return Err(AgentError::Missing {
                binary: first,
                workflow_id,
            });
        }
    }
    Ok(AgentOutcome {
        exit_code,
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout_tail: tail(&stdout, 20),
        stderr_tail: tail(&stderr, 20),
    })
}
