//! Benchmarks for the ledger's hot paths.
//!
//! * `append_durable/store/{1,64,1024}`: encode N chained events, `Store::append`, `Store::flush`
//!   (one iteration = one batch + one fsync'ing flush).
//! * `append_durable/ledger/{1,64,1024}`: the same through `LocalLedger::execute` (decide, encode,
//!   append, fold, group-commit flush): `Initialize { Reinit }` of a workflow of N-1 jobs, which
//!   appends exactly N events (a `ResetStatus` between iterations, not timed, makes it valid
//!   again).
//! * `replay/{open,fold,verify}/{100k,1M}`: a ledger of exactly 100k / 1M events built once per
//!   process (through `decide` + `codec::encode` + `Store::append` in big batches, i.e. the
//!   events the real ledger would write for workflows of 1000 jobs run to completion, 2% of the
//!   jobs failing once and retried by a failure handler). `open` is `LocalLedger::open` (sled
//!   recovery + fold + link check), `fold` is the fold alone from an open store into a fresh
//!   `State`, `verify` is `LocalLedger::verify(None)` (recomputes every hash).
//! * `runner/1000_noop/{torc_runner,xargs}`: `run_workflow` on 1000 independent `true` jobs with
//!   max_parallel 2 in a fresh ledger vs `xargs -P2 -n1 bash -c` over 1000 `true`s. The per-job
//!   overhead (median runner − median xargs) / 1000 is printed after the group.
//!   `runner/1000_ledger_only` runs the same lifecycle through `execute` without processes.
//!
//! Targets (reported, not asserted): replay ≥ 1M events/s; batched durable append ≥ 100k
//! events/s; runner overhead < 5 ms/job beyond the process spawn.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use torc_ledger::decide::{decide, Command};
use torc_ledger::event::codec;
use torc_ledger::event::{Actor, Body, Envelope, Event, Exit, Hash, InitKind, Why};
use torc_ledger::ledger::{Ctx, Ledger, LocalLedger};
use torc_ledger::model::{
    FailureHandler, FailureRule, JobDef, JobId, JobStatus, Seq, WorkflowDef, WorkflowId,
};
use torc_ledger::runner::{run_workflow, RunOptions, StopReason};
use torc_ledger::state::State;
use torc_ledger::store::Store;

fn tempdir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("torc-bench-{tag}-"))
        .tempdir()
        .expect("create a temporary directory")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn user() -> Actor {
    Actor::User {
        name: "bench".into(),
    }
}

/// A workflow of `n` independent jobs running `true`. With `handler`, every job names a failure
/// handler that retries exit code 1 up to twice.
fn workflow_def(name: &str, n: usize, submit_dir: &str, handler: bool) -> WorkflowDef {
    let jobs = (0..n)
        .map(|i| JobDef {
            name: format!("j{i}"),
            command: "true".into(),
            depends_on: Vec::new(),
            resource_requirements: None,
            failure_handler: handler.then(|| "retry_ones".to_string()),
            cancel_on_blocking_job_failure: false,
            env: BTreeMap::new(),
            priority: 0,
        })
        .collect();
    WorkflowDef {
        name: name.into(),
        description: None,
        use_pending_failed: false,
        env: BTreeMap::new(),
        submit_dir: submit_dir.into(),
        jobs,
        resource_requirements: Vec::new(),
        failure_handlers: if handler {
            vec![FailureHandler {
                name: "retry_ones".into(),
                rules: vec![FailureRule {
                    exit_codes: vec![1],
                    match_all_exit_codes: false,
                    recovery_script: None,
                    max_retries: 2,
                }],
            }]
        } else {
            Vec::new()
        },
    }
}

fn exit_of(return_code: i64, duration_ms: u64) -> Exit {
    Exit {
        return_code,
        signal: None,
        duration_ms,
        peak_memory_bytes: Some(3 << 20),
        timed_out: false,
    }
}

fn log_path(out: &str, wf: u64, job: u64, attempt: u32, ext: &str) -> String {
    format!("{out}/job_stdio/job_wf{wf}_j{job}_r1_a{attempt}.{ext}")
}

// ---------------------------------------------------------------------------------------------
// 1. Durable append
// ---------------------------------------------------------------------------------------------

