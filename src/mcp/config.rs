//! `torc-ledger mcp config`: the exact snippet to give an agent this server.

use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code: a `claude mcp add` command and the `.mcp.json` entry.
    Claude,
    /// GitHub Copilot CLI: the entry for ~/.copilot/mcp-config.json.
    Copilot,
    /// A generic `mcpServers` JSON entry.
    Json,
}

/// The command line that starts this server on `ledger`.
pub fn server_args(ledger: &Path, output_dir: &Path, mode: &str) -> Vec<String> {
    vec![
        "--ledger".into(),
        ledger.display().to_string(),
        "-o".into(),
        output_dir.display().to_string(),
        "mcp".into(),
        "--mode".into(),
        mode.into(),
    ]
}

/// The `mcpServers` JSON that starts `exe` with `args`.
pub fn mcp_servers_json(exe: &Path, args: &[String], copilot: bool) -> Value {
    let mut server = json!({"command": exe.display().to_string(), "args": args});
    if copilot {
        server["type"] = json!("local");
        server["tools"] = json!(["*"]);
    } else {
        server["type"] = json!("stdio");
    }
    json!({"mcpServers": {"torc-ledger": server}})
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn snippet(agent: Agent, exe: &Path, args: &[String]) -> String {
    match agent {
        Agent::Claude => {
            let cmd: Vec<String> = std::iter::once(exe.display().to_string())
                .chain(args.iter().cloned())
                .map(|a| shell_quote(&a))
                .collect();
            format!(
                "# Claude Code: add the server to this project\nclaude mcp add torc-ledger -- {}\n\n# or put this in .mcp.json at the project root\n{}\n",
                cmd.join(" "),
                serde_json::to_string_pretty(&mcp_servers_json(exe, args, false)).unwrap_or_default()
            )
        }
        Agent::Copilot => format!(
            "# GitHub Copilot CLI: merge into ~/.copilot/mcp-config.json\n{}\n\n# then, non-interactively:\n# copilot -p \"...\" --allow-tool 'torc-ledger'\n",
            serde_json::to_string_pretty(&mcp_servers_json(exe, args, true)).unwrap_or_default()
        ),
        Agent::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&mcp_servers_json(exe, args, false)).unwrap_or_default()
        ),
    }
}
