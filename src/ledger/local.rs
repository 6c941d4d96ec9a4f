//! The owner: store + in-memory state, commands serialised, writes group-committed.

use super::{Appended, Ctx, LedgerError, VerifyReport};
use crate::decide::{decide, Command, DecideError};
use crate::event::codec::{self, ExportLine};
use crate::event::{Envelope, Event};
use crate::model::{Seq, WorkflowId};
use crate::state::State;
use crate::store::{Store, StoreError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Durable {
    /// Every seq up to this one is flushed.
    durable: Seq,
    /// A thread is flushing right now.
    flushing: bool,
    /// The last seq written to sled (durable or not).
    appended: Seq,
}

pub struct LocalLedger {
    dir: PathBuf,
    store: Store,
    state: Mutex<State>,
    durable: Mutex<Durable>,
    durable_cv: Condvar,
    /// Signalled after every durable append, for watchers.
    changed: Condvar,
    changed_lock: Mutex<Seq>,
    runners: Mutex<HashSet<WorkflowId>>,
    /// Set when a flush failed: appended events may not be durable, so no further write is
    /// accepted until the ledger is reopened (which folds what actually reached the disk).
    poisoned: Mutex<Option<String>>,
}

/// Bumped whenever `State`'s shape or `State::apply` changes meaning: an older snapshot is then
/// ignored and the log folded from the start.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    format: u32,
    crate_version: String,
    state: State,
}

