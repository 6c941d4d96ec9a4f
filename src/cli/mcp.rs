//! `torc-ledger mcp`: the MCP server, and `mcp config` for agents.

use super::render::Out;
use super::{absolute, exit, no_at, Cli, CliError, CliResult};
use crate::ledger::{remote, Ledger};
use crate::mcp::config::{self, Agent};
use crate::mcp::{Caps, LedgerMcp, Mode};
use crate::model::{parse_duration, parse_memory};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  torc-ledger mcp                               # stdio, propose mode (agents dry-run; people apply)
  torc-ledger mcp --mode apply --actor nightly  # agents may apply
  torc-ledger mcp --http 127.0.0.1:8765         # streamable HTTP at http://127.0.0.1:8765/mcp
  torc-ledger mcp config --agent claude         # the snippet for Claude Code")]
pub struct McpArgs {
    #[command(subcommand)]
    pub command: Option<McpCmd>,
    /// What agents may do: read (no writes), propose (dry runs only), apply (everything).
    #[arg(long, value_enum, default_value_t = Mode::Propose, global = true)]
    pub mode: Mode,
    /// Serve streamable HTTP on this address instead of stdio (loopback unless you say otherwise).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// A label added to the agent's name in every decision it records.
    #[arg(long)]
    pub actor: Option<String>,
    /// Largest memory an agent may ask for in a retry.
    #[arg(long, default_value = "1t")]
    pub max_memory: String,
    /// Longest runtime an agent may ask for in a retry (ISO-8601).
    #[arg(long, default_value = "P14D")]
    pub max_runtime: String,
    /// Most classifications in one call.
    #[arg(long, default_value_t = 10_000)]
    pub max_items: usize,
    /// The digest of the prompt the agent was given (set by the recovery loop's MCP config),
    /// recorded with every decision.
    #[arg(long, value_name = "HEX")]
    pub prompt_digest: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum McpCmd {
    /// Print the exact configuration that gives an agent this server, paths filled in.
    Config {
        #[arg(long, value_enum, default_value_t = Agent::Json)]
        agent: Agent,
    },
}

pub fn mcp(cli: &Cli, out: &Out, a: &McpArgs) -> CliResult {
    if let Some(McpCmd::Config { agent }) = &a.command {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::internal(format!("cannot find this program: {e}")))?;
        let args = config::server_args(
            &absolute(&cli.ledger),
            &absolute(&cli.output_dir),
            a.mode.as_str(),
        );
        if out.json() {
            out.print_json(&config::mcp_servers_json(
                &exe,
                &args,
                *agent == Agent::Copilot,
            ));
        } else {
            print!("{}", config::snippet(*agent, &exe, &args));
        }
        return Ok(exit::OK);
    }
    no_at(cli, "mcp")?;
    let caps = Caps {
        max_memory_bytes: parse_memory(&a.max_memory)
            .map_err(|e| CliError::bad_input(format!("--max-memory: {e}")))?,
        max_runtime_seconds: parse_duration(&a.max_runtime)
            .map_err(|e| CliError::bad_input(format!("--max-runtime: {e}")))?,
        max_items: a.max_items.max(1),
        ..Caps::default()
    };
    if let Some(addr) = a.http {
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: serving MCP on {addr}, which is not a loopback address: anyone who can reach it can {} this ledger",
                if a.mode == Mode::Read { "read" } else { "change" }
            );
        }
    }
    let ledger = Ledger::open_owner(&cli.ledger)?;
    let server = LedgerMcp::new(ledger.clone(), a.mode, caps, a.actor.clone())
        .with_prompt_digest(a.prompt_digest.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    let result = rt.block_on(async {
        match a.http {
            Some(addr) => server.serve_http(addr).await,
            None => server.serve_stdio().await,
        }
    });
    if ledger.is_owner() {
        remote::cleanup(&ledger.dir());
    }
    result.map_err(|e| CliError::internal(format!("MCP server: {e}")))?;
    Ok(exit::OK)
}
