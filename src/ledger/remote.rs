//! The owner's endpoint: a Unix socket (mode 0600) in the ledger directory, and the client that
//! other processes use. Frames are a u32 little-endian length and a bincode payload.

use super::{Appended, Ctx, LedgerError, LocalLedger, VerifyReport, OWNER_INFO, SOCKET};
use crate::decide::Command;
use crate::event::Event;
use crate::model::{Seq, WorkflowId};
use crate::state::State;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Request {
    Ping,
    Execute(Command, Ctx),
    Preview(Command),
    State(Option<Seq>),
    RunnerView(WorkflowId),
    Events(Seq, Option<Seq>, u64),
    Verify(Option<Seq>),
    LastSeq,
    ClaimRunner(WorkflowId),
    ReleaseRunner(WorkflowId),
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Pong,
    Appended(Appended),
    Bodies(Vec<crate::event::Body>),
    State(Box<State>),
    RunnerView(Box<crate::state::RunnerView>),
    Events(Vec<Event>),
    Verify(VerifyReport),
    Seq(Seq),
    Done,
}

const MAX_FRAME: usize = 1 << 30;

fn write_frame<T: Serialize>(w: &mut impl Write, v: &T) -> std::io::Result<()> {
    let bytes = bincode::serialize(v).map_err(std::io::Error::other)?;
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()
}

fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    bincode::deserialize(&buf).map_err(std::io::Error::other)
}

/// Where a ledger's owner listens: `owner.sock` in the ledger directory, or — when that path is
/// too long for a Unix socket (about 108 bytes) — a file in the temp directory named by a hash of
/// the ledger's canonical path, which every process computes the same way.
pub fn socket_path(dir: &Path) -> PathBuf {
    // Decided on the canonical path, so a process given a relative path and one given the
    // absolute path agree.
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let path = canonical.join(SOCKET);
    if path.as_os_str().len() < 100 {
        return path;
    }
    let h = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    std::env::temp_dir().join(format!("torc-ledger-{}.sock", &h[..16]))
}

/// Serve `ledger` on its directory's socket from background threads.
pub fn serve(ledger: Arc<LocalLedger>) -> Result<(), LedgerError> {
    let path = socket_path(ledger.dir());
    // We hold the database, so any socket file left here belongs to an owner that died.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| LedgerError::Store(format!("cannot listen on {}: {e}", path.display())))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let info = serde_json::json!({
        "pid": std::process::id(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let _ = std::fs::write(ledger.dir().join(OWNER_INFO), info.to_string());
    std::thread::Builder::new()
        .name("ledger-owner".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let ledger = ledger.clone();
                let _ = std::thread::Builder::new()
                    .name("ledger-conn".into())
                    .spawn(move || handle(ledger, conn));
            }
        })
        .map_err(|e| LedgerError::Store(e.to_string()))?;
    Ok(())
}

/// Remove the socket and owner file (on orderly exit of the owner).
pub fn cleanup(dir: &Path) {
    let _ = std::fs::remove_file(socket_path(dir));
    let _ = std::fs::remove_file(dir.join(OWNER_INFO));
}

/// Answer one request with the ledger this process owns.
fn dispatch(
    ledger: &LocalLedger,
    req: Request,
    claimed: &mut HashSet<WorkflowId>,
) -> Result<Response, LedgerError> {
    match req {
        Request::Ping => Ok(Response::Pong),
        Request::Execute(cmd, ctx) => ledger.execute(cmd, ctx).map(Response::Appended),
        Request::Preview(cmd) => ledger.preview(cmd).map(Response::Bodies),
        Request::State(at) => ledger.state(at).map(|s| Response::State(Box::new(s))),
        Request::RunnerView(wf) => ledger
            .runner_view(wf)
            .map(|v| Response::RunnerView(Box::new(v))),
        Request::Events(from, to, limit) => ledger
            .events(from, to, limit as usize)
            .map(Response::Events),
        Request::Verify(until) => ledger.verify(until).map(Response::Verify),
        Request::LastSeq => Ok(Response::Seq(ledger.last_seq())),
        Request::ClaimRunner(wf) => ledger.claim_runner(wf).map(|_| {
            claimed.insert(wf);
            Response::Done
        }),
        Request::ReleaseRunner(wf) => {
            claimed.remove(&wf);
            ledger.release_runner(wf);
            Ok(Response::Done)
        }
    }
}

fn handle(ledger: Arc<LocalLedger>, mut conn: UnixStream) {
    let mut claimed: HashSet<WorkflowId> = HashSet::new();
    while let Ok(req) = read_frame::<Request>(&mut conn) {
        let resp = dispatch(&ledger, req, &mut claimed);
        if write_frame(&mut conn, &resp).is_err() {
            break;
        }
    }
    // A client that goes away gives up the workflows it was running.
    for wf in claimed {
        ledger.release_runner(wf);
    }
}

/// How this process reaches the ledger: through the owner's socket, or (after the owner went
/// away) as the owner itself.
enum Link {
    Socket(UnixStream),
    Owned(Arc<LocalLedger>),
}

fn connect_socket(dir: &Path) -> std::io::Result<UnixStream> {
    let mut conn = UnixStream::connect(socket_path(dir))?;
    write_frame(&mut conn, &Request::Ping)?;
    match read_frame::<Result<Response, LedgerError>>(&mut conn)? {
        Ok(Response::Pong) => Ok(conn),
        _ => Err(std::io::Error::other("unexpected answer to ping")),
    }
}