/// Take a snapshot after this many events folded past the last one (`TORC_LEDGER_SNAPSHOT_EVERY`).
fn snapshot_every() -> u64 {
    std::env::var("TORC_LEDGER_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
        .max(1)
}

fn write_snapshot(store: &Store, state: &State) -> Result<(), LedgerError> {
    let snap = Snapshot {
        format: SNAPSHOT_FORMAT,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        state: state.clone(),
    };
    let bytes = bincode::serialize(&snap).map_err(|e| LedgerError::Store(e.to_string()))?;
    store.put_snapshot(state.last_seq, &bytes)?;
    Ok(())
}

/// The snapshot, if it was written by this version and still matches the log (the event at its
/// seq has the hash it recorded); otherwise `None` and the log is folded from the start.
fn load_snapshot(store: &Store) -> Option<State> {
    let (seq, bytes) = store.snapshot().ok()??;
    let snap: Snapshot = bincode::deserialize(&bytes).ok()?;
    if snap.format != SNAPSHOT_FORMAT
        || snap.crate_version != env!("CARGO_PKG_VERSION")
        || snap.state.last_seq != seq
    {
        return None;
    }
    let ev = store.get(seq, true).ok()??;
    (ev.hash == snap.state.last_hash).then_some(snap.state)
}

/// The first 16 hex digits of blake3 over the command's encoding: what an idempotency key is
/// tied to.
fn command_digest(cmd: &Command) -> String {
    let bytes = bincode::serialize(cmd).unwrap_or_default();
    blake3::hash(&bytes).to_hex()[..16].to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalLedger {
    /// Open the database and fold the log. `Busy` when another process holds it.
    pub fn open(dir: &Path) -> Result<LocalLedger, LedgerError> {
        Self::open_with_snapshots(dir, snapshot_every())
    }

    /// Open, taking a state snapshot when at least `every` events were folded past the last one.
    pub fn open_with_snapshots(dir: &Path, every: u64) -> Result<LocalLedger, LedgerError> {
        let store = match Store::open(dir) {
            Ok(s) => s,
            Err(StoreError::Locked(d)) => return Err(LedgerError::Busy(d)),
            Err(e) => return Err(e.into()),
        };
        // Start from the snapshot when there is a good one, then fold what came after it.
        let mut state = load_snapshot(&store).unwrap_or_default();
        let mut prev = state.last_hash;
        let start = state.last_seq + 1;
        let mut folded = 0u64;
        for (expected, ev) in (start..).zip(store.range(start, u64::MAX, false)) {
            let ev = ev?;
            if ev.seq != expected || ev.prev_hash != prev {
                return Err(LedgerError::Verify {
                    seq: expected,
                    why: "the log has a gap or a broken link; run `torc-ledger replay --verify` for details".into(),
                });
            }
            prev = ev.hash;
            state.apply(&ev);
            folded += 1;
        }
        // Many events since the last snapshot: take one, so the next open is quick. (A failure
        // here costs only speed.)
        if folded >= every.max(1) {
            let _ = write_snapshot(&store, &state);
        }
        let last = state.last_seq;
        Ok(LocalLedger {
            dir: dir.to_path_buf(),
            store,
            state: Mutex::new(state),
            durable: Mutex::new(Durable {
                durable: last,
                flushing: false,
                appended: last,
            }),
            durable_cv: Condvar::new(),
            changed: Condvar::new(),
            changed_lock: Mutex::new(last),
            runners: Mutex::new(HashSet::new()),
            poisoned: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run a command: decide against the current state, append its events as one atomic batch,
    /// fold them, and return once they are durable.
    pub fn execute(&self, cmd: Command, mut ctx: Ctx) -> Result<Appended, LedgerError> {
        if let Some(e) = self.poisoned.lock().unwrap().clone() {
            return Err(LedgerError::Store(e));
        }
        let (seqs, replayed) = {
            let mut state = self.state.lock().unwrap();
            match ctx.idempotency_key.take() {
                None => (self.append_locked(&mut state, cmd, &ctx)?, false),
                Some(key) => {
                    let digest = command_digest(&cmd);
                    match state.idempotency.get(&key) {
                        Some((d, seqs)) if *d == digest => (seqs.clone(), true),
                        Some((_, seqs)) => {
                            return Err(LedgerError::Invalid(format!(
                                "idempotency key {key:?} was already used for another command (event {}); use a new key for a new command",
                                seqs.first().copied().unwrap_or(0)
                            )))
                        }
                        None => {
                            ctx.idempotency_key = Some(format!("{key}#{digest}"));
                            (self.append_locked(&mut state, cmd, &ctx)?, false)
                        }
                    }
                }
            }
        };
        if let Some(&last) = seqs.last() {
            self.wait_durable(last)?;
        }
        Ok(Appended { seqs, replayed })
    }

    /// What a command would append, without appending it (`undo --dry-run`).
    pub fn preview(&self, cmd: Command) -> Result<Vec<crate::event::Body>, LedgerError> {
        let state = self.state.lock().unwrap();
        let cmd = self.resolve(cmd, state.last_seq)?;
        Ok(decide(&state, &cmd)?)
    }

    fn resolve(&self, cmd: Command, last: Seq) -> Result<Command, LedgerError> {
        Ok(match cmd {
            // The undo rules need the target's batch; read it from the log.
            Command::Undo { target, .. } => Command::Undo {
                target,
                batch: self.batch_of(target, last)?,
            },
            c => c,
        })
    }

    fn append_locked(
        &self,
        state: &mut State,
        cmd: Command,
        ctx: &Ctx,
    ) -> Result<Vec<Seq>, LedgerError> {
        let cmd = self.resolve(cmd, state.last_seq)?;
        let bodies = decide(state, &cmd)?;
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let time_ms = now_ms();
        let first = state.last_seq + 1;
        let mut prev = state.last_hash;
        let mut records = Vec::with_capacity(bodies.len());
        let mut events = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.into_iter().enumerate() {
            let seq = first + i as u64;
            let env = Envelope {
                seq,
                time_ms,
                actor: ctx.actor.clone(),
                cause: if i == 0 { ctx.cause } else { Some(first) },
                index: i as u32,
                idempotency_key: ctx.idempotency_key.clone(),
                prev_hash: prev,
                body,
            };
            let (bytes, hash) = codec::encode(&env);
            prev = hash;
            records.push((seq, bytes));
            events.push(Event { env, hash });
        }
        self.store.append(&records)?;
        for ev in &events {
            state.apply(ev);
        }
        let last = state.last_seq;
        self.durable.lock().unwrap().appended = last;
        Ok((first..=last).collect())
    }

    /// Group commit: the first waiter flushes everything appended so far; the others wait for
    /// a flush that covers their seq.
    fn wait_durable(&self, seq: Seq) -> Result<(), LedgerError> {
        let mut d = self.durable.lock().unwrap();
        while d.durable < seq {
            if d.flushing {
                d = self.durable_cv.wait(d).unwrap();
                continue;
            }
            d.flushing = true;
            let target = d.appended;
            drop(d);
            let res = self.store.flush();
            d = self.durable.lock().unwrap();
            d.flushing = false;
            match &res {
                Ok(()) => d.durable = d.durable.max(target),
                Err(e) => {
                    *self.poisoned.lock().unwrap() = Some(format!(
                        "the ledger could not make writes durable ({e}); nothing more is accepted until it is reopened: stop this process and run the command again"
                    ));
                }
            }
            self.durable_cv.notify_all();
            res?;
        }
        drop(d);
        let mut c = self.changed_lock.lock().unwrap();
        if *c < seq {
            *c = seq;
        }
        self.changed.notify_all();
        Ok(())
    }

    /// The target event and the events it caused (its batch).
    fn batch_of(&self, target: Seq, last: Seq) -> Result<Vec<Event>, LedgerError> {
        if target == 0 || target > last {
            return Err(DecideError::UnknownEvent(target).into());
        }
        let mut out = Vec::new();
        for ev in self.store.range(target, last, false) {
            let ev = ev?;
            if ev.seq != target && ev.index == 0 {
                break;
            }
            out.push(ev);
        }
        Ok(out)
    }

    pub fn state(&self, at: Option<Seq>) -> Result<State, LedgerError> {
        let current = self.state.lock().unwrap();
        match at {
            None => Ok(current.clone()),
            Some(at) if at >= current.last_seq => Ok(current.clone()),
            Some(at) => {
                drop(current);
                let mut s = State::default();
                for ev in self.store.range(1, at, false) {
                    s.apply(&ev?);
                }
                Ok(s)
            }
        }
    }

    /// Run a closure on the current state without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().unwrap())
    }

    pub fn runner_view(
        &self,
        workflow_id: WorkflowId,
    ) -> Result<crate::state::RunnerView, LedgerError> {
        self.state
            .lock()
            .unwrap()
            .runner_view(workflow_id)
            .ok_or_else(|| DecideError::UnknownWorkflow(workflow_id).into())
    }

    pub fn last_seq(&self) -> Seq {
        self.state.lock().unwrap().last_seq
    }

    pub fn events(
        &self,
        from: Seq,
        to: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Event>, LedgerError> {
        let to = to.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for ev in self.store.range(from.max(1), to, false).take(limit) {
            out.push(ev?);
        }
        Ok(out)
    }

    /// Fold the log (up to `until`) from scratch, checking every hash and link.
    pub fn verify(&self, until: Option<Seq>) -> Result<VerifyReport, LedgerError> {
        let until = until.unwrap_or(u64::MAX);
        let mut state = State::default();
        let mut prev = [0u8; 32];
        let mut first_bad = None;
        for (expected, rec) in (1u64..).zip(self.store.raw_range(1, until)) {
            let (seq, bytes) = rec?;
            if seq != expected {
                first_bad = Some((expected, format!("event {expected} is missing")));
                break;
            }
            let ev = match codec::decode(&bytes, true) {
                Ok(ev) => ev,
                Err(e) => {
                    first_bad = Some((seq, e.to_string()));
                    break;
                }
            };
            if ev.seq != seq {
                first_bad = Some((seq, format!("stored under {seq} but says it is {}", ev.seq)));
                break;
            }
            if ev.prev_hash != prev {
                first_bad = Some((
                    seq,
                    "its link to the previous event does not match (an event before it was changed or removed)".into(),
                ));
                break;
            }
            prev = ev.hash;
            state.apply(&ev);
        }
        Ok(VerifyReport {
            events: state.last_seq,
            last_seq: state.last_seq,
            digest: state.digest(),
            chain_ok: first_bad.is_none(),
            first_bad,
        })
    }

    /// Load an exported log into this empty ledger, all or nothing.
    pub fn import(
        &self,
        lines: impl Iterator<Item = std::io::Result<String>>,
    ) -> Result<u64, LedgerError> {
        let mut state = self.state.lock().unwrap();
        if state.last_seq != 0 || !self.store.is_empty() {
            return Err(LedgerError::Invalid(format!(
                "the ledger at {} is not empty ({} events); import into a new directory with --ledger",
                self.dir.display(),
                state.last_seq
            )));
        }
        let mut records = Vec::new();
        let mut fresh = State::default();
        let mut prev = [0u8; 32];
        let mut n = 0u64;
        for (i, line) in lines.enumerate() {
            let line = line.map_err(|e| LedgerError::Invalid(format!("line {}: {e}", i + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            let expected = n + 1;
            let bad = |why: String| LedgerError::Verify {
                seq: expected,
                why: format!("line {}: {why}; nothing was imported", i + 1),
            };
            let parsed: ExportLine = serde_json::from_str(&line)
                .map_err(|e| bad(format!("not an exported event: {e}")))?;
            if parsed.kind != parsed.body.kind() {
                return Err(bad(format!(
                    "kind {:?} does not match its body ({})",
                    parsed.kind,
                    parsed.body.kind()
                )));
            }
            let (env, claimed) = parsed
                .to_envelope()
                .ok_or_else(|| bad("a hash is not 64 hex digits".into()))?;
            if env.seq != expected {
                return Err(bad(format!("expected event {expected}, found {}", env.seq)));
            }
            if env.prev_hash != prev {
                return Err(bad("its link to the previous event does not match".into()));
            }
            let (bytes, hash) = codec::encode(&env);
            if hash != claimed {
                return Err(bad("its content does not match its hash (tampered)".into()));
            }
            let ev = Event { env, hash };
            fresh.apply(&ev);
            prev = hash;
            records.push((ev.seq, bytes));
            n += 1;
        }
        // One atomic batch: an import is all or nothing.
        self.store.append(&records)?;
        self.store.flush()?;
        *state = fresh;
        let mut d = self.durable.lock().unwrap();
        d.appended = n;
        d.durable = n;
        Ok(n)
    }

    pub fn claim_runner(&self, workflow_id: WorkflowId) -> Result<(), LedgerError> {
        if !self.runners.lock().unwrap().insert(workflow_id) {
            return Err(LedgerError::Busy(format!(
                "workflow {workflow_id} is already being run by this ledger's owner process ({}); watch it with `torc-ledger status {workflow_id}`",
                super::owner_description(&self.dir)
            )));
        }
        Ok(())
    }

    pub fn release_runner(&self, workflow_id: WorkflowId) {
        self.runners.lock().unwrap().remove(&workflow_id);
    }

    /// Block until an event after `seq` is durable, or the timeout passes.
    pub fn wait_for_change(&self, seq: Seq, timeout: Duration) -> Seq {
        let c = self.changed_lock.lock().unwrap();
        let (c, _) = self
            .changed
            .wait_timeout_while(c, timeout, |last| *last <= seq)
            .unwrap();
        *c
    }

    /// Raw store access for tests and benchmarks.
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.store
    }
}
