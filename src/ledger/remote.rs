//! The owner's endpoint: a Unix socket (mode 0600) in the ledger directory, and the client that
//! other processes use. Frames are a u32 little-endian length and a bincode payload.

use super::{
    Appended, Ctx, LedgerError, LocalLedger, VerifyReport, WorkflowView, OWNER_INFO, SOCKET,
};
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

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Ping,
    Execute(Command, Ctx),
    Preview(Command),
    State(Option<Seq>),
    View(WorkflowId),
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
    View(Box<WorkflowView>),
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

/// Serve `ledger` on its directory's socket from background threads.
pub fn serve(ledger: Arc<LocalLedger>) -> Result<(), LedgerError> {
    let path = ledger.dir().join(SOCKET);
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
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let _ = std::fs::remove_file(dir.join(OWNER_INFO));
}

fn handle(ledger: Arc<LocalLedger>, mut conn: UnixStream) {
    let mut claimed: HashSet<WorkflowId> = HashSet::new();
    while let Ok(req) = read_frame::<Request>(&mut conn) {
        let resp: Result<Response, LedgerError> = match req {
            Request::Ping => Ok(Response::Pong),
            Request::Execute(cmd, ctx) => ledger.execute(cmd, ctx).map(Response::Appended),
            Request::Preview(cmd) => ledger.preview(cmd).map(Response::Bodies),
            Request::State(at) => ledger.state(at).map(|s| Response::State(Box::new(s))),
            Request::View(wf) => ledger.view(wf).map(|v| Response::View(Box::new(v))),
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
        };
        if write_frame(&mut conn, &resp).is_err() {
            break;
        }
    }
    // A client that goes away gives up the workflows it was running.
    for wf in claimed {
        ledger.release_runner(wf);
    }
}

pub struct RemoteLedger {
    dir: PathBuf,
    conn: Mutex<UnixStream>,
}

impl RemoteLedger {
    pub fn connect(dir: &Path) -> std::io::Result<RemoteLedger> {
        let mut conn = UnixStream::connect(dir.join(SOCKET))?;
        write_frame(&mut conn, &Request::Ping)?;
        match read_frame::<Result<Response, LedgerError>>(&mut conn)? {
            Ok(Response::Pong) => Ok(RemoteLedger {
                dir: dir.to_path_buf(),
                conn: Mutex::new(conn),
            }),
            _ => Err(std::io::Error::other("unexpected answer to ping")),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn call(&self, req: Request) -> Result<Response, LedgerError> {
        let mut conn = self.conn.lock().unwrap();
        write_frame(&mut *conn, &req).map_err(|e| LedgerError::Remote(e.to_string()))?;
        read_frame::<Result<Response, LedgerError>>(&mut *conn)
            .map_err(|e| LedgerError::Remote(e.to_string()))?
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

    pub fn view(&self, wf: WorkflowId) -> Result<WorkflowView, LedgerError> {
        match self.call(Request::View(wf))? {
            Response::View(v) => Ok(*v),
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
        self.call(Request::ClaimRunner(wf)).map(|_| ())
    }

    pub fn release_runner(&self, wf: WorkflowId) {
        let _ = self.call(Request::ReleaseRunner(wf));
    }
}
