//! The MCP server: Torc's recovery tools (same names, inputs and output keys) plus the ledger's
//! own (apply a reviewed proposal, decision history, undo), over stdio or streamable HTTP.
//!
//! Every write goes through the same `decide` commands as the CLI, recorded with the agent as
//! actor (client name and version from the MCP handshake). `--mode` limits what an agent may do:
//! `read` lists no writing tool, `propose` (the default) allows dry runs only, `apply` allows
//! everything. A tool a mode forbids is not listed and is refused if called anyway.

pub mod config;
mod tools;

use crate::ledger::Ledger;
use crate::model::{parse_duration, parse_memory};
use rmcp::handler::server::router::tool::ToolRouter;

/// What an agent connected to this server may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Read-only tools.
    Read,
    /// Read, and classify with `dry_run: true` (proposals a person applies).
    Propose,
    /// Everything, including applying classifications, proposals and undo.
    Apply,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Propose => "propose",
            Mode::Apply => "apply",
        }
    }
}

/// Bounds on what one call may ask for.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Largest memory a retry may ask for, in bytes.
    pub max_memory_bytes: u64,
    /// Longest runtime a retry may ask for, in seconds.
    pub max_runtime_seconds: u64,
    /// Most classifications in one call.
    pub max_items: usize,
    /// Longest reason, in bytes.
    pub max_reason_bytes: usize,
    /// Most log lines one call returns.
    pub max_tail_lines: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_memory_bytes: parse_memory("1t").expect("valid"),
            max_runtime_seconds: parse_duration("P14D").expect("valid"),
            max_items: 10_000,
            max_reason_bytes: 4096,
            max_tail_lines: 10_000,
        }
    }
}

#[derive(Clone)]
pub struct LedgerMcp {
    pub(crate) ledger: Ledger,
    pub(crate) mode: Mode,
    pub(crate) caps: Caps,
    /// Added to the agent's name in the actor of every write (`--actor`).
    pub(crate) actor_label: Option<String>,
    /// The digest of the prompt the agent was given, recorded with its decisions.
    pub(crate) prompt_digest: Option<String>,
    pub(crate) tool_router: ToolRouter<LedgerMcp>,
}

/// Tools that change the ledger, and the least mode that lists them.
pub const WRITE_TOOLS: [(&str, Mode); 3] = [
    ("classify_and_resolve_failures", Mode::Propose),
    ("apply_proposal", Mode::Apply),
    ("undo_decision", Mode::Apply),
];

impl LedgerMcp {
    pub fn new(ledger: Ledger, mode: Mode, caps: Caps, actor_label: Option<String>) -> LedgerMcp {
        let mut tool_router = Self::tool_router();
        for (name, least) in WRITE_TOOLS {
            if (mode as u8) < (least as u8) {
                tool_router.remove_route(name);
            }
        }
        LedgerMcp {
            ledger,
            mode,
            caps,
            actor_label,
            prompt_digest: None,
            tool_router,
        }
    }

    /// Record this prompt digest with every decision (the recovery loop's agents).
    pub fn with_prompt_digest(mut self, digest: Option<String>) -> LedgerMcp {
        self.prompt_digest = digest;
        self
    }

    /// Serve on stdin/stdout until the client goes away.
    pub async fn serve_stdio(self) -> anyhow::Result<()> {
        use rmcp::ServiceExt;
        let running = self.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        Ok(())
    }

    /// Serve streamable HTTP at `addr` (path `/mcp`) until Ctrl-C.
    pub async fn serve_http(self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        use rmcp::transport::streamable_http_server::{
            session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
        };
        let server = self.clone();
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            std::sync::Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "torc-ledger MCP server on http://{}/mcp (mode {})",
            listener.local_addr()?,
            self.mode.as_str()
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    }
}

/// Where agents learn the job: shown as the server's instructions and in tool descriptions.
pub const GUIDE: &str = "\
torc-ledger classifies failed jobs of Torc workflows. Jobs whose failure no failure-handler rule \
explains wait in pending_failed; their dependents wait with them.

How to classify (read the stderr tail, the return code and the command):
- retry (transient: the same command will likely succeed): network resets, refused or timed-out \
connections, DNS failures, HTTP 429/5xx and rate limits, node failures and preemption, NCCL/IB \
transport errors, stale NFS handles and I/O errors on shared file systems, a service that was \
briefly unavailable.
- retry with more memory: killed by the OOM killer (return code 137 well before the runtime limit, \
'Killed', 'oom-kill', 'OUT_OF_MEMORY', 'CUDA out of memory', 'MemoryError', 'std::bad_alloc'). \
Give memory (e.g. \"8g\"), about 1.5-2x the current limit.
- retry with more time: killed at the runtime limit (return code 152, 'DUE TO TIME LIMIT', \
'TIMEOUT'). Give runtime (ISO-8601, e.g. \"PT2H\").
- fail (permanent: retrying wastes an allocation): exceptions from the job's own code \
(KeyError, TypeError, ValueError, AttributeError, ImportError, SyntaxError, ZeroDivisionError, \
assertion failures), missing input files, permission denied, bad configuration or arguments, \
authentication or license errors, a container image that does not exist. Look past the last line: \
a transient-looking error can be caused by a bug earlier in the log.

The flow: list_pending_failed_jobs -> decide each job -> classify_and_resolve_failures with \
dry_run: true (this records a proposal and returns its proposal_id; nothing changes) -> show the \
proposal to the user -> apply_proposal(proposal_id) applies exactly what was reviewed (or is \
refused if a job changed since). Give a reason for every decision: it is recorded with your name. \
Every write returns the seqs it appended; undo_decision(seq) reverses a decision.";
