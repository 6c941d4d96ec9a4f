//! Property tests: the ledger as a state machine.
//!
//! A generated list of abstract operations (create, init, reinit, reset, start/finish/interrupt
//! jobs, classify, apply proposals, undo, reopen, replay idempotent commands) is interpreted
//! against a real `LocalLedger`. Job and workflow ids are chosen by index modulo what exists,
//! so most operations are meaningful; refused commands are expected and checked too.
//!
//! Checked after every step:
//! - a refused command appends nothing and leaves the digest as it was; `preview` agrees with
//!   `execute` (same refusal, or exactly the bodies that were appended);
//! - an accepted command's seqs are the next ones, consecutive, one batch (index/cause);
//! - an incremental fold of the new events (a shadow `State`) has the live digest;
//! - oracles for what each command must do (status after start/finish/interrupt, classify
//!   effects, proposal apply outcomes: ok / unknown / already applied / stale, undo allowed);
//! - undo restores every job its target batch touched to its state before that batch, and the
//!   whole digest when the target was the last batch (so undo-of-undo returns to the digest
//!   before the undo); proposals' `applied_by` and classifications' `undone_by` follow an
//!   independent model of the undo chain;
//! - structure: every job id once, in place, one status; counts by status sum to the job count;
//!   the runner's ready list is exactly the ready jobs; a running job has an open attempt;
//! - dependencies (`check_deps`): a blocked job waits for at least one dependency that is not
//!   done; in a workflow never reset, a job past blocked has all dependencies done, a canceled
//!   job has a failed one, a job that cancels on blocking failure and was not canceled has none.
//!   They hold after undos too: undo refuses when a dependent moved on, and releases
//!   dependents that later events left waiting (`prop_dependency_invariants_hold_after_undo`
//!   and the two deterministic `prop_undo_of_*` tests reproduce the bugs this once had).
//!
//! Checked at the end: `verify` (chain, digest), a fold of `events(1..)`, `state(Some(n))`
//! against the prefix fold for every n, contiguous seqs and links, and reopening the directory.
//!
//! `PROP_CASES=N` runs more cases; `PROP_TRACE=1` prints every operation and refusal.

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use torc_ledger::decide::{ClassifyRequest, Command, DecideError};
use torc_ledger::event::{Actor, Body, Classification, Exit, InitKind, Override, Why};
use torc_ledger::ledger::{Appended, Ctx, LedgerError, LocalLedger};
use torc_ledger::model::{
    Action, FailureHandler, FailureRule, JobDef, JobId, JobStatus, Seq, WorkflowDef, WorkflowId,
};
use torc_ledger::state::{State, Workflow};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RuleGen {
    codes: Vec<i64>,
    match_all: bool,
    max_retries: u32,
    script: bool,
}

#[derive(Debug, Clone)]
struct JobGen {
    /// Bit d set: depends on job index d (only d below this job's index counts).
    dep_mask: u8,
    cancel: bool,
    handler: Option<u8>,
}

#[derive(Debug, Clone)]
struct WfGen {
    jobs: Vec<JobGen>,
    use_pending_failed: bool,
    handlers: Vec<Vec<RuleGen>>,
}

#[derive(Debug, Clone)]
enum Op {
    /// Create a workflow, and initialize it when `.1`.
    Create(WfGen, bool),
    Init {
        wf: u8,
    },
    Reinit {
        wf: u8,
    },
    Reset {
        wf: u8,
        failed_only: bool,
    },
    StartRunner {
        wf: u8,
    },
    Start {
        pick: u8,
    },
    Finish {
        pick: u8,
        rc: i64,
        timed_out: bool,
    },
    /// Start a ready job and finish it at once.
    Run {
        pick: u8,
        rc: i64,
    },
    Interrupt {
        pick: u8,
    },
    ScriptRan {
        pick: u8,
        rc: i64,
    },
    Classify {
        wf: u8,
        mask: u8,
        fails: u8,
        memory: Option<u64>,
        runtime: Option<u64>,
        dry_run: bool,
    },
    Apply {
        pick: u8,
    },
    /// Undo an undoable batch head (or, with `any`, any seq, even unknown ones).
    Undo {
        pick: u16,
        any: bool,
    },
    UndoLast,
    Replay {
        pick: u8,
    },
    Reopen,
}

const CODES: [i64; 5] = [1, 2, 3, 137, 152];

fn rule_gen() -> impl Strategy<Value = RuleGen> {
    (
        prop::collection::vec(prop::sample::select(CODES.to_vec()), 0..=2),
        prop::bool::weighted(0.3),
        0u32..=2,
        any::<bool>(),
    )
        .prop_map(|(codes, match_all, max_retries, script)| RuleGen {
            codes,
            match_all,
            max_retries,
            script,
        })
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (
        any::<u8>(),
        any::<bool>(),
        prop::option::weighted(0.4, any::<u8>()),
    )
        .prop_map(|(dep_mask, cancel, handler)| JobGen {
            dep_mask,
            cancel,
            handler,
        })
}

fn wf_gen() -> impl Strategy<Value = WfGen> {
    (
        prop::collection::vec(job_gen(), 1..=8),
        prop::bool::weighted(0.8),
        prop::collection::vec(prop::collection::vec(rule_gen(), 1..=2), 0..=2),
    )
        .prop_map(|(jobs, use_pending_failed, handlers)| WfGen {
            jobs,
            use_pending_failed,
            handlers,
        })
}

fn op_gen() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (wf_gen(), prop::bool::weighted(0.8)).prop_map(|(g, init)| Op::Create(g, init)),
        3 => any::<u8>().prop_map(|wf| Op::Init { wf }),
        2 => any::<u8>().prop_map(|wf| Op::Reinit { wf }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(wf, failed_only)| Op::Reset { wf, failed_only }),
        1 => any::<u8>().prop_map(|wf| Op::StartRunner { wf }),
        12 => any::<u8>().prop_map(|pick| Op::Start { pick }),
        12 => (
            any::<u8>(),
            prop::sample::select(vec![0i64, 0, 0, 1, 2, 3, 137]),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(pick, rc, timed_out)| Op::Finish {
                pick,
                rc: if timed_out { 152 } else { rc },
                timed_out,
            }),
        10 => (any::<u8>(), prop::sample::select(vec![0i64, 1, 2, 3, 137]))
            .prop_map(|(pick, rc)| Op::Run { pick, rc }),
        1 => any::<u8>().prop_map(|pick| Op::Interrupt { pick }),
        1 => (any::<u8>(), 0i64..2).prop_map(|(pick, rc)| Op::ScriptRan { pick, rc }),
        7 => (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            prop::option::weighted(0.15, prop::sample::select(vec![0u64, 1 << 20, 2 << 30, 4 << 30])),
            prop::option::weighted(0.15, prop::sample::select(vec![0u64, 60, 3600, 7200])),
            prop::bool::weighted(0.35),
        )
            .prop_map(|(wf, mask, fails, memory, runtime, dry_run)| Op::Classify {
                wf,
                mask,
                fails,
                memory,
                runtime,
                dry_run,
            }),
        3 => any::<u8>().prop_map(|pick| Op::Apply { pick }),
        3 => (any::<u16>(), prop::bool::weighted(0.3)).prop_map(|(pick, any)| Op::Undo { pick, any }),
        4 => Just(Op::UndoLast),
        1 => any::<u8>().prop_map(|pick| Op::Replay { pick }),
        1 => Just(Op::Reopen),
    ]
}

/// A workflow first (so that most operations have something to act on), then up to 40 more.
fn ops_gen() -> impl Strategy<Value = (WfGen, Vec<Op>)> {
    (wf_gen(), prop::collection::vec(op_gen(), 0..40))
}