/// A realistic cycle of runner events for one job: start (status + JobStarted), finish
/// (JobFinished + status).
fn runner_bodies(n: usize) -> Vec<Body> {
    let out = "/scratch/bench/torc_output";
    (0..n)
        .map(|i| {
            let job_id = (i / 4) as JobId + 1;
            match i % 4 {
                0 => Body::StatusChanged {
                    job_id,
                    from: JobStatus::Ready,
                    to: JobStatus::Running,
                    attempt_id: 1,
                    prev_attempt_id: 1,
                    why: Why::Started,
                },
                1 => Body::JobStarted {
                    job_id,
                    run_id: 1,
                    attempt_id: 1,
                    stdout_path: log_path(out, 1, job_id, 1, "o"),
                    stderr_path: log_path(out, 1, job_id, 1, "e"),
                },
                2 => Body::JobFinished {
                    job_id,
                    run_id: 1,
                    attempt_id: 1,
                    exit: exit_of(0, 12),
                },
                _ => Body::StatusChanged {
                    job_id,
                    from: JobStatus::Running,
                    to: JobStatus::Completed,
                    attempt_id: 1,
                    prev_attempt_id: 1,
                    why: Why::Finished,
                },
            }
        })
        .collect()
}

/// A store and the head of its chain.
struct Chain {
    _dir: TempDir,
    store: Store,
    seq: Seq,
    prev: Hash,
    bodies: Vec<Body>,
    records: Vec<(Seq, Vec<u8>)>,
}

impl Chain {
    fn new(batch: usize) -> Chain {
        let dir = tempdir("append");
        let store = Store::open(dir.path()).expect("open store");
        Chain {
            _dir: dir,
            store,
            seq: 0,
            prev: [0; 32],
            bodies: runner_bodies(batch),
            records: Vec::with_capacity(batch),
        }
    }

    /// Encode one batch (chained to the previous one), append it and flush.
    fn append_batch(&mut self) {
        let time_ms = now_ms();
        let first = self.seq + 1;
        self.records.clear();
        for (i, body) in self.bodies.iter().enumerate() {
            let env = Envelope {
                seq: first + i as u64,
                time_ms,
                actor: Actor::Runner,
                cause: if i == 0 { Some(1) } else { Some(first) },
                index: i as u32,
                idempotency_key: None,
                prev_hash: self.prev,
                body: body.clone(),
            };
            let (bytes, hash) = codec::encode(&env);
            self.prev = hash;
            self.records.push((env.seq, bytes));
        }
        self.seq += self.bodies.len() as u64;
        self.store.append(&self.records).unwrap();
        self.store.flush().unwrap();
    }
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_durable");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    for n in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(n as u64));
        let mut chain = Chain::new(n);
        g.bench_function(BenchmarkId::new("store", n), |b| {
            b.iter(|| chain.append_batch())
        });
        drop(chain);

        // Through the façade: Initialize(Reinit) of an (n-1)-job workflow appends n events.
        let dir = tempdir("append-ledger");
        let ledger = LocalLedger::open(dir.path()).unwrap();
        let def = workflow_def("append", n - 1, &dir.path().display().to_string(), false);
        let ctx = Ctx {
            actor: user(),
            cause: None,
            idempotency_key: None,
        };
        ledger
            .execute(
                Command::CreateWorkflow {
                    def,
                    spec_digest: "bench".into(),
                },
                ctx.clone(),
            )
            .unwrap();
        let wf: WorkflowId = 1;
        ledger
            .execute(
                Command::Initialize {
                    workflow_id: wf,
                    kind: InitKind::Init,
                },
                ctx.clone(),
            )
            .unwrap();
        g.bench_function(BenchmarkId::new("ledger", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ledger
                        .execute(
                            Command::ResetStatus {
                                workflow_id: wf,
                                failed_only: false,
                            },
                            ctx.clone(),
                        )
                        .unwrap();
                    let t = Instant::now();
                    let a = ledger
                        .execute(
                            Command::Initialize {
                                workflow_id: wf,
                                kind: InitKind::Reinit,
                            },
                            ctx.clone(),
                        )
                        .unwrap();
                    total += t.elapsed();
                    assert_eq!(a.seqs.len(), n);
                }
                total
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Replay
// ---------------------------------------------------------------------------------------------

/// Writes what the ledger would write for a sequence of commands, without a flush per command.
struct Generator<'a> {
    store: &'a Store,
    state: State,
    pending: Vec<(Seq, Vec<u8>)>,
    target: u64,
    time_ms: u64,
}

impl Generator<'_> {
    fn room(&self) -> u64 {
        self.target - self.state.last_seq
    }

