//! The façade: one writer per ledger directory, many processes.
//!
//! The process that holds the sled database is the *owner* ([`LocalLedger`]). A long-lived owner
//! (`run`, later `watch` and `mcp`) also serves the same requests on a Unix socket
//! (`owner.sock`, mode 0600) inside the ledger directory; any other process that finds the
//! database held talks to it there ([`remote::RemoteLedger`]). Commands and answers are the
//! same either way: [`Ledger`] is the one interface.

mod local;
pub mod remote;

pub use local::LocalLedger;

use crate::decide::{Command, DecideError};
use crate::event::{Actor, Event};
use crate::model::{Seq, WorkflowId};
use crate::state::{RunnerView, State};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who is asking, and how the command relates to others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ctx {
    pub actor: Actor,
    pub cause: Option<Seq>,
    /// Same key, same answer: a command whose key was seen before appends nothing and returns
    /// the seqs of the first time.
    pub idempotency_key: Option<String>,
}

impl Ctx {
    pub fn user() -> Ctx {
        Ctx {
            actor: Actor::current_user(),
            cause: None,
            idempotency_key: None,
        }
    }
    pub fn runner() -> Ctx {
        Ctx {
            actor: Actor::Runner,
            cause: None,
            idempotency_key: None,
        }
    }
}

/// What a write appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub seqs: Vec<Seq>,
    /// True when the idempotency key had been seen: nothing new was appended.
    pub replayed: bool,
}

impl Appended {
    pub fn head(&self) -> Seq {
        self.seqs.first().copied().unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum LedgerError {
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    #[error("chain broken at event {seq}: {why}")]
    Verify { seq: Seq, why: String },
    #[error("the ledger owner process stopped answering: {0}; run the command again")]
    Remote(String),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Store(e.to_string())
    }
}

/// The result of folding and checking the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub events: u64,
    pub last_seq: Seq,
    pub digest: String,
    pub chain_ok: bool,
    /// The first event that does not verify, and why.
    pub first_bad: Option<(Seq, String)>,
}

/// One ledger, however it is reached.
#[derive(Clone)]
pub enum Ledger {
    Local(Arc<LocalLedger>),
    Remote(Arc<remote::RemoteLedger>),
}

pub const SOCKET: &str = "owner.sock";
pub const OWNER_INFO: &str = "owner.json";

pub(crate) fn open_wait() -> Duration {
    std::env::var("TORC_LEDGER_OPEN_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

impl Ledger {
    /// Open for a short command: the database itself when no one holds it, otherwise the owner
    /// over its socket. Waits while another short command briefly holds it.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Self::open_inner(dir, false)
    }

    /// Open as a long-lived owner: like [`Ledger::open`], and when this process gets the
    /// database it serves other processes on the socket until it exits.
    pub fn open_owner(dir: &Path) -> Result<Ledger, LedgerError> {
        Self::open_inner(dir, true)
    }

    fn open_inner(dir: &Path, serve: bool) -> Result<Ledger, LedgerError> {
        let deadline = Instant::now() + open_wait();
        let mut pause = Duration::from_millis(5);
        loop {
            match LocalLedger::open(dir) {
                Ok(local) => {
                    let local = Arc::new(local);
                    if serve {
                        remote::serve(local.clone())?;
                    }
                    return Ok(Ledger::Local(local));
                }
                Err(LedgerError::Busy(_)) => {
                    if let Ok(r) = remote::RemoteLedger::connect(dir, serve) {
                        return Ok(Ledger::Remote(Arc::new(r)));
                    }
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(LedgerError::Busy(format!(
                    "the ledger at {} is held by {} and it does not answer on its socket; wait for it to finish, or stop it",
                    dir.display(),
                    owner_description(dir)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    pub fn dir(&self) -> PathBuf {
        match self {
            Ledger::Local(l) => l.dir().to_path_buf(),
            Ledger::Remote(r) => r.dir().to_path_buf(),
        }
    }

    pub fn execute(&self, cmd: Command, ctx: Ctx) -> Result<Appended, LedgerError> {
        match self {
            Ledger::Local(l) => l.execute(cmd, ctx),
            Ledger::Remote(r) => r.execute(cmd, ctx),
        }
    }

    /// The seq of the last event (without copying the state).
    pub fn last_seq(&self) -> Result<Seq, LedgerError> {
        match self {
            Ledger::Local(l) => Ok(l.last_seq()),
            Ledger::Remote(r) => r.last_seq(),
        }
    }

    /// What a command would append, without appending anything.
    pub fn preview(&self, cmd: Command) -> Result<Vec<crate::event::Body>, LedgerError> {
        match self {
            Ledger::Local(l) => l.preview(cmd),
            Ledger::Remote(r) => r.preview(cmd),
        }
    }

    /// State now (`at: None`) or as of event `at`.
    pub fn state(&self, at: Option<Seq>) -> Result<State, LedgerError> {
        match self {
            Ledger::Local(l) => l.state(at),
            Ledger::Remote(r) => r.state(at),
        }
    }

    pub fn runner_view(&self, workflow_id: WorkflowId) -> Result<RunnerView, LedgerError> {
        match self {
            Ledger::Local(l) => l.runner_view(workflow_id),
            Ledger::Remote(r) => r.runner_view(workflow_id),
        }
    }

    /// Events `from..=to` (to = last when `None`), at most `limit`.
    pub fn events(
        &self,
        from: Seq,
        to: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Event>, LedgerError> {
        match self {
            Ledger::Local(l) => l.events(from, to, limit),
            Ledger::Remote(r) => r.events(from, to, limit),
        }
    }

    pub fn verify(&self, until: Option<Seq>) -> Result<VerifyReport, LedgerError> {
        match self {
            Ledger::Local(l) => l.verify(until),
            Ledger::Remote(r) => r.verify(until),
        }
    }

    /// Claim the right to run a workflow's jobs (one runner per workflow).
    pub fn claim_runner(&self, workflow_id: WorkflowId) -> Result<(), LedgerError> {
        match self {
            Ledger::Local(l) => l.claim_runner(workflow_id),
            Ledger::Remote(r) => r.claim_runner(workflow_id),
        }
    }

    pub fn release_runner(&self, workflow_id: WorkflowId) {
        match self {
            Ledger::Local(l) => l.release_runner(workflow_id),
            Ledger::Remote(r) => r.release_runner(workflow_id),
        }
    }

    /// Wait until an event after `seq` exists or `timeout` passes; returns the last seq.
    pub fn wait_for_change(&self, seq: Seq, timeout: Duration) -> Result<Seq, LedgerError> {
        match self {
            Ledger::Local(l) => Ok(l.wait_for_change(seq, timeout)),
            Ledger::Remote(r) => {
                // Remote: poll at a modest rate; the runner in this process reports its own
                // jobs' ends directly, so this only delays noticing other processes' writes.
                let deadline = Instant::now() + timeout;
                loop {
                    let last = r.last_seq()?;
                    if last > seq || Instant::now() >= deadline {
                        return Ok(last);
                    }
                    std::thread::sleep(Duration::from_millis(50).min(timeout));
                }
            }
        }
    }

    /// This process holds the database (from the start, or since it took over from an owner
    /// that went away): it removes the socket when it exits.
    pub fn is_owner(&self) -> bool {
        match self {
            Ledger::Local(_) => true,
            Ledger::Remote(r) => r.owns(),
        }
    }
}

/// "process 1234 (`torc-ledger run ...`)" from the owner file, for messages.
pub fn owner_description(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(OWNER_INFO))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map(|v| {
            format!(
                "process {} (`{}`)",
                v["pid"],
                v["command"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "another process".into())
}