pub struct RemoteLedger {
    dir: PathBuf,
    /// Serve others if this process becomes the owner (long-lived commands).
    serve: bool,
    link: Mutex<Link>,
    /// Workflows this process runs, to claim again from a new owner.
    claimed: Mutex<HashSet<WorkflowId>>,
    /// For the idempotency keys that make a retried write exactly-once.
    key_prefix: String,
    next_key: std::sync::atomic::AtomicU64,
}

impl RemoteLedger {
    pub fn connect(dir: &Path, serve: bool) -> std::io::Result<RemoteLedger> {
        let conn = connect_socket(dir)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(RemoteLedger {
            dir: dir.to_path_buf(),
            serve,
            link: Mutex::new(Link::Socket(conn)),
            claimed: Mutex::new(HashSet::new()),
            key_prefix: format!("remote:{}:{started:x}", std::process::id()),
            next_key: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Send a request. If the owner went away, reach the next owner — or become it — and send
    /// it again (writes carry an idempotency key, so a write the old owner already made is not
    /// made twice).
    fn call(&self, req: Request) -> Result<Response, LedgerError> {
        let mut link = self.link.lock().unwrap();
        let deadline = std::time::Instant::now() + super::open_wait();
        loop {
            let failure = match &mut *link {
                Link::Owned(l) => return dispatch(l, req, &mut self.claimed.lock().unwrap()),
                Link::Socket(conn) => match write_frame(conn, &req)
                    .and_then(|_| read_frame::<Result<Response, LedgerError>>(conn))
                {
                    Ok(r) => return r,
                    Err(e) => e,
                },
            };
            *link = self
                .relink(deadline)
                .map_err(|e| LedgerError::Remote(format!("{failure}; and no new owner: {e}")))?;
            // The old owner's claims died with it: claim our workflows again.
            let claimed: Vec<WorkflowId> = self.claimed.lock().unwrap().iter().copied().collect();
            for wf in claimed {
                let again = match &mut *link {
                    Link::Owned(l) => l.claim_runner(wf),
                    Link::Socket(conn) => write_frame(conn, &Request::ClaimRunner(wf))
                        .and_then(|_| read_frame::<Result<Response, LedgerError>>(conn))
                        .map_err(|e| LedgerError::Remote(e.to_string()))
                        .and_then(|r| r.map(|_| ())),
                };
                again?;
            }
        }
    }

    fn relink(&self, deadline: std::time::Instant) -> Result<Link, LedgerError> {
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match LocalLedger::open(&self.dir) {
                Ok(local) => {
                    let local = Arc::new(local);
                    if self.serve {
                        serve(local.clone())?;
                    }
                    return Ok(Link::Owned(local));
                }
                Err(LedgerError::Busy(_)) => {
                    if let Ok(conn) = connect_socket(&self.dir) {
                        return Ok(Link::Socket(conn));
                    }
                }
                Err(e) => return Err(e),
            }
            if std::time::Instant::now() >= deadline {
                return Err(LedgerError::Busy(format!(
                    "the ledger at {} is held by {} and it does not answer",
                    self.dir.display(),
                    super::owner_description(&self.dir)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }

    /// True when this process took the ledger over (it must clean up the socket at exit).
    pub fn owns(&self) -> bool {
        matches!(*self.link.lock().unwrap(), Link::Owned(_))
    }

    fn unexpected() -> LedgerError {
        LedgerError::Remote("unexpected answer from the owner process".into())
    }

    pub fn execute(&self, cmd: Command, ctx: Ctx) -> Result<Appended, LedgerError> {
        // The owner reads the undo target's batch itself.
        let cmd = match cmd {
            Command::Undo { target, .. } => Command::Undo {
                target,
                batch: Vec::new(),
            },
            c => c,
        };
        let mut ctx = ctx;
        if ctx.idempotency_key.is_none() {
            let n = self
                .next_key
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.idempotency_key = Some(format!("{}:{n}", self.key_prefix));
        }
        match self.call(Request::Execute(cmd, ctx))? {
            Response::Appended(a) => Ok(a),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn preview(&self, cmd: Command) -> Result<Vec<crate::event::Body>, LedgerError> {
        let cmd = match cmd {
            Command::Undo { target, .. } => Command::Undo {
                target,
                batch: Vec::new(),
            },
            c => c,
        };
        match self.call(Request::Preview(cmd))? {
            Response::Bodies(b) => Ok(b),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn state(&self, at: Option<Seq>) -> Result<State, LedgerError> {
        match self.call(Request::State(at))? {
            Response::State(s) => Ok(*s),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn runner_view(&self, wf: WorkflowId) -> Result<crate::state::RunnerView, LedgerError> {
        match self.call(Request::RunnerView(wf))? {
            Response::RunnerView(v) => Ok(*v),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn events(
        &self,
        from: Seq,
        to: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Event>, LedgerError> {
        match self.call(Request::Events(from, to, limit as u64))? {
            Response::Events(e) => Ok(e),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn verify(&self, until: Option<Seq>) -> Result<VerifyReport, LedgerError> {
        match self.call(Request::Verify(until))? {
            Response::Verify(v) => Ok(v),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn last_seq(&self) -> Result<Seq, LedgerError> {
        match self.call(Request::LastSeq)? {
            Response::Seq(s) => Ok(s),
            _ => Err(Self::unexpected()),
        }
    }

    pub fn claim_runner(&self, wf: WorkflowId) -> Result<(), LedgerError> {
        self.call(Request::ClaimRunner(wf))?;
        self.claimed.lock().unwrap().insert(wf);
        Ok(())
    }

    pub fn release_runner(&self, wf: WorkflowId) {
        self.claimed.lock().unwrap().remove(&wf);
        let _ = self.call(Request::ReleaseRunner(wf));
    }
}