    /// Decide and record a command. `None` (nothing recorded) when its batch would go past the
    /// target.
    fn exec(&mut self, cmd: Command, actor: &Actor, cause: Option<Seq>) -> Option<Vec<Body>> {
        let bodies = decide(&self.state, &cmd).expect("the generated command is valid");
        if bodies.len() as u64 > self.room() {
            return None;
        }
        let first = self.state.last_seq + 1;
        self.time_ms += 7;
        let mut prev = self.state.last_hash;
        for (i, body) in bodies.iter().enumerate() {
            let env = Envelope {
                seq: first + i as u64,
                time_ms: self.time_ms,
                actor: actor.clone(),
                cause: if i == 0 { cause } else { Some(first) },
                index: i as u32,
                idempotency_key: None,
                prev_hash: prev,
                body: body.clone(),
            };
            let (bytes, hash) = codec::encode(&env);
            prev = hash;
            self.pending.push((env.seq, bytes));
            self.state.apply(&Event { env, hash });
        }
        if self.pending.len() >= 16 * 1024 {
            self.write();
        }
        Some(bodies)
    }

    fn write(&mut self) {
        if !self.pending.is_empty() {
            self.store.append(&self.pending).unwrap();
            self.pending.clear();
        }
    }
}

/// Newly ready jobs in a batch.
fn readied(bodies: &[Body], into: &mut VecDeque<JobId>) {
    for b in bodies {
        if let Body::StatusChanged {
            job_id,
            to: JobStatus::Ready,
            ..
        } = b
        {
            into.push_back(*job_id);
        }
    }
}

/// Build a ledger of exactly `target` events in `dir`: workflows of 1000 jobs, each run to the
/// end two jobs at a time; 2% of the jobs fail once (exit 1) and are retried by their handler.
/// When the next batch would overshoot, the rest is single-event `StopRunner` commands.
fn build_ledger(dir: &Path, target: u64) {
    let store = Store::open(dir).unwrap();
    let mut g = Generator {
        store: &store,
        state: State::default(),
        pending: Vec::new(),
        target,
        time_ms: 1_700_000_000_000,
    };
    let runner = Actor::Runner;
    let out = dir.join("out").display().to_string();
    let submit = dir.display().to_string();
    let mut last_wf = 0;
    'fill: while g.room() > 0 {
        let wf = g.state.next_workflow_id();
        let def = workflow_def(&format!("wf{wf}"), 1000, &submit, true);
        let create = Command::CreateWorkflow {
            def,
            spec_digest: format!("{wf:064x}"),
        };
        if g.exec(create, &user(), None).is_none() {
            break;
        }
        last_wf = wf;
        let start = Command::StartRunner {
            workflow_id: wf,
            max_parallel: 2,
        };
        let Some(bodies) = g.exec(start, &runner, None) else {
            break;
        };
        let session = g.state.last_seq + 1 - bodies.len() as u64;
        let mut ready = VecDeque::new();
        readied(&bodies, &mut ready);
        while !ready.is_empty() {
            let mut started = Vec::new();
            while started.len() < 2 {
                let Some(job) = ready.pop_front() else { break };
                let attempt = g.state.job(job).unwrap().attempt_id;
                let cmd = Command::StartJob {
                    job_id: job,
                    stdout_path: log_path(&out, wf, job, attempt, "o"),
                    stderr_path: log_path(&out, wf, job, attempt, "e"),
                };
                if g.exec(cmd, &runner, Some(session)).is_none() {
                    break 'fill;
                }
                started.push((job, attempt));
            }
            for (job, attempt) in started {
                let rc = if job % 50 == 7 && attempt == 1 { 1 } else { 0 };
                let cmd = Command::FinishJob {
                    job_id: job,
                    exit: exit_of(rc, 5 + job % 13),
                };
                let Some(bodies) = g.exec(cmd, &runner, None) else {
                    break 'fill;
                };
                readied(&bodies, &mut ready);
            }
        }
        let stop = Command::StopRunner {
            workflow_id: wf,
            outcome: "complete".into(),
        };
        if g.exec(stop, &runner, Some(session)).is_none() {
            break;
        }
    }
    while g.room() > 0 {
        let stop = Command::StopRunner {
            workflow_id: last_wf,
            outcome: "interrupted".into(),
        };
        g.exec(stop, &runner, None).unwrap();
    }
    g.write();
    store.flush().unwrap();
    assert_eq!(store.last().unwrap().0, target);
}

