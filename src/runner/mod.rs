//! The local runner: runs a workflow's ready jobs under bash, at most `max_parallel` at once,
//! records every start and end through the ledger, and returns as soon as nothing can make
//! progress.

pub mod logs;
pub mod process;

use crate::decide::{Command, DecideError};
use crate::event::Exit;
use crate::ledger::{Ctx, Ledger, LedgerError};
use crate::model::{JobId, JobStatus, WorkflowId};
use crate::state::{ReadyJob, RunnerView};
use process::{ProcessExit, ProcessSpec};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub max_parallel: usize,
    /// Absolute; job logs go to `<output_dir>/job_stdio/`.
    pub output_dir: PathBuf,
    /// Set (by Ctrl-C) to stop running jobs and return.
    pub stop: Arc<AtomicBool>,
    /// Grace between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
}

impl RunOptions {
    pub fn new(output_dir: PathBuf) -> RunOptions {
        RunOptions {
            max_parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            output_dir,
            stop: Arc::new(AtomicBool::new(false)),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every job completed.
    Complete,
    /// Nothing left to run, but some jobs failed, were canceled or terminated.
    Failed,
    /// Jobs are parked in pending_failed; their dependents wait.
    AwaitingClassification,
    /// Stopped by Ctrl-C; `run` again resumes.
    Interrupted,
    /// Jobs remain that nothing will make ready (for example disabled or uninitialized upstream).
    Stalled,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub workflow_id: WorkflowId,
    pub workflow_name: String,
    pub run_id: u64,
    pub reason: StopReason,
    pub counts: BTreeMap<JobStatus, usize>,
    pub jobs_run: usize,
}

enum Msg {
    /// The job's recovery script started (its process group).
    ScriptStarted(JobId, i32),
    /// The job's own process started (its process group).
    Started(JobId, i32),
    Ended(JobId),
    Changed,
}

struct Running {
    /// The process group running now (the recovery script, then the job).
    pgid: Option<i32>,
    /// When to kill it; the clock starts when the process does. `None`: nothing to kill yet,
    /// or a runtime too large to represent (no limit).
    deadline: Option<Instant>,
    runtime: Duration,
    in_script: bool,
}

/// `now + d`, or `None` when that is beyond what an `Instant` can hold.
fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

pub fn log_paths(
    out: &Path,
    wf: WorkflowId,
    job: JobId,
    run: u64,
    attempt: u32,
) -> (PathBuf, PathBuf) {
    let dir = out.join("job_stdio");
    let base = format!("job_wf{wf}_j{job}_r{run}_a{attempt}");
    (dir.join(format!("{base}.o")), dir.join(format!("{base}.e")))
}

/// Run the workflow until nothing can make progress.
pub fn run_workflow(
    ledger: &Ledger,
    workflow_id: WorkflowId,
    opts: &RunOptions,
) -> Result<RunReport, LedgerError> {
    ledger.claim_runner(workflow_id)?;
    let result = run_claimed(ledger, workflow_id, opts);
    ledger.release_runner(workflow_id);
    result
}

fn run_claimed(
    ledger: &Ledger,
    workflow_id: WorkflowId,
    opts: &RunOptions,
) -> Result<RunReport, LedgerError> {
    let max_parallel = opts.max_parallel.max(1);
    let start = ledger.execute(
        Command::StartRunner {
            workflow_id,
            max_parallel: max_parallel as u32,
        },
        Ctx::runner(),
    )?;
    let session = start.head();
    std::fs::create_dir_all(opts.output_dir.join("job_stdio")).map_err(|e| {
        LedgerError::Invalid(format!(
            "cannot create the output directory {}: {e}",
            opts.output_dir.display()
        ))
    })?;

    let (tx, rx) = mpsc::channel::<Msg>();
    let timed_out: Arc<Mutex<HashSet<JobId>>> = Default::default();
    let interrupted = Arc::new(AtomicBool::new(false));
    // A worker that cannot record its job's end stops the run (the ledger is unwell).
    let worker_error: Arc<Mutex<Option<LedgerError>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    // Wake the loop when another process (or this one) changes the ledger.
    {
        let ledger = ledger.clone();
        let tx = tx.clone();
        let done = done.clone();
        let mut seen = ledger.runner_view(workflow_id)?.last_seq;
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match ledger.wait_for_change(seen, Duration::from_millis(200)) {
                    Ok(last) if last > seen => {
                        seen = last;
                        if tx.send(Msg::Changed).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
    }

    let mut running: HashMap<JobId, Running> = HashMap::new();
    let mut jobs_run = 0usize;
    let mut failure: Option<LedgerError> = None;
    let mut view: RunnerView;
    loop {
        if opts.stop.load(Ordering::Relaxed) && !interrupted.load(Ordering::Relaxed) {
            interrupted.store(true, Ordering::SeqCst);
            for r in running.values() {
                if let Some(pgid) = r.pgid {
                    process::kill_group(pgid, libc::SIGTERM);
                }
            }
            let grace = deadline_after(opts.stop_grace);
            for r in running.values_mut() {
                if r.pgid.is_some() {
                    r.deadline = match (r.deadline, grace) {
                        (Some(d), Some(g)) => Some(d.min(g)),
                        (d, g) => d.or(g),
                    };
                }
            }
        }
        view = ledger.runner_view(workflow_id)?;
        if !interrupted.load(Ordering::Relaxed) && failure.is_none() {
            let free = max_parallel.saturating_sub(running.len());
            let ready: Vec<&ReadyJob> = view
                .ready
                .iter()
                .filter(|j| !running.contains_key(&j.job_id))
                .take(free)
                .collect();
            for job in ready {
                let (o, e) = log_paths(
                    &opts.output_dir,
                    workflow_id,
                    job.job_id,
                    view.run_id,
                    job.attempt_id,
                );
                let started = ledger.execute(
                    Command::StartJob {
                        job_id: job.job_id,
                        stdout_path: o.display().to_string(),
                        stderr_path: e.display().to_string(),
                    },
                    Ctx {
                        cause: Some(session),
                        ..Ctx::runner()
                    },
                );
                match started {
                    Ok(_) => {}
                    // Someone else changed it between our look and our claim: look again.
                    Err(LedgerError::Decide(DecideError::WrongStatus { .. })) => continue,
                    Err(e) => return Err(e),
                }
                jobs_run += 1;
                running.insert(
                    job.job_id,
                    Running {
                        pgid: None,
                        deadline: None,
                        runtime: Duration::from_secs(job.runtime_seconds.max(1)),
                        in_script: false,
                    },
                );
                spawn_worker(
                    ledger.clone(),
                    job.clone(),
                    workflow_id,
                    view.run_id,
                    view.submit_dir.clone(),
                    opts.output_dir.clone(),
                    (o, e),
                    tx.clone(),
                    timed_out.clone(),
                    interrupted.clone(),
                    worker_error.clone(),
                );
            }
        }
        if running.is_empty() {
            // Re-read: our own starts may have changed nothing; is there still work?
            let again = ledger.runner_view(workflow_id)?;
            if again.ready.is_empty() || interrupted.load(Ordering::Relaxed) || failure.is_some() {
                view = again;
                break;
            }
            continue;
        }
        // Wait for a job to start or end, a ledger change, a deadline or Ctrl-C.
        let now = Instant::now();
        let wait = running
            .values()
            .filter_map(|r| r.deadline)
            .min()
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(100));
        let msg = rx.recv_timeout(wait);
        let script_started = matches!(msg, Ok(Msg::ScriptStarted(..)));
        match msg {
            Ok(Msg::ScriptStarted(job, pgid)) | Ok(Msg::Started(job, pgid))
                if running.contains_key(&job) =>
            {
                let r = running.get_mut(&job).expect("checked");
                r.pgid = Some(pgid);
                r.in_script = script_started;
                r.deadline = deadline_after(r.runtime);
                if interrupted.load(Ordering::Relaxed) {
                    // Started just as we were stopping: stop it too.
                    process::kill_group(pgid, libc::SIGTERM);
                    r.deadline = deadline_after(opts.stop_grace);
                }
            }
            Ok(Msg::ScriptStarted(..)) | Ok(Msg::Started(..)) => {}
            Ok(Msg::Ended(job)) => {
                running.remove(&job);
            }
            Ok(Msg::Changed) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let now = Instant::now();
        for (job, r) in running.iter_mut() {
            if r.deadline.is_some_and(|d| d <= now) {
                if let Some(pgid) = r.pgid {
                    // A recovery script past the job's runtime is killed; the job then runs with
                    // its own full runtime. The job itself past it is a timeout.
                    if !interrupted.load(Ordering::Relaxed) && !r.in_script {
                        timed_out.lock().unwrap().insert(*job);
                    }
                    process::kill_group(pgid, libc::SIGKILL);
                    // Check again shortly if it does not die.
                    r.deadline = deadline_after(Duration::from_secs(1));
                }
            }
        }
        if let Some(e) = worker_error.lock().unwrap().take() {
            failure = Some(e);
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(e);
    }
    let reason = if interrupted.load(Ordering::Relaxed) {
        StopReason::Interrupted
    } else {
        reason_of(&view.counts)
    };
    let outcome = match reason {
        StopReason::Complete => "complete",
        StopReason::Failed => "failed",
        StopReason::AwaitingClassification => "awaiting_classification",
        StopReason::Interrupted => "interrupted",
        StopReason::Stalled => "stalled",
    };
    ledger.execute(
        Command::StopRunner {
            workflow_id,
            outcome: outcome.into(),
        },
        Ctx {
            cause: Some(session),
            ..Ctx::runner()
        },
    )?;
    Ok(RunReport {
        workflow_id,
        workflow_name: view.workflow_name,
        run_id: view.run_id,
        reason,
        counts: view.counts,
        jobs_run,
    })
}

pub fn reason_of(counts: &BTreeMap<JobStatus, usize>) -> StopReason {
    let n = |s: JobStatus| counts.get(&s).copied().unwrap_or(0);
    if n(JobStatus::PendingFailed) > 0 {
        StopReason::AwaitingClassification
    } else if counts.iter().any(|(s, c)| *c > 0 && !s.is_done()) {
        StopReason::Stalled
    } else if n(JobStatus::Failed) + n(JobStatus::Canceled) + n(JobStatus::Terminated) > 0 {
        StopReason::Failed
    } else {
        StopReason::Complete
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_worker(
    ledger: Ledger,
    job: ReadyJob,
    workflow_id: WorkflowId,
    run_id: u64,
    submit_dir: String,
    output_dir: PathBuf,
    (stdout, stderr): (PathBuf, PathBuf),
    tx: mpsc::Sender<Msg>,
    timed_out: Arc<Mutex<HashSet<JobId>>>,
    interrupted: Arc<AtomicBool>,
    worker_error: Arc<Mutex<Option<LedgerError>>>,
) {
    std::thread::spawn(move || {
        let mut env = job.env.clone();
        env.extend([
            ("TORC_WORKFLOW_ID".to_string(), workflow_id.to_string()),
            ("TORC_RUN_ID".to_string(), run_id.to_string()),
            ("TORC_JOB_ID".to_string(), job.job_id.to_string()),
            ("TORC_JOB_NAME".to_string(), job.name.clone()),
            (
                "TORC_OUTPUT_DIR".to_string(),
                output_dir.display().to_string(),
            ),
            ("TORC_ATTEMPT_ID".to_string(), job.attempt_id.to_string()),
            (
                "TORC_LEDGER_DIR".to_string(),
                ledger.dir().display().to_string(),
            ),
            (
                "TORC_WORKFLOW_SUBMISSION_DIR".to_string(),
                submit_dir.clone(),
            ),
        ]);
        let ctx = Ctx::runner();
        let report = |res: Result<_, LedgerError>| {
            if let Err(e) = res {
                worker_error.lock().unwrap().get_or_insert(e);
            }
        };
        // A failure handler's recovery script runs before the retry, with the failed attempt's
        // return code; its stdio goes to the new attempt's logs. Like Torc, a failing script is
        // recorded and the retry goes ahead.
        if let Some((script, rc)) = &job.owed_script {
            let mut senv = env.clone();
            senv.push(("TORC_RETURN_CODE".into(), rc.to_string()));
            let spec = ProcessSpec {
                command: script.clone(),
                cwd: PathBuf::from(&submit_dir),
                env: senv,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                append: false,
            };
            let code = match process::spawn(&spec) {
                Ok(pid) => {
                    let _ = tx.send(Msg::ScriptStarted(job.job_id, pid));
                    process::wait(pid).map(|x| x.return_code).unwrap_or(127)
                }
                Err(_) => 127,
            };
            report(ledger.execute(
                Command::RecoveryScriptRan {
                    job_id: job.job_id,
                    return_code: code,
                },
                ctx.clone(),
            ));
        }
        if interrupted.load(Ordering::SeqCst) {
            // Stopped while the recovery script ran: the job does not start.
            report(ledger.execute(
                Command::InterruptJob {
                    job_id: job.job_id,
                    exit: Exit {
                        return_code: 130,
                        signal: None,
                        duration_ms: 0,
                        peak_memory_bytes: None,
                        timed_out: false,
                    },
                },
                ctx,
            ));
            let _ = tx.send(Msg::Ended(job.job_id));
            return;
        }
        let spec = ProcessSpec {
            command: job.command.clone(),
            cwd: PathBuf::from(&submit_dir),
            env,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            append: job.owed_script.is_some(),
        };
        let began = Instant::now();
        let exit = match process::spawn(&spec) {
            Ok(pid) => {
                let _ = tx.send(Msg::Started(job.job_id, pid));
                process::wait(pid)
            }
            Err(e) => {
                // bash missing or the directory gone: record it as the job's failure.
                let _ = std::fs::write(
                    &stderr,
                    format!("torc-ledger: cannot start the job in {submit_dir}: {e}\n"),
                );
                Ok(ProcessExit {
                    return_code: 127,
                    signal: None,
                    peak_memory_bytes: None,
                })
            }
        };
        let exit = exit.unwrap_or(ProcessExit {
            return_code: 127,
            signal: None,
            peak_memory_bytes: None,
        });
        let was_timeout = timed_out.lock().unwrap().remove(&job.job_id);
        let record = Exit {
            // Torc records a job killed at its runtime limit with 152 (as Slurm's TIMEOUT).
            return_code: if was_timeout { 152 } else { exit.return_code },
            signal: exit.signal,
            duration_ms: began.elapsed().as_millis() as u64,
            peak_memory_bytes: exit.peak_memory_bytes,
            timed_out: was_timeout,
        };
        let cmd = if interrupted.load(Ordering::SeqCst) && record.return_code != 0 {
            Command::InterruptJob {
                job_id: job.job_id,
                exit: record,
            }
        } else {
            Command::FinishJob {
                job_id: job.job_id,
                exit: record,
            }
        };
        report(ledger.execute(cmd, ctx));
        let _ = tx.send(Msg::Ended(job.job_id));
    });
}