fn build_def(g: &WfGen, n: usize) -> WorkflowDef {
    let handlers: Vec<FailureHandler> = g
        .handlers
        .iter()
        .enumerate()
        .map(|(i, rules)| FailureHandler {
            name: format!("h{i}"),
            rules: rules
                .iter()
                .map(|r| FailureRule {
                    exit_codes: r.codes.clone(),
                    match_all_exit_codes: r.match_all,
                    recovery_script: r.script.then(|| format!("recover-{i}.sh")),
                    max_retries: r.max_retries,
                })
                .collect(),
        })
        .collect();
    let jobs = g
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| JobDef {
            name: format!("w{n}j{i}"),
            command: "true".into(),
            depends_on: (0..i as u32)
                .filter(|&d| j.dep_mask & (1u8 << d) != 0)
                .collect(),
            resource_requirements: None,
            failure_handler: match (j.handler, handlers.len()) {
                (Some(h), n) if n > 0 => Some(format!("h{}", h as usize % n)),
                _ => None,
            },
            cancel_on_blocking_job_failure: j.cancel,
            env: BTreeMap::new(),
            priority: 0,
        })
        .collect();
    WorkflowDef {
        name: format!("wf{n}"),
        description: None,
        use_pending_failed: g.use_pending_failed,
        env: BTreeMap::new(),
        submit_dir: "/tmp".into(),
        jobs,
        resource_requirements: vec![],
        failure_handlers: handlers,
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: every command is acknowledged after an fsync.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("torc-prop-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn open(dir: &std::path::Path) -> LocalLedger {
    // A just-dropped sled handle may take a moment to let go of its lock. Snapshots are taken
    // after every 3 folded events, so reopening exercises "snapshot + the events after it".
    for _ in 0..100 {
        match LocalLedger::open_with_snapshots(dir, 3) {
            Ok(l) => return l,
            Err(LedgerError::Busy(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
    panic!("ledger at {} stays busy", dir.display());
}

fn ctx(key: Option<String>) -> Ctx {
    Ctx {
        actor: Actor::User {
            name: "prop".into(),
        },
        cause: None,
        idempotency_key: key,
    }
}

fn exit(rc: i64, timed_out: bool) -> Exit {
    Exit {
        return_code: rc,
        signal: None,
        duration_ms: 5,
        peak_memory_bytes: None,
        timed_out,
    }
}

fn is_undoable(b: &Body) -> bool {
    matches!(
        b,
        Body::ClassificationApplied { .. } | Body::StatusReset { .. } | Body::Undone { .. }
    )
}

fn fold(events: &[torc_ledger::event::Event]) -> State {
    let mut s = State::default();
    for ev in events {
        s.apply(ev);
    }
    s
}

/// A recorded batch.
#[derive(Debug, Clone)]
struct Batch {
    end: Seq,
    head: Body,
    /// Jobs whose status or override the batch changed.
    touched: BTreeSet<JobId>,
    /// Jobs any event of the batch names (what undo's "in the way" check looks at).
    named: BTreeSet<JobId>,
}

/// Counts over a whole property run, to make sure the generator reaches the interesting paths.
#[derive(Debug, Default, Clone)]
struct Coverage {
    cases: usize,
    ok: usize,
    refused: usize,
    classify_ok: usize,
    dry_runs: usize,
    apply_ok: usize,
    apply_stale: usize,
    apply_already: usize,
    undo_ok: usize,
    undo_of_undo_ok: usize,
    undo_strict_digest: usize,
    undo_refused: usize,
    replays: usize,
    reopens: usize,
    cancels: usize,
    handler_retries: usize,
}

struct Harness {
    dir: tempfile::TempDir,
    ledger: Option<LocalLedger>,
    /// Folded here from the events of each accepted command, independently of the ledger.
    shadow: State,
    batches: BTreeMap<Seq, Batch>,
    /// head seq → digest just before the batch.
    digest_before: BTreeMap<Seq, String>,
    /// batch end seq → digest just after the batch.
    digest_after: BTreeMap<Seq, String>,
    /// Commands sent with an idempotency key, and the seqs they appended.
    keyed: Vec<(String, Command, Vec<Seq>)>,
    /// Our own model of undo: undo seq → target.
    undo_of: BTreeMap<Seq, Seq>,
    /// Proposal → the classification that applied it.
    applied_by: BTreeMap<Seq, Seq>,
    /// Workflows that had a successful reset-status.
    reset_wfs: BTreeSet<WorkflowId>,
    /// Workflows in which an undo changed a job.
    undone_wfs: BTreeSet<WorkflowId>,
    /// Check the dependency invariants even where undo has been (exposes the undo bug).
    step: usize,
    cov: Coverage,
}

impl Harness {
    fn new() -> Harness {
        let dir = scratch();
        let ledger = open(dir.path());
        Harness {
            dir,
            ledger: Some(ledger),
            shadow: State::default(),
            batches: BTreeMap::new(),
            digest_before: BTreeMap::new(),
            digest_after: BTreeMap::new(),
            keyed: Vec::new(),
            undo_of: BTreeMap::new(),
            applied_by: BTreeMap::new(),
            reset_wfs: BTreeSet::new(),
            undone_wfs: BTreeSet::new(),
            step: 0,
            cov: Coverage::default(),
        }
    }

    fn l(&self) -> &LocalLedger {
        self.ledger.as_ref().expect("ledger open")
    }

    fn state(&self) -> State {
        self.l().state(None).expect("state")
    }

    /// An event is in effect when no undo that is itself in effect targets it.
    fn in_effect(&self, seq: Seq) -> bool {
        !self
            .undo_of
            .iter()
            .any(|(&u, &t)| t == seq && self.in_effect(u))
    }

    /// Run one command and check what must hold for any command. Returns the state before,
    /// the result and the state after.
    fn exec(
        &mut self,
        cmd: Command,
        key: Option<String>,
    ) -> (State, Result<Appended, LedgerError>, State) {
        self.step += 1;
        let before = self.state();
        let pre_digest = before.digest();
        let pre_last = before.last_seq;
        let preview = self.l().preview(cmd.clone());
        // Preview appends nothing.
        assert_eq!(self.l().last_seq(), pre_last, "preview appended");
        let res = self.l().execute(cmd.clone(), ctx(key.clone()));
        let after = self.state();
        match &res {
            Err(e) => {
                self.cov.refused += 1;
                if std::env::var("PROP_TRACE").is_ok() {
                    eprintln!("refused {cmd:?}: {e}");
                }
                assert_eq!(
                    after.last_seq, pre_last,
                    "refused command appended events: {cmd:?} → {e}"
                );
                assert_eq!(
                    after.digest(),
                    pre_digest,
                    "refused command changed the state: {cmd:?} → {e}"
                );
                assert!(
                    preview.is_err(),
                    "preview accepted {cmd:?} but execute refused it: {e}"
                );
            }
            Ok(app) => {
                self.cov.ok += 1;
                assert!(!app.replayed, "fresh command reported as replayed");
                assert!(!app.seqs.is_empty(), "accepted command appended nothing");
                let expected: Vec<Seq> =
                    (pre_last + 1..=pre_last + app.seqs.len() as u64).collect();
                assert_eq!(app.seqs, expected, "seqs not the next consecutive ones");
                let head = app.seqs[0];
                let end = *app.seqs.last().unwrap();
                assert_eq!(after.last_seq, end);
                let evs = self
                    .l()
                    .events(head, Some(end), usize::MAX)
                    .expect("events");
                assert_eq!(evs.len(), app.seqs.len());
                let bodies: Vec<Body> = evs.iter().map(|e| e.body.clone()).collect();
                match &preview {
                    Ok(p) => assert_eq!(p, &bodies, "preview differs from what was appended"),
                    Err(e) => panic!("preview refused {cmd:?} ({e}) but execute accepted it"),
                }
                let mut touched = BTreeSet::new();
                let mut named = BTreeSet::new();
                for (i, ev) in evs.iter().enumerate() {
                    assert_eq!(ev.seq, head + i as u64);
                    assert_eq!(ev.index, i as u32, "index within batch");
                    if i > 0 {
                        assert_eq!(ev.cause, Some(head), "batch member caused by its head");
                        assert_eq!(ev.prev_hash, evs[i - 1].hash);
                    }
                    assert_eq!(
                        ev.idempotency_key
                            .as_deref()
                            .map(|k| torc_ledger::state::split_idempotency_key(k).0),
                        key.as_deref()
                    );
                    if let Some(j) = ev.body.job_id() {
                        named.insert(j);
                    }
                    match &ev.body {
                        Body::StatusChanged { job_id, to, .. } => {
                            touched.insert(*job_id);
                            if *to == JobStatus::Canceled {
                                self.cov.cancels += 1;
                            }
                        }
                        Body::OverrideSet { job_id, .. } => {
                            touched.insert(*job_id);
                        }
                        Body::HandlerMatched { retry: true, .. } => self.cov.handler_retries += 1,
                        _ => {}
                    }
                    self.shadow.apply(ev);
                }
                assert_eq!(
                    evs[0].prev_hash, before.last_hash,
                    "link to the previous batch"
                );
                assert_eq!(
                    self.shadow.digest(),
                    after.digest(),
                    "incremental fold differs from the live state after {cmd:?}"
                );
                assert_eq!(self.shadow.last_hash, after.last_hash);
                self.digest_before.insert(head, pre_digest);
                self.digest_after.insert(end, after.digest());
                self.batches.insert(
                    head,
                    Batch {
                        end,
                        head: evs[0].body.clone(),
                        touched,
                        named,
                    },
                );
                if let Some(k) = key {
                    self.keyed.push((k, cmd.clone(), app.seqs.clone()));
                }
            }
        }
        (before, res, after)
    }

    fn check_invariants(&self, s: &State) {
        // Structure: every job once, in place, of the workflow that owns its range.
        let mut next_job = 1;
        for (wi, wf) in s.workflows.iter().enumerate() {
            assert_eq!(wf.id, wi as u64 + 1, "workflow ids dense");
            assert_eq!(wf.first_job_id, next_job, "job ids dense and global");
            next_job += wf.def.jobs.len() as u64;
            let counts = s.counts_by_status(wf);
            assert_eq!(
                counts.values().sum::<usize>(),
                wf.def.jobs.len(),
                "counts by status of workflow {} do not sum to its job count",
                wf.id
            );
            for (k, j) in s.jobs_of(wf).iter().enumerate() {
                assert_eq!(j.workflow_id, wf.id);
                assert_eq!(j.index, k as u32);
            }
            let ready: BTreeSet<JobId> = s
                .jobs_of(wf)
                .iter()
                .filter(|j| j.status == JobStatus::Ready)
                .map(|j| j.id)
                .collect();
            let view = s.runner_view(wf.id).expect("runner view");
            let view_ready: BTreeSet<JobId> = view.ready.iter().map(|r| r.job_id).collect();
            assert_eq!(
                view.ready.len(),
                view_ready.len(),
                "a job twice in the ready list"
            );
            assert_eq!(
                view_ready, ready,
                "runner's ready list is not the ready jobs"
            );
            assert_eq!(view.counts, counts);
            let deps_ok = check_deps(s, wf, !self.reset_wfs.contains(&wf.id));
            if let Err(why) = deps_ok {
                panic!("step {}: workflow {}: {why}", self.step, wf.id);
            }
        }
        assert_eq!(
            s.jobs.len() as u64,
            next_job - 1,
            "jobs outside any workflow"
        );
        for (i, j) in s.jobs.iter().enumerate() {
            assert_eq!(j.id, i as u64 + 1, "job ids in place");
            if j.status == JobStatus::Running {
                let a = j.attempts.last().expect("a running job has an attempt");
                assert_eq!(
                    a.attempt_id, j.attempt_id,
                    "job {} runs another attempt",
                    j.id
                );
                assert!(a.exit.is_none(), "job {} runs a finished attempt", j.id);
            }
        }
        // Proposals and classifications follow our own model of the undo chain.
        for (pid, p) in &s.proposals {
            let model = self
                .applied_by
                .get(pid)
                .copied()
                .filter(|c| self.in_effect(*c));
            assert_eq!(p.applied_by, model, "proposal {pid} applied_by");
        }
        for (cid, c) in &s.classifications {
            assert_eq!(
                c.undone_by.is_none(),
                self.in_effect(*cid),
                "classification {cid} undone_by {:?}",
                c.undone_by
            );
        }
    }

    fn reopen(&mut self) {
        let before = self.state();
        drop(self.ledger.take());
        self.ledger = Some(open(self.dir.path()));
        let after = self.state();
        assert_eq!(after.last_seq, before.last_seq, "reopen lost events");
        assert_eq!(after.digest(), before.digest(), "reopen changed the digest");
        assert_eq!(after.last_hash, before.last_hash);
        self.cov.reopens += 1;
    }

    // --- operations --------------------------------------------------------------------------

    fn pick_wf(&self, s: &State, wf: u8) -> WorkflowId {
        // One id past the end now and then: an unknown workflow must be refused.
        if wf % 16 == 15 {
            s.workflows.len() as u64 + 1
        } else {
            (wf as u64 / 16) % s.workflows.len() as u64 + 1
        }
    }

    /// A job in one of `statuses` if there is one, otherwise any job id (possibly unknown).
    fn pick_job(&self, s: &State, pick: u8, statuses: &[JobStatus]) -> JobId {
        let c: Vec<JobId> = s
            .jobs
            .iter()
            .filter(|j| statuses.contains(&j.status))
            .map(|j| j.id)
            .collect();
        if c.is_empty() {
            pick as u64 % (s.jobs.len() as u64 + 1) + 1
        } else {
            c[pick as usize % c.len()]
        }
    }

    fn run(&mut self, op: &Op) {
        let s = self.state();
        if std::env::var("PROP_TRACE").is_ok() {
            eprintln!("op {op:?}");
        }
        match op {
            Op::Create(g, init) => {
                let def = build_def(g, s.workflows.len() + 1);
                let n = def.jobs.len();
                let (before, res, after) = self.exec(
                    Command::CreateWorkflow {
                        def,
                        spec_digest: format!("spec{}", self.step),
                    },
                    None,
                );
                res.expect("create is never refused");
                assert_eq!(after.workflows.len(), before.workflows.len() + 1);
                assert_eq!(after.jobs.len(), before.jobs.len() + n);
                assert!(after.jobs[before.jobs.len()..]
                    .iter()
                    .all(|j| j.status == JobStatus::Uninitialized && j.attempt_id == 1));
                if *init {
                    let id = after.workflows.len() as u64;
                    let (_, res, _) = self.exec(
                        Command::Initialize {
                            workflow_id: id,
                            kind: InitKind::Init,
                        },
                        None,
                    );
                    res.expect("init of a new workflow");
                }
            }
            Op::Init { wf } | Op::Reinit { wf } => {
                let id = self.pick_wf(&s, *wf);
                let kind = if matches!(op, Op::Init { .. }) {
                    InitKind::Init
                } else {
                    InitKind::Reinit
                };
                let expect_ok = s.workflow(id).is_some_and(|w| {
                    let jobs = s.jobs_of(w);
                    !jobs
                        .iter()
                        .any(|j| matches!(j.status, JobStatus::Running | JobStatus::Pending))
                        && (kind == InitKind::Reinit
                            || jobs.iter().all(|j| j.status == JobStatus::Uninitialized))
                });
                let (before, res, after) = self.exec(
                    Command::Initialize {
                        workflow_id: id,
                        kind,
                    },
                    None,
                );
                assert_eq!(res.is_ok(), expect_ok, "{kind:?} {id}: {res:?}");
                if res.is_ok() {
                    let w = after.workflow(id).unwrap();
                    assert_eq!(w.run_id, before.workflow(id).unwrap().run_id + 1);
                    for j in after.jobs_of(w) {
                        assert_ne!(j.status, JobStatus::Uninitialized, "left uninitialized");
                        let was = before.job(j.id).unwrap().status;
                        if !matches!(was, JobStatus::Uninitialized | JobStatus::Blocked) {
                            assert_eq!(j.status, was, "init touched a job it must leave");
                        }
                    }
                }
            }
            Op::Reset { wf, failed_only } => {
                let id = self.pick_wf(&s, *wf);
                let expect_ok = s.workflow(id).is_some_and(|w| {
                    !s.jobs_of(w)
                        .iter()
                        .any(|j| matches!(j.status, JobStatus::Running | JobStatus::Pending))
                });
                let (before, res, after) = self.exec(
                    Command::ResetStatus {
                        workflow_id: id,
                        failed_only: *failed_only,
                    },
                    None,
                );
                assert_eq!(res.is_ok(), expect_ok, "reset {id}: {res:?}");
                if res.is_ok() {
                    self.reset_wfs.insert(id);
                    let w = after.workflow(id).unwrap();
                    for j in after.jobs_of(w) {
                        let was = before.job(j.id).unwrap().status;
                        let hit = !*failed_only
                            || matches!(
                                was,
                                JobStatus::Failed
                                    | JobStatus::Canceled
                                    | JobStatus::Terminated
                                    | JobStatus::PendingFailed
                            );
                        let want = if hit { JobStatus::Uninitialized } else { was };
                        assert_eq!(j.status, want, "reset of job {} (was {was})", j.id);
                    }
                }
            }
            Op::StartRunner { wf } => {
                let id = self.pick_wf(&s, *wf);
                let (_, res, after) = self.exec(
                    Command::StartRunner {
                        workflow_id: id,
                        max_parallel: 2,
                    },
                    None,
                );
                assert_eq!(
                    res.is_ok(),
                    s.workflow(id).is_some(),
                    "start runner: {res:?}"
                );
                if res.is_ok() {
                    let (wb, w) = (s.workflow(id).unwrap(), after.workflow(id).unwrap());
                    let busy = s
                        .jobs_of(wb)
                        .iter()
                        .any(|j| matches!(j.status, JobStatus::Running | JobStatus::Pending));
                    for (b, a) in s.jobs_of(wb).iter().zip(after.jobs_of(w)) {
                        match b.status {
                            // Left running by a runner that is gone: next attempt, ready.
                            JobStatus::Running | JobStatus::Pending => assert_eq!(
                                (a.status, a.attempt_id),
                                (JobStatus::Ready, b.attempt_id + 1)
                            ),
                            // Not busy: a reset (or never initialized) job gets a new run.
                            // (Busy: only the running jobs are taken back; reset jobs next to
                            // running ones only arise when jobs start outside a runner.)
                            JobStatus::Uninitialized if !busy => {
                                assert_ne!(a.status, JobStatus::Uninitialized)
                            }
                            _ => {}
                        }
                    }
                }
            }
            Op::Start { pick } => {
                let id = self.pick_job(&s, *pick, &[JobStatus::Ready]);
                let key = (self.step % 3 == 0).then(|| format!("start-{}", self.step));
                let (before, res, after) = self.exec(
                    Command::StartJob {
                        job_id: id,
                        stdout_path: format!("out{id}"),
                        stderr_path: format!("err{id}"),
                    },
                    key,
                );
                let was = before.job(id).map(|j| j.status);
                assert_eq!(
                    res.is_ok(),
                    was == Some(JobStatus::Ready),
                    "start {id}: {res:?}"
                );
                if res.is_ok() {
                    let (b, a) = (before.job(id).unwrap(), after.job(id).unwrap());
                    assert_eq!(a.status, JobStatus::Running);
                    assert_eq!(a.attempt_id, b.attempt_id);
                    assert_eq!(a.attempts.len(), b.attempts.len() + 1);
                }
            }
            Op::Finish {
                pick,
                rc,
                timed_out,
            } => {
                let id = self.pick_job(&s, *pick, &[JobStatus::Running]);
                let ex = exit(*rc, *timed_out);
                let expected = s
                    .job(id)
                    .filter(|j| j.status == JobStatus::Running)
                    .map(|_| expected_finish(&s, id, &ex));
                let (_, res, after) = self.exec(
                    Command::FinishJob {
                        job_id: id,
                        exit: ex,
                    },
                    None,
                );
                assert_eq!(res.is_ok(), expected.is_some(), "finish {id}: {res:?}");
                if let Some((status, attempt)) = expected {
                    let a = after.job(id).unwrap();
                    assert_eq!(
                        (a.status, a.attempt_id),
                        (status, attempt),
                        "job {id} after rc={rc} timed_out={timed_out}"
                    );
                }
            }
            Op::Run { pick, rc } => {
                let ready = s.jobs.iter().any(|j| j.status == JobStatus::Ready);
                if ready {
                    self.run(&Op::Start { pick: *pick });
                    let s = self.state();
                    let running: Vec<JobId> = s
                        .jobs
                        .iter()
                        .filter(|j| j.status == JobStatus::Running)
                        .map(|j| j.id)
                        .collect();
                    // Finish the job just started (the last one to have started).
                    let last = s
                        .jobs
                        .iter()
                        .filter(|j| j.status == JobStatus::Running)
                        .max_by_key(|j| j.last_seq)
                        .map(|j| j.id)
                        .expect("a job runs");
                    let idx = running.iter().position(|&j| j == last).unwrap() as u8;
                    self.run(&Op::Finish {
                        pick: idx,
                        rc: *rc,
                        timed_out: false,
                    });
                }
            }
            Op::Interrupt { pick } => {
                let id = self.pick_job(&s, *pick, &[JobStatus::Running]);
                let running = s.job(id).is_some_and(|j| j.status == JobStatus::Running);
                let (before, res, after) = self.exec(
                    Command::InterruptJob {
                        job_id: id,
                        exit: exit(130, false),
                    },
                    None,
                );
                assert_eq!(res.is_ok(), running, "interrupt {id}: {res:?}");
                if running {
                    let (b, a) = (before.job(id).unwrap(), after.job(id).unwrap());
                    assert_eq!(
                        (a.status, a.attempt_id),
                        (JobStatus::Ready, b.attempt_id + 1)
                    );
                }
            }
            Op::ScriptRan { pick, rc } => {
                let owing: Vec<JobId> = s
                    .jobs
                    .iter()
                    .filter(|j| j.owed_script.is_some())
                    .map(|j| j.id)
                    .collect();
                let id = if owing.is_empty() {
                    *pick as u64 % (s.jobs.len() as u64 + 1) + 1
                } else {
                    owing[*pick as usize % owing.len()]
                };
                let owes = s.job(id).is_some_and(|j| j.owed_script.is_some());
                let (_, res, after) = self.exec(
                    Command::RecoveryScriptRan {
                        job_id: id,
                        return_code: *rc,
                    },
                    None,
                );
                assert_eq!(res.is_ok(), owes, "script ran {id}: {res:?}");
                if owes {
                    assert_eq!(after.job(id).unwrap().owed_script, None);
                }
            }
            Op::Classify {
                wf,
                mask,
                fails,
                memory,
                runtime,
                dry_run,
            } => self.classify(&s, *wf, *mask, *fails, *memory, *runtime, *dry_run),
            Op::Apply { pick } => self.apply(&s, *pick),
            Op::Undo { pick, any } => {
                let heads: Vec<Seq> = self
                    .batches
                    .iter()
                    .filter(|(_, b)| is_undoable(&b.head))
                    .map(|(h, _)| *h)
                    .collect();
                let target = if *any || heads.is_empty() {
                    *pick as u64 % (s.last_seq + 2)
                } else {
                    heads[*pick as usize % heads.len()]
                };
                self.undo(&s, target);
            }
            Op::UndoLast => {
                let target = self
                    .batches
                    .iter()
                    .rev()
                    .find(|(_, b)| is_undoable(&b.head))
                    .map(|(h, _)| *h)
                    .unwrap_or(s.last_seq);
                self.undo(&s, target);
            }
            Op::Replay { pick } => {
                if self.keyed.is_empty() {
                    return;
                }
                let (k, cmd, seqs) = self.keyed[*pick as usize % self.keyed.len()].clone();
                let pre = (s.last_seq, s.digest());
                let app = self
                    .l()
                    .execute(cmd, ctx(Some(k.clone())))
                    .expect("a replayed key is answered, never refused");
                assert!(app.replayed, "key {k} not recognised");
                assert_eq!(app.seqs, seqs, "key {k} answered with other seqs");
                let now = self.state();
                assert_eq!((now.last_seq, now.digest()), pre, "replay appended");
                self.cov.replays += 1;
            }
            Op::Reopen => self.reopen(),
        }
        // After the op's own bookkeeping (undo chain, applied proposals) is up to date.
        let now = self.state();
        self.check_invariants(&now);
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &mut self,
        s: &State,
        wf: u8,
        mask: u8,
        fails: u8,
        memory: Option<u64>,
        runtime: Option<u64>,
        dry_run: bool,
    ) {
        let with_pf: Vec<&Workflow> = s
            .workflows
            .iter()
            .filter(|w| {
                s.jobs_of(w)
                    .iter()
                    .any(|j| j.status == JobStatus::PendingFailed)
            })
            .collect();
        let (workflow_id, jobs): (WorkflowId, Vec<JobId>) = if with_pf.is_empty() {
            // Nothing to classify: name some job anyway; it must be refused.
            let w = &s.workflows[wf as usize % s.workflows.len()];
            let n = w.def.jobs.len() as u64;
            (w.id, vec![w.first_job_id + mask as u64 % n])
        } else {
            let w = with_pf[wf as usize % with_pf.len()];
            let pf: Vec<JobId> = s
                .jobs_of(w)
                .iter()
                .filter(|j| j.status == JobStatus::PendingFailed)
                .map(|j| j.id)
                .collect();
            let mut chosen: Vec<JobId> = pf
                .iter()
                .enumerate()
                .filter(|(k, _)| mask & (1 << (k % 8)) != 0)
                .map(|(_, j)| *j)
                .collect();
            if chosen.is_empty() {
                chosen.push(pf[mask as usize % pf.len()]);
            }
            (w.id, chosen)
        };
        let items: Vec<Classification> = jobs
            .iter()
            .enumerate()
            .map(|(k, &job_id)| Classification {
                job_id,
                action: if fails & (1 << (k % 8)) != 0 {
                    Action::Fail
                } else {
                    Action::Retry
                },
                reason: format!("reason {k}"),
                // Only the first item gets the overrides (on a fail they must be refused).
                memory_bytes: if k == 0 { memory } else { None },
                runtime_seconds: if k == 0 { runtime } else { None },
            })
            .collect();
        let valid = items.iter().all(|it| {
            s.job(it.job_id).is_some_and(|j| {
                j.workflow_id == workflow_id && j.status == JobStatus::PendingFailed
            }) && !(it.action == Action::Fail
                && (it.memory_bytes.is_some() || it.runtime_seconds.is_some()))
                && it.memory_bytes != Some(0)
                && it.runtime_seconds != Some(0)
        });
        let key = (self.step % 2 == 0).then(|| format!("classify-{}", self.step));
        let (before, res, after) = self.exec(
            Command::Classify(ClassifyRequest {
                workflow_id,
                items: items.clone(),
                dry_run,
                evidence_digest: Some("ev".into()),
            }),
            key,
        );
        assert_eq!(res.is_ok(), valid, "classify {items:?}: {res:?}");
        if let Err(e) = &res {
            assert!(
                matches!(e, LedgerError::Decide(DecideError::ItemsRefused(_))),
                "refused for another reason: {e}"
            );
            return;
        }
        let head = res.unwrap().head();
        if dry_run {
            self.cov.dry_runs += 1;
            let p = after.proposals.get(&head).expect("proposal recorded");
            assert_eq!(p.items, items);
            assert_eq!(p.applied_by, None);
            let versions: Vec<(JobId, Seq)> = items
                .iter()
                .map(|it| (it.job_id, before.job(it.job_id).unwrap().last_seq))
                .collect();
            assert_eq!(p.job_versions, versions);
            for (b, a) in before.jobs.iter().zip(&after.jobs) {
                assert_eq!(
                    (b.status, b.attempt_id),
                    (a.status, a.attempt_id),
                    "dry run moved a job"
                );
            }
        } else {
            self.cov.classify_ok += 1;
            check_classified(&before, &after, &items);
        }
    }

    fn apply(&mut self, s: &State, pick: u8) {
        let ids: Vec<Seq> = s.proposals.keys().copied().collect();
        let pid = if ids.is_empty() {
            pick as u64
        } else {
            ids[pick as usize % ids.len()]
        };
        let (before, res, after) = self.exec(Command::ApplyProposal { proposal_id: pid }, None);
        match s.proposals.get(&pid) {
            None => assert!(
                matches!(res, Err(LedgerError::Decide(DecideError::UnknownProposal(p))) if p == pid),
                "apply unknown proposal {pid}: {res:?}"
            ),
            Some(p) => {
                let changed: Vec<(JobId, Seq, Seq)> = p
                    .job_versions
                    .iter()
                    .filter_map(|&(j, then)| {
                        let now = s.job(j).unwrap().last_seq;
                        (now != then).then_some((j, then, now))
                    })
                    .collect();
                if let Some(by) = p.applied_by {
                    self.cov.apply_already += 1;
                    match res {
                        Err(LedgerError::Decide(DecideError::AlreadyApplied {
                            proposal,
                            by: b,
                        })) => {
                            assert_eq!((proposal, b), (pid, by))
                        }
                        other => panic!("proposal {pid} applied by {by}, apply gave {other:?}"),
                    }
                } else if !changed.is_empty() {
                    self.cov.apply_stale += 1;
                    match res {
                        Err(LedgerError::Decide(DecideError::Stale {
                            proposal,
                            changed: c,
                        })) => {
                            assert_eq!((proposal, c), (pid, changed))
                        }
                        other => panic!("stale proposal {pid} ({changed:?}), apply gave {other:?}"),
                    }
                } else {
                    let app = res.unwrap_or_else(|e| panic!("fresh proposal {pid} refused: {e}"));
                    self.cov.apply_ok += 1;
                    let head = app.head();
                    self.applied_by.insert(pid, head);
                    assert_eq!(after.proposals[&pid].applied_by, Some(head));
                    assert_eq!(after.classifications[&head].proposal, Some(pid));
                    check_classified(&before, &after, &p.items);
                }
            }
        }
    }

    fn undo(&mut self, s: &State, target: Seq) {
        let batch = self.batches.get(&target).cloned();
        // Our own prediction: a head of an undoable kind, in effect, with no job it names, nor
        // a direct dependent of one, touched after it.
        let expect_ok = batch.as_ref().is_some_and(|b| {
            is_undoable(&b.head)
                && self.in_effect(target)
                && b.named.iter().all(|j| {
                    let job = s.job(*j).unwrap();
                    let wf = s.workflow(job.workflow_id).unwrap();
                    job.last_seq <= b.end
                        && wf.dependents[job.index as usize]
                            .iter()
                            .all(|&d| s.job(wf.job_id_of(d)).unwrap().last_seq <= b.end)
                })
        });
        let pre_last = s.last_seq;
        let (_, res, after) = self.exec(
            Command::Undo {
                target,
                batch: vec![],
            },
            None,
        );
        assert_eq!(
            res.is_ok(),
            expect_ok,
            "undo {target} ({:?}): {res:?}",
            batch.as_ref().map(|b| b.head.kind())
        );
        let Ok(app) = res else {
            self.cov.undo_refused += 1;
            return;
        };
        let b = batch.unwrap();
        self.cov.undo_ok += 1;
        if matches!(b.head, Body::Undone { .. }) {
            self.cov.undo_of_undo_ok += 1;
        }
        self.undo_of.insert(app.head(), target);
        // Every job the target changed is put back where it was before the target (the
        // compensating events); dependents that later events left waiting may then be released
        // in the same batch (events with another reason), never a job the target changed.
        let prior = self.l().state(Some(target - 1)).expect("state at");
        let undo_batch = self
            .l()
            .events(app.head(), app.seqs.last().copied(), usize::MAX)
            .expect("undo batch");
        let mut compensated = std::collections::HashSet::new();
        for ev in &undo_batch[1..] {
            if let Body::StatusChanged {
                job_id,
                to,
                attempt_id,
                why,
                ..
            } = &ev.body
            {
                if *why == Why::Undo {
                    let p = prior.job(*job_id).unwrap();
                    assert_eq!(
                        (p.status, p.attempt_id),
                        (*to, *attempt_id),
                        "undo {target}: job {job_id} not restored"
                    );
                    compensated.insert(*job_id);
                } else {
                    assert!(
                        matches!(why, Why::Unblocked | Why::UpstreamFailed { .. }),
                        "undo {target}: unexpected change {why:?} of job {job_id}"
                    );
                }
            }
        }
        for j in &b.touched {
            let (p, a) = (prior.job(*j).unwrap(), after.job(*j).unwrap());
            assert_eq!(
                p.resource_override, a.resource_override,
                "undo {target}: job {j} override not restored"
            );
            if !compensated.contains(j) {
                assert_eq!(
                    (p.status, p.attempt_id),
                    (a.status, a.attempt_id),
                    "undo {target}: job {j} not restored"
                );
            }
            self.undone_wfs.insert(a.workflow_id);
        }
        // When nothing came after the target, the whole digest is restored.
        if b.end == pre_last {
            self.cov.undo_strict_digest += 1;
            assert_eq!(
                after.digest(),
                self.digest_before[&target],
                "undo of the last batch {target} did not restore the digest before it"
            );
        }
    }
}

/// Torc's failure table, as the oracle for `FinishJob`: (status, attempt) afterwards.
fn expected_finish(s: &State, id: JobId, ex: &Exit) -> (JobStatus, u32) {
    let j = s.job(id).unwrap();
    let wf = s.workflow(j.workflow_id).unwrap();
    let def = &wf.def.jobs[j.index as usize];
    if ex.return_code == 0 && !ex.timed_out {
        return (JobStatus::Completed, j.attempt_id);
    }
    let failed = if ex.timed_out {
        JobStatus::Terminated
    } else {
        JobStatus::Failed
    };
    if let Some((_, rule)) = wf
        .def
        .handler_of(def)
        .and_then(|h| h.match_rule(ex.return_code))
    {
        let used = if j.handler_retries.0 == wf.run_id {
            j.handler_retries.1
        } else {
            0
        };
        return if used < rule.max_retries {
            (JobStatus::Ready, j.attempt_id + 1)
        } else {
            (failed, j.attempt_id)
        };
    }
    if wf.def.use_pending_failed {
        (JobStatus::PendingFailed, j.attempt_id)
    } else {
        (failed, j.attempt_id)
    }
}

/// What an applied classification must have done to each item's job.
fn check_classified(before: &State, after: &State, items: &[Classification]) {
    for it in items {
        let (b, a) = (
            before.job(it.job_id).unwrap(),
            after.job(it.job_id).unwrap(),
        );
        match it.action {
            Action::Retry => {
                assert_eq!(
                    (a.status, a.attempt_id),
                    (JobStatus::Ready, b.attempt_id + 1)
                );
                let want = Override {
                    memory_bytes: it.memory_bytes.or(b.resource_override.memory_bytes),
                    runtime_seconds: it.runtime_seconds.or(b.resource_override.runtime_seconds),
                };
                assert_eq!(a.resource_override, want);
            }
            Action::Fail => {
                assert_eq!((a.status, a.attempt_id), (JobStatus::Failed, b.attempt_id));
                assert_eq!(a.resource_override, b.resource_override);
            }
        }
    }
}

/// The dependency invariants of one workflow.
///
/// Always: a blocked job waits for at least one dependency that is not done (completed,
/// failed, canceled, terminated) — otherwise nothing will ever release it.
///
/// `full` (for workflows never reset, where a done job stays done): a job past blocked has all
/// its dependencies done; a canceled job has a failed/canceled/terminated dependency; a job with
/// `cancel_on_blocking_job_failure` that was not canceled has none.
fn check_deps(s: &State, wf: &Workflow, full: bool) -> Result<(), String> {
    for j in s.jobs_of(wf) {
        let def = &wf.def.jobs[j.index as usize];
        let deps: Vec<(JobId, JobStatus)> = def
            .depends_on
            .iter()
            .map(|&d| {
                let id = wf.job_id_of(d);
                (id, s.job(id).unwrap().status)
            })
            .collect();
        let all_done = deps.iter().all(|(_, st)| st.releases_dependents());
        let any_failed = deps.iter().any(|(_, st)| st.is_blocking_failure());
        let bad = |what: &str| {
            Err(format!(
                "job {} is {} but {what}; dependencies: {deps:?}",
                j.id, j.status
            ))
        };
        if j.status == JobStatus::Blocked && all_done {
            return bad("every dependency is done (nothing will release it)");
        }
        if !full {
            continue;
        }
        match j.status {
            JobStatus::Uninitialized | JobStatus::Blocked => {}
            JobStatus::Canceled => {
                if !(all_done && any_failed) {
                    return bad("no dependency failed");
                }
            }
            _ => {
                if !all_done {
                    return bad("a dependency is not done");
                }
                if def.cancel_on_blocking_job_failure && any_failed {
                    return bad("a dependency failed and it cancels on blocking failure");
                }
            }
        }
    }
    Ok(())
}

/// The end-of-sequence checks: replay equals live, time travel equals prefix folds, the chain
/// verifies, and reopening gives the same state.
fn final_checks(h: &mut Harness) {
    let live = h.state();
    let live_digest = live.digest();

    // 1. Replay equals live: verify's fresh fold, our fold of the events, and a reopen.
    let rep = h.l().verify(None).expect("verify");
    assert!(rep.chain_ok, "chain broken: {:?}", rep.first_bad);
    assert_eq!(rep.first_bad, None);
    assert_eq!(rep.last_seq, live.last_seq);
    assert_eq!(rep.events, live.last_seq);
    assert_eq!(
        rep.digest, live_digest,
        "verify's fold differs from the live state"
    );

    let evs = h.l().events(1, None, usize::MAX).expect("events");
    // 3. Seqs contiguous from 1, links unbroken, batches well formed.
    assert_eq!(evs.len() as u64, live.last_seq);
    let mut prev = [0u8; 32];
    for (i, ev) in evs.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1, "seq gap");
        assert_eq!(ev.prev_hash, prev, "broken link at {}", ev.seq);
        prev = ev.hash;
        if ev.index > 0 {
            assert_eq!(ev.cause, Some(ev.seq - ev.index as u64));
            assert_eq!(
                evs[i - 1].index + 1,
                ev.index,
                "batch index jumps at {}",
                ev.seq
            );
        }
    }
    // Every batch we recorded is exactly one head and its members.
    for (head, b) in &h.batches {
        for s in *head..=b.end {
            assert_eq!(evs[(s - 1) as usize].index as u64, s - head);
        }
        if let Some(next) = evs.get(b.end as usize) {
            assert_eq!(next.index, 0, "batch {head} runs on past {}", b.end);
        }
    }

    // 4. state(Some(n)) is the fold of the prefix 1..=n, for every n; and batch ends match
    //    the digests the live state had then.
    let mut s = State::default();
    assert_eq!(
        h.l().state(Some(0)).expect("state at 0").digest(),
        s.digest(),
        "state at 0 is not empty"
    );
    let stride = (evs.len() / 60).max(1);
    for (i, ev) in evs.iter().enumerate() {
        s.apply(ev);
        let n = ev.seq;
        if let Some(d) = h.digest_after.get(&n) {
            assert_eq!(
                &s.digest(),
                d,
                "prefix fold to {n} differs from the live digest then"
            );
        }
        if i % stride == 0 || i + 1 == evs.len() || h.batches.contains_key(&(n + 1)) {
            let at = h.l().state(Some(n)).expect("state at");
            assert_eq!(at.last_seq, n);
            assert_eq!(
                at.digest(),
                s.digest(),
                "state(Some({n})) differs from the prefix fold"
            );
        }
    }
    assert_eq!(
        s.digest(),
        live_digest,
        "fold of events(1..) differs from the live state"
    );
    assert_eq!(s.last_hash, live.last_hash);
    assert_eq!(fold(&evs).digest(), live_digest);
    if live.last_seq > 1 {
        let mid = live.last_seq / 2;
        assert_eq!(
            h.l().verify(Some(mid)).unwrap().digest,
            fold(&evs[..mid as usize]).digest(),
            "verify(Some({mid}))"
        );
    }

    h.reopen();
    let again = h.l().verify(None).expect("verify after reopen");
    assert!(again.chain_ok);
    assert_eq!(again.digest, live_digest);
}

fn run_case(wf: &WfGen, ops: &[Op], cov: &RefCell<Coverage>) {
    let mut h = Harness::new();
    h.run(&Op::Create(wf.clone(), true));
    for op in ops {
        h.run(op);
    }
    final_checks(&mut h);
    let mut c = cov.borrow_mut();
    let d = &h.cov;
    c.cases += 1;
    c.ok += d.ok;
    c.refused += d.refused;
    c.classify_ok += d.classify_ok;
    c.dry_runs += d.dry_runs;
    c.apply_ok += d.apply_ok;
    c.apply_stale += d.apply_stale;
    c.apply_already += d.apply_already;
    c.undo_ok += d.undo_ok;
    c.undo_of_undo_ok += d.undo_of_undo_ok;
    c.undo_strict_digest += d.undo_strict_digest;
    c.undo_refused += d.undo_refused;
    c.replays += d.replays;
    c.reopens += d.reopens;
    c.cancels += d.cancels;
    c.handler_retries += d.handler_retries;
}

fn run_property(cases: u32) -> Coverage {
    // PROP_CASES=5000 for a longer hunt.
    let cases = std::env::var("PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..PtConfig::default()
    });
    let cov = RefCell::new(Coverage::default());
    let result = runner.run(&ops_gen(), |(wf, ops)| {
        run_case(&wf, &ops, &cov);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    cov.into_inner()
}

#[test]
fn prop_ledger_state_machine() {
    let cov = run_property(256);
    eprintln!("coverage: {cov:?}");
    // The generator must reach the interesting paths, or the properties say little.
    assert!(cov.refused > 0 && cov.ok > cov.refused / 4, "{cov:?}");
    assert!(cov.classify_ok > 0 && cov.dry_runs > 0, "{cov:?}");
    assert!(
        cov.apply_ok > 0 && cov.apply_stale + cov.apply_already > 0,
        "{cov:?}"
    );
    assert!(
        cov.undo_ok > 0 && cov.undo_of_undo_ok > 0 && cov.undo_strict_digest > 0,
        "{cov:?}"
    );
    assert!(
        cov.undo_refused > 0 && cov.replays > 0 && cov.reopens > 0,
        "{cov:?}"
    );
    assert!(cov.cancels > 0 && cov.handler_retries > 0, "{cov:?}");
}

// ---------------------------------------------------------------------------------------------
// Focused deterministic tests
// ---------------------------------------------------------------------------------------------

fn job(name: &str, deps: &[u32], cancel: bool) -> JobDef {
    JobDef {
        name: name.into(),
        command: "true".into(),
        depends_on: deps.to_vec(),
        resource_requirements: None,
        failure_handler: None,
        cancel_on_blocking_job_failure: cancel,
        env: BTreeMap::new(),
        priority: 0,
    }
}

fn def(jobs: Vec<JobDef>) -> WorkflowDef {
    WorkflowDef {
        name: "wf".into(),
        description: None,
        use_pending_failed: true,
        env: BTreeMap::new(),
        submit_dir: "/tmp".into(),
        jobs,
        resource_requirements: vec![],
        failure_handlers: vec![],
    }
}

fn run_ok(l: &LocalLedger, cmd: Command) -> Appended {
    l.execute(cmd.clone(), ctx(None))
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn status(l: &LocalLedger, id: JobId) -> JobStatus {
    l.state(None).unwrap().job(id).unwrap().status
}

fn create_init(l: &LocalLedger, d: WorkflowDef) {
    run_ok(
        l,
        Command::CreateWorkflow {
            def: d,
            spec_digest: "d".into(),
        },
    );
    run_ok(
        l,
        Command::Initialize {
            workflow_id: 1,
            kind: InitKind::Init,
        },
    );
}

fn start_finish(l: &LocalLedger, id: JobId, rc: i64) {
    run_ok(
        l,
        Command::StartJob {
            job_id: id,
            stdout_path: "o".into(),
            stderr_path: "e".into(),
        },
    );
    run_ok(
        l,
        Command::FinishJob {
            job_id: id,
            exit: exit(rc, false),
        },
    );
}

fn classify_cmd(items: Vec<(JobId, Action)>, dry_run: bool) -> Command {
    Command::Classify(ClassifyRequest {
        workflow_id: 1,
        items: items
            .into_iter()
            .map(|(job_id, action)| Classification {
                job_id,
                action,
                reason: "test".into(),
                memory_bytes: None,
                runtime_seconds: None,
            })
            .collect(),
        dry_run,
        evidence_digest: None,
    })
}

fn undo_cmd(target: Seq) -> Command {
    Command::Undo {
        target,
        batch: vec![],
    }
}

fn assert_unchanged<T: std::fmt::Debug>(
    l: &LocalLedger,
    before: (Seq, String),
    res: &Result<T, LedgerError>,
) {
    let s = l.state(None).unwrap();
    assert!(res.is_err(), "expected a refusal, got {res:?}");
    assert_eq!(
        (s.last_seq, s.digest()),
        before,
        "refusal changed the ledger"
    );
}

fn mark(l: &LocalLedger) -> (Seq, String) {
    let s = l.state(None).unwrap();
    (s.last_seq, s.digest())
}

#[test]
fn prop_classify_fail_cascades_cancel_and_ready_then_undo_restores() {
    let dir = scratch();
    let l = open(dir.path());
    // 1: a; 2: b <- a (cancels); 3: c <- b (cancels: the cascade); 4: d <- a (does not cancel).
    create_init(
        &l,
        def(vec![
            job("a", &[], false),
            job("b", &[0], true),
            job("c", &[1], true),
            job("d", &[0], false),
        ]),
    );
    start_finish(&l, 1, 1);
    assert_eq!(status(&l, 1), JobStatus::PendingFailed);
    for id in 2..=4 {
        assert_eq!(
            status(&l, id),
            JobStatus::Blocked,
            "job {id}: a is parked, not done"
        );
    }
    let before = l.state(None).unwrap();
    let app = run_ok(&l, classify_cmd(vec![(1, Action::Fail)], false));
    let s = l.state(None).unwrap();
    let got: Vec<JobStatus> = (1..=4).map(|i| s.job(i).unwrap().status).collect();
    assert_eq!(
        got,
        vec![
            JobStatus::Failed,
            JobStatus::Canceled,
            JobStatus::Canceled,
            JobStatus::Ready
        ]
    );
    // The batch says why: b and c canceled for their upstream, d unblocked.
    let evs = l.events(app.head(), None, usize::MAX).unwrap();
    let whys: BTreeMap<JobId, Why> = evs
        .iter()
        .filter_map(|e| match &e.body {
            Body::StatusChanged { job_id, why, .. } => Some((*job_id, why.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(whys[&1], Why::Classified);
    assert_eq!(whys[&2], Why::UpstreamFailed { upstream: 1 });
    assert_eq!(whys[&3], Why::UpstreamFailed { upstream: 2 });
    assert_eq!(whys[&4], Why::Unblocked);
    let after_classify = s.digest();

    // Undo restores all four, and the digest from before the classification.
    let u = run_ok(&l, undo_cmd(app.head()));
    let s = l.state(None).unwrap();
    for id in 1..=4 {
        let (b, a) = (before.job(id).unwrap(), s.job(id).unwrap());
        assert_eq!(
            (a.status, a.attempt_id),
            (b.status, b.attempt_id),
            "job {id}"
        );
    }
    assert_eq!(s.digest(), before.digest());
    assert!(s.classifications[&app.head()].undone_by.is_some());
    // Undoing it again is refused; undoing the undo redoes it.
    let m = mark(&l);
    let again = l.execute(undo_cmd(app.head()), ctx(None));
    assert!(matches!(
        again,
        Err(LedgerError::Decide(DecideError::NotUndoable { .. }))
    ));
    assert_unchanged(&l, m, &again);
    run_ok(&l, undo_cmd(u.head()));
    assert_eq!(l.state(None).unwrap().digest(), after_classify);
    assert!(l.verify(None).unwrap().chain_ok);
}

#[test]
fn prop_proposal_goes_stale_and_applies_once() {
    let dir = scratch();
    let l = open(dir.path());
    create_init(&l, def(vec![job("a", &[], false), job("b", &[], false)]));
    start_finish(&l, 1, 3);
    start_finish(&l, 2, 3);
    assert_eq!(status(&l, 1), JobStatus::PendingFailed);
    assert_eq!(status(&l, 2), JobStatus::PendingFailed);

    // A dry run for a, then a changes (a direct classification): the proposal is stale.
    let p = run_ok(&l, classify_cmd(vec![(1, Action::Retry)], true)).head();
    assert_eq!(
        status(&l, 1),
        JobStatus::PendingFailed,
        "a dry run changes nothing"
    );
    let direct = run_ok(&l, classify_cmd(vec![(1, Action::Fail)], false)).head();
    let m = mark(&l);
    let res = l.execute(Command::ApplyProposal { proposal_id: p }, ctx(None));
    match &res {
        Err(LedgerError::Decide(DecideError::Stale { proposal, changed })) => {
            assert_eq!(*proposal, p);
            assert_eq!(changed.len(), 1);
            assert_eq!(changed[0].0, 1);
            assert_eq!(
                changed[0].2,
                direct + 1,
                "a's version now is its status change"
            );
        }
        other => panic!("expected stale, got {other:?}"),
    }
    assert_unchanged(&l, m, &res);

    // A dry run for b applies once; the second time it is already applied.
    let q = run_ok(&l, classify_cmd(vec![(2, Action::Retry)], true)).head();
    let applied = run_ok(&l, Command::ApplyProposal { proposal_id: q }).head();
    assert_eq!(status(&l, 2), JobStatus::Ready);
    let m = mark(&l);
    let res = l.execute(Command::ApplyProposal { proposal_id: q }, ctx(None));
    match &res {
        Err(LedgerError::Decide(DecideError::AlreadyApplied { proposal, by })) => {
            assert_eq!((*proposal, *by), (q, applied))
        }
        other => panic!("expected already applied, got {other:?}"),
    }
    assert_unchanged(&l, m, &res);
    // Unknown proposals (and non-proposal seqs) are refused too.
    let m = mark(&l);
    let res = l.execute(Command::ApplyProposal { proposal_id: 1 }, ctx(None));
    assert!(matches!(
        res,
        Err(LedgerError::Decide(DecideError::UnknownProposal(1)))
    ));
    assert_unchanged(&l, m, &res);
    // Undoing the apply frees the proposal, but b changed since its dry run: stale now.
    run_ok(&l, undo_cmd(applied));
    let s = l.state(None).unwrap();
    assert_eq!(s.proposals[&q].applied_by, None);
    assert_eq!(s.job(2).unwrap().status, JobStatus::PendingFailed);
    let m = mark(&l);
    let res = l.execute(Command::ApplyProposal { proposal_id: q }, ctx(None));
    assert!(
        matches!(res, Err(LedgerError::Decide(DecideError::Stale { .. }))),
        "{res:?}"
    );
    assert_unchanged(&l, m, &res);
}

#[test]
fn prop_idempotency_key_same_seqs_nothing_appended() {
    let dir = scratch();
    let mut l = open(dir.path());
    let d = def(vec![job("a", &[], false), job("b", &[0], false)]);
    let create = Command::CreateWorkflow {
        def: d,
        spec_digest: "d".into(),
    };
    let first = l.execute(create.clone(), ctx(Some("k1".into()))).unwrap();
    assert!(!first.replayed);
    assert_eq!(first.seqs, vec![1]);
    let init = l
        .execute(
            Command::Initialize {
                workflow_id: 1,
                kind: InitKind::Init,
            },
            ctx(Some("k2".into())),
        )
        .unwrap();
    assert_eq!(
        init.seqs,
        vec![2, 3, 4],
        "run initialized, a ready, b blocked"
    );
    let m = mark(&l);

    // Same key, same command: same seqs, nothing appended, no second workflow.
    let again = l.execute(create.clone(), ctx(Some("k1".into()))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.seqs, first.seqs);
    assert_eq!(mark(&l), m);
    assert_eq!(l.state(None).unwrap().workflows.len(), 1);
    // A multi-event batch answers with all its seqs — even though init would now be refused.
    let again = l
        .execute(
            Command::Initialize {
                workflow_id: 1,
                kind: InitKind::Init,
            },
            ctx(Some("k2".into())),
        )
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.seqs, vec![2, 3, 4]);
    assert_eq!(mark(&l), m);
    // Without a key the same create is a new workflow.
    let fresh = l.execute(create.clone(), ctx(None)).unwrap();
    assert_eq!(fresh.seqs, vec![5]);
    let m = mark(&l);
    // The keys survive a reopen (they are folded from the log).
    drop(l);
    l = open(dir.path());
    let again = l.execute(create, ctx(Some("k1".into()))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.seqs, vec![1]);
    assert_eq!(mark(&l), m);
    // A refused command with a key records nothing, so the key stays free.
    let bad = l.execute(
        Command::StartJob {
            job_id: 2,
            stdout_path: "o".into(),
            stderr_path: "e".into(),
        },
        ctx(Some("k3".into())),
    );
    assert_unchanged(&l, m.clone(), &bad);
    let ok = l
        .execute(
            Command::StartJob {
                job_id: 1,
                stdout_path: "o".into(),
                stderr_path: "e".into(),
            },
            ctx(Some("k3".into())),
        )
        .unwrap();
    assert!(!ok.replayed);
    assert_eq!(ok.seqs, vec![m.0 + 1, m.0 + 2]);
}

#[test]
fn prop_dependency_invariants_hold_after_undo() {
    run_property(1000);
}

/// Either the undo is refused, or afterwards the workflow's dependencies are consistent.
fn assert_undo_consistent(l: &LocalLedger, target: Seq, full: bool) {
    let res = l.execute(undo_cmd(target), ctx(None));
    if res.is_ok() {
        let s = l.state(None).unwrap();
        let wf = s.workflow(1).unwrap();
        if let Err(why) = check_deps(&s, wf, full) {
            panic!("undo {target} was accepted and left: {why}");
        }
    }
}

#[test]
fn prop_undo_of_reset_does_not_strand_a_blocked_dependent() {
    let dir = scratch();
    let l = open(dir.path());
    // 1: a; 2: b; 3: c <- a, b. No pending_failed: a's failure is final.
    let mut d = def(vec![
        job("a", &[], false),
        job("b", &[], false),
        job("c", &[0, 1], false),
    ]);
    d.use_pending_failed = false;
    create_init(&l, d);
    start_finish(&l, 1, 1);
    assert_eq!(status(&l, 1), JobStatus::Failed);
    assert_eq!(status(&l, 3), JobStatus::Blocked, "b is not done yet");
    let reset = run_ok(
        &l,
        Command::ResetStatus {
            workflow_id: 1,
            failed_only: true,
        },
    )
    .head();
    start_finish(&l, 2, 0);
    assert_eq!(status(&l, 3), JobStatus::Blocked, "a is uninitialized");
    // Undo the reset: a is failed again, b completed — c must not stay blocked for ever.
    assert_undo_consistent(&l, reset, false);
}

#[test]
fn prop_undo_of_fail_does_not_orphan_a_released_dependent() {
    let dir = scratch();
    let l = open(dir.path());
    // 1: a; 2: b; 3: c <- a, b (cancels on blocking failure).
    create_init(
        &l,
        def(vec![
            job("a", &[], false),
            job("b", &[], false),
            job("c", &[0, 1], true),
        ]),
    );
    start_finish(&l, 1, 1);
    let fail = run_ok(&l, classify_cmd(vec![(1, Action::Fail)], false)).head();
    assert_eq!(status(&l, 3), JobStatus::Blocked, "b is not done yet");
    start_finish(&l, 2, 0);
    assert_eq!(
        status(&l, 3),
        JobStatus::Canceled,
        "a failed, b done: c cancels"
    );
    // Undo the fail: a is pending_failed again — c cannot stay canceled because of it.
    assert_undo_consistent(&l, fail, true);
}