struct Fixture {
    dir: TempDir,
    events: u64,
    /// Open for `fold` and `verify`; closed for `open` (the database takes a lock).
    ledger: Option<LocalLedger>,
}

impl Fixture {
    fn ledger(&mut self) -> &LocalLedger {
        if self.ledger.is_none() {
            self.ledger = Some(LocalLedger::open(self.dir.path()).unwrap());
        }
        self.ledger.as_ref().unwrap()
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

static FIXTURES: Mutex<Vec<Fixture>> = Mutex::new(Vec::new());

/// The ledger of `events` events, built on first use and kept for this process.
fn with_fixture<R>(events: u64, f: impl FnOnce(&mut Fixture) -> R) -> R {
    let mut all = FIXTURES.lock().unwrap();
    if !all.iter().any(|fx| fx.events == events) {
        let dir = tempdir("replay");
        let t = Instant::now();
        build_ledger(dir.path(), events);
        eprintln!(
            "replay: built a ledger of {events} events in {:.1?} ({:.0} MB on disk)",
            t.elapsed(),
            dir_size(dir.path()) as f64 / 1e6,
        );
        all.push(Fixture {
            dir,
            events,
            ledger: None,
        });
    }
    let fx = all.iter_mut().find(|fx| fx.events == events).unwrap();
    f(fx)
}

/// What `LocalLedger::open` does after opening sled: fold every event, checking seqs and links.
fn fold(store: &Store) -> State {
    let mut state = State::default();
    let mut prev = [0u8; 32];
    for (expected, ev) in (1u64..).zip(store.range(1, u64::MAX, false)) {
        let ev = ev.unwrap();
        assert!(ev.seq == expected && ev.prev_hash == prev, "broken chain");
        prev = ev.hash;
        state.apply(&ev);
    }
    state
}

fn bench_replay(c: &mut Criterion) {
    for (label, events) in [("100k", 100_000u64), ("1M", 1_000_000)] {
        let mut g = c.benchmark_group("replay");
        g.throughput(Throughput::Elements(events));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        if events >= 1_000_000 {
            g.sampling_mode(SamplingMode::Flat);
            g.measurement_time(Duration::from_secs(8));
        } else {
            g.measurement_time(Duration::from_secs(4));
        }
        g.bench_function(BenchmarkId::new("open", label), |b| {
            with_fixture(events, |fx| {
                fx.ledger = None;
                let dir = fx.dir.path();
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let l = LocalLedger::open(dir).unwrap();
                        total += t.elapsed();
                        assert_eq!(l.last_seq(), events);
                        drop(l);
                    }
                    total
                })
            })
        });
        g.bench_function(BenchmarkId::new("fold", label), |b| {
            with_fixture(events, |fx| {
                let store = fx.ledger().store();
                b.iter_with_large_drop(|| {
                    let s = fold(store);
                    assert_eq!(s.last_seq, events);
                    s
                })
            })
        });
        g.bench_function(BenchmarkId::new("verify", label), |b| {
            with_fixture(events, |fx| {
                let ledger = fx.ledger();
                b.iter(|| {
                    let r = ledger.verify(None).unwrap();
                    assert!(r.chain_ok && r.events == events, "{r:?}");
                    black_box(r)
                })
            })
        });
        g.finish();
    }
    // Delete the ledgers (statics are never dropped).
    FIXTURES.lock().unwrap().clear();
}

// ---------------------------------------------------------------------------------------------
// 3. Runner vs xargs
// ---------------------------------------------------------------------------------------------

const RUNNER_JOBS: usize = 1000;

static RUNNER_TIMES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
static XARGS_TIMES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

/// A fresh ledger holding one workflow of `RUNNER_JOBS` no-op jobs (workflow 1).
fn runner_setup() -> (TempDir, Arc<LocalLedger>) {
    let dir = tempdir("runner");
    let ledger = LocalLedger::open(&dir.path().join("ledger")).unwrap();
    let def = workflow_def(
        "noop",
        RUNNER_JOBS,
        &dir.path().display().to_string(),
        false,
    );
    ledger
        .execute(
            Command::CreateWorkflow {
                def,
                spec_digest: "noop".into(),
            },
            Ctx {
                actor: user(),
                cause: None,
                idempotency_key: None,
            },
        )
        .unwrap();
    (dir, Arc::new(ledger))
}

/// Directories of finished runs, deleted after the group: this disk's ext4 has no journal, and
/// there creating a file right after thousands were deleted scans past every recently deleted
/// inode (`recently_deleted` in `find_inode_bit`), which would charge one iteration's cleanup
/// to the next one's log files.
static RUNNER_DIRS: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());

/// Drop the ledger once the runner's watcher thread has let go of it; keep its directory.
fn runner_teardown(dir: TempDir, ledger: Arc<LocalLedger>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&ledger) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(ledger);
    RUNNER_DIRS.lock().unwrap().push(dir);
}

fn run_once() -> Duration {
    let (dir, ledger) = runner_setup();
    let mut opts = RunOptions::new(dir.path().join("out"));
    opts.max_parallel = 2;
    let l = Ledger::Local(ledger.clone());
    let t = Instant::now();
    let report = run_workflow(&l, 1, &opts).unwrap();
    let took = t.elapsed();
    assert_eq!(report.reason, StopReason::Complete);
    assert_eq!(report.jobs_run, RUNNER_JOBS);
    drop(l);
    runner_teardown(dir, ledger);
    took
}

fn xargs_once(list: &Path) -> Duration {
    let t = Instant::now();
    let st = std::process::Command::new("xargs")
        .args(["-P2", "-n1", "bash", "-c"])
        .stdin(std::fs::File::open(list).unwrap())
        .status()
        .expect("run xargs");
    let took = t.elapsed();
    assert!(st.success());
    took
}

/// The same lifecycle as a run (StartRunner, StartJob/FinishJob per job, StopRunner) through
/// `execute`, without processes: the ledger's share of the runner's per-job cost.
fn ledger_only_once() -> Duration {
    let (dir, ledger) = runner_setup();
    let out = dir.path().join("out").display().to_string();
    let t = Instant::now();
    let a = ledger
        .execute(
            Command::StartRunner {
                workflow_id: 1,
                max_parallel: 2,
            },
            Ctx::runner(),
        )
        .unwrap();
    let session = a.head();
    for job in 1..=RUNNER_JOBS as JobId {
        ledger
            .execute(
                Command::StartJob {
                    job_id: job,
                    stdout_path: log_path(&out, 1, job, 1, "o"),
                    stderr_path: log_path(&out, 1, job, 1, "e"),
                },
                Ctx {
                    cause: Some(session),
                    ..Ctx::runner()
                },
            )
            .unwrap();
        ledger
            .execute(
                Command::FinishJob {
                    job_id: job,
                    exit: exit_of(0, 1),
                },
                Ctx::runner(),
            )
            .unwrap();
    }
    ledger
        .execute(
            Command::StopRunner {
                workflow_id: 1,
                outcome: "complete".into(),
            },
            Ctx::runner(),
        )
        .unwrap();
    let took = t.elapsed();
    runner_teardown(dir, ledger);
    took
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn bench_runner(c: &mut Criterion) {
    let list_dir = tempdir("xargs");
    let list = list_dir.path().join("list");
    std::fs::write(&list, "true\n".repeat(RUNNER_JOBS)).unwrap();

    let mut g = c.benchmark_group("runner");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(RUNNER_JOBS as u64));
    g.bench_function(BenchmarkId::new("1000_noop", "torc_runner"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = run_once();
                RUNNER_TIMES.lock().unwrap().push(d);
                total += d;
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("1000_noop", "xargs"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = xargs_once(&list);
                XARGS_TIMES.lock().unwrap().push(d);
                total += d;
            }
            total
        })
    });
    g.bench_function("1000_ledger_only", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| ledger_only_once()).sum())
    });
    g.finish();
    RUNNER_DIRS.lock().unwrap().clear();

    let runner = median(&RUNNER_TIMES.lock().unwrap());
    let xargs = median(&XARGS_TIMES.lock().unwrap());
    if let (Some(r), Some(x)) = (runner, xargs) {
        let per_job_ms = (r.as_secs_f64() - x.as_secs_f64()) * 1000.0 / RUNNER_JOBS as f64;
        println!(
            "runner/1000_noop: median torc runner {:.3} s, median xargs -P2 {:.3} s, \
             per-job overhead {per_job_ms:.3} ms (target < 5 ms)",
            r.as_secs_f64(),
            x.as_secs_f64()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench_append, bench_replay, bench_runner
}
criterion_main!(benches);
