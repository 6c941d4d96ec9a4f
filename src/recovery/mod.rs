//! The recovery loop: one pass decides every failed and parked job it can — by precedent (the
//! ledger's own history), then by rules (OOM, timeout, transient and permanent patterns), then by
//! an AI agent over MCP — and puts the retried ones back with per-job resource overrides.
//!
//! Unlike Torc 1.0.0's `recover`, a pass never waits for the workflow to be quiet: it acts on the
//! jobs that need it while others run or stay parked, and one undecided job never blocks the
//! others.

pub mod agent;

use crate::classify::precedent::{self, Precedent, PrecedentClassifier};
use crate::classify::rules::RulesClassifier;
use crate::classify::{Classifier, FailureCase, Label, Verdict};
use crate::decide::{ClassifyRequest, Command};
use crate::event::{Actor, Classification};
use crate::ledger::{Ctx, Ledger, LedgerError};
use crate::model::{Action, JobId, JobStatus, WorkflowId};
use crate::state::{Job, State};
use agent::{AgentError, AgentKind};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Whether a stage's decisions are applied or only proposed (for a person to apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageMode {
    Apply,
    Propose,
}

#[derive(Debug, Clone)]
pub struct RecoverOptions {
    pub memory_multiplier: f64,
    pub runtime_multiplier: f64,
    /// Also retry failed (not parked) jobs whose failure no resource cause explains.
    pub retry_unknown: bool,
    /// Run before unknown failures are retried (implies retry_unknown); non-zero aborts.
    pub recovery_hook: Option<String>,
    pub dry_run: bool,
    pub precedent: StageMode,
    pub rules: StageMode,
    /// The agent for what precedent and rules leave (None: no agent).
    pub agent: Option<AgentKind>,
    pub agent_mode: StageMode,
    pub agent_timeout: Duration,
    /// At most this many agent runs may concern the same job (across passes of one `watch`).
    pub max_agent_runs_per_job: u32,
    /// A job whose retries failed again this many times is left to the agent or a person
    /// (so a fix that does not help is not escalated for ever).
    pub max_failed_retries: u32,
    /// Largest per-job memory and runtime a fix may set.
    pub max_memory_bytes: u64,
    pub max_runtime_seconds: u64,
    pub output_dir: PathBuf,
    /// Set by Ctrl-C: an agent run in progress is stopped.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            memory_multiplier: 1.5,
            runtime_multiplier: 1.5,
            retry_unknown: false,
            recovery_hook: None,
            dry_run: false,
            precedent: StageMode::Apply,
            rules: StageMode::Apply,
            agent: None,
            agent_mode: StageMode::Apply,
            agent_timeout: Duration::from_secs(600),
            max_agent_runs_per_job: 2,
            max_failed_retries: 2,
            max_memory_bytes: 1 << 40,
            max_runtime_seconds: 14 * 86400,
            output_dir: PathBuf::from("torc_output"),
            stop: Default::default(),
        }
    }
}

/// One decision a pass made (or would make, with `dry_run`).
#[derive(Debug, Clone, Serialize)]
pub struct PassDecision {
    pub job_id: JobId,
    pub job_name: String,
    /// precedent, rules, or agent.
    pub stage: String,
    pub action: String,
    pub memory: Option<String>,
    pub runtime: Option<String>,
    pub reason: String,
    /// applied, proposed, or would_apply (dry run).
    pub status: String,
    /// The event that recorded it (the proposal's id when proposed).
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRunReport {
    pub agent: String,
    pub prompt: String,
    pub prompt_digest: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Jobs it was asked about that left pending_failed (or got a proposal) during the run.
    pub resolved: Vec<JobId>,
    pub unresolved: Vec<JobId>,
    pub output_tail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub workflow_id: WorkflowId,
    pub decisions: Vec<PassDecision>,
    pub agent_runs: Vec<AgentRunReport>,
    /// Failed jobs left alone (no resource cause, and no --retry-unknown), and why.
    pub left_alone: Vec<(JobId, String)>,
    /// Parked jobs nobody decided this pass.
    pub still_parked: Vec<JobId>,
    /// The agent could not run (missing binary, ...): what to do instead.
    pub agent_error: Option<String>,
    /// The recovery hook ran: its exit code.
    pub hook_exit: Option<i32>,
}

impl PassReport {
    /// Did this pass change (or propose) anything?
    pub fn changed_anything(&self) -> bool {
        !self.decisions.is_empty() || self.agent_runs.iter().any(|r| !r.resolved.is_empty())
    }
}

/// What a classifier saw of a job's last attempt.
pub fn failure_case(s: &State, j: &Job) -> FailureCase {
    let wf = s.workflow(j.workflow_id).expect("known workflow");
    let def = &wf.def.jobs[j.index as usize];
    let rr = s.effective_resources(j);
    let exit = j.attempts.last().and_then(|a| a.exit.as_ref());
    let (tail, _) = crate::views::log_tail(j, true, 50);
    FailureCase {
        id: format!("job {}", j.id),
        command: def.command.clone(),
        return_code: exit.map(|e| e.return_code).unwrap_or(0),
        stderr_tail: tail.unwrap_or_default(),
        exec_time_s: exit.map(|e| e.duration_ms as f64 / 1000.0),
        runtime_limit_s: Some(rr.runtime_seconds),
        peak_memory_bytes: exit.and_then(|e| e.peak_memory_bytes),
        memory_limit_bytes: Some(rr.memory_bytes),
    }
}

/// The precedent classifier learned from this ledger's decided failures with known outcomes.
pub fn precedent_from(state: &State) -> PrecedentClassifier {
    let read = |p: &str| {
        crate::runner::logs::tail(std::path::Path::new(p), 50, crate::runner::logs::TAIL_BYTES).ok()
    };
    let (found, _) = precedent::outcomes(state, None, &read);
    let mut c = PrecedentClassifier::new();
    for o in found {
        c.learn(Precedent {
            case: o.case,
            label: o.label,
            adjust: o.adjust,
            source: format!("decision {} on job {}", o.decision_seq, o.job_id),
        });
    }
    c
}

/// A verdict as a classification of `j`: resource fixes are per-job overrides, the job's
/// current limit (or measured peak, if larger) times the multiplier.
fn to_classification(s: &State, j: &Job, v: &Verdict, opts: &RecoverOptions) -> Classification {
    let rr = s.effective_resources(j);
    let mut c = Classification {
        job_id: j.id,
        action: match v.action {
            Label::Fail => Action::Fail,
            Label::Retry | Label::RetryWithResources => Action::Retry,
        },
        reason: v.reason.clone(),
        memory_bytes: None,
        runtime_seconds: None,
    };
    if v.action == Label::RetryWithResources {
        let adjust = v.adjust.unwrap_or_default();
        let runtime_fix = adjust.runtime_factor.is_some();
        let memory_fix = adjust.memory_factor.is_some() || !runtime_fix;
        if memory_fix {
            let peak = j
                .attempts
                .last()
                .and_then(|a| a.exit.as_ref())
                .and_then(|e| e.peak_memory_bytes)
                .unwrap_or(0);
            let base = rr.memory_bytes.max(peak) as f64;
            let want = (base * opts.memory_multiplier).ceil();
            c.memory_bytes = Some(if want >= opts.max_memory_bytes as f64 {
                opts.max_memory_bytes
            } else {
                want as u64
            });
        }
        if runtime_fix {
            let want = (rr.runtime_seconds as f64 * opts.runtime_multiplier).ceil();
            c.runtime_seconds = Some(if want >= opts.max_runtime_seconds as f64 {
                opts.max_runtime_seconds
            } else {
                want as u64
            });
        }
    }
    c
}

/// Retries decided for this job whose attempt then failed again (interrupted ones aside).
fn failed_retries(s: &State, j: &Job) -> u32 {
    j.decisions
        .iter()
        .filter(|d| {
            s.classifications.get(d).is_some_and(|c| {
                c.undone_by.is_none()
                    && c.items
                        .iter()
                        .any(|i| i.job_id == j.id && i.action == Action::Retry)
            })
        })
        .filter(|d| {
            j.attempt_for(**d)
                .and_then(|a| a.exit.as_ref())
                .is_some_and(|e| !e.succeeded())
        })
        .count() as u32
}

/// Would this resource fix raise the job's memory or runtime at all (within the caps)?
fn raises_limits(s: &State, j: &Job, v: &Verdict, opts: &RecoverOptions) -> bool {
    let rr = s.effective_resources(j);
    let c = to_classification(s, j, v, opts);
    c.memory_bytes.is_some_and(|m| m > rr.memory_bytes)
        || c.runtime_seconds.is_some_and(|r| r > rr.runtime_seconds)
}

fn classifier_actor(c: &dyn Classifier) -> Actor {
    Actor::Classifier {
        name: c.name(),
        version: c.version(),
    }
}

/// The MCP configuration an agent gets: `torc-ledger mcp` on this ledger, in apply or propose
/// mode, with the recovery prompt's digest recorded on every decision.
pub fn write_mcp_config(
    ledger_dir: &std::path::Path,
    output_dir: &std::path::Path,
    kind: &AgentKind,
    propose_only: bool,
    prompt_digest: &str,
) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut args = crate::mcp::config::server_args(
        ledger_dir,
        output_dir,
        if propose_only { "propose" } else { "apply" },
    );
    args.extend([
        "--actor".to_string(),
        "recovery".to_string(),
        "--prompt-digest".to_string(),
        prompt_digest.to_string(),
    ]);
    let json = crate::mcp::config::mcp_servers_json(&exe, &args, *kind == AgentKind::Copilot);
    let dir = ledger_dir.join("agent");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "mcp-config-{}.json",
        kind.label().replace(['/', ' ', ':'], "_")
    ));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    Ok(path)
}

/// Run one recovery pass over a workflow.
pub fn recover_pass(
    ledger: &Ledger,
    workflow_id: WorkflowId,
    opts: &RecoverOptions,
    agent_runs_so_far: &mut HashMap<JobId, u32>,
) -> Result<PassReport, LedgerError> {
    let s = ledger.state(None)?;
    let wf = s
        .workflow(workflow_id)
        .ok_or(crate::decide::DecideError::UnknownWorkflow(workflow_id))?;
    let mut report = PassReport {
        workflow_id,
        ..Default::default()
    };
    let precedent = precedent_from(&s);
    let rules = RulesClassifier::new();
    let name_of = |j: &Job| wf.def.jobs[j.index as usize].name.clone();

    // Parked jobs go through precedent, then rules; final failures (failed, terminated) are
    // requeued when a resource fix explains them (or, with --retry-unknown, when nothing says
    // they are permanent).
    let retry_unknown = opts.retry_unknown || opts.recovery_hook.is_some();
    let mut by_stage: Vec<(String, Actor, StageMode, Vec<Classification>)> = Vec::new();
    let mut requeue: Vec<(Actor, Classification)> = Vec::new();
    let mut undecided: Vec<JobId> = Vec::new();
    let mut unknown_final = false;
    for j in s.jobs_of(wf) {
        let parked = j.status == JobStatus::PendingFailed;
        let final_failure = matches!(j.status, JobStatus::Failed | JobStatus::Terminated);
        if !parked && !final_failure {
            continue;
        }
        // A job failed by a decision stays failed: recovery does not overrule people or agents.
        let failed_by_decision = j
            .decisions
            .last()
            .is_some_and(|d| j.attempts.last().and_then(|a| a.finished_seq) < Some(*d));
        if final_failure && failed_by_decision {
            report.left_alone.push((
                j.id,
                "failed by a decision; undo it to recover the job".into(),
            ));
            continue;
        }
        // Already proposed and waiting for a person: do not propose again.
        if parked
            && s.proposals.values().any(|p| {
                p.applied_by.is_none()
                    && p.job_versions
                        .iter()
                        .any(|(id, v)| *id == j.id && *v == j.last_seq)
            })
        {
            report.left_alone.push((
                j.id,
                "an open proposal awaits a person: `torc-ledger proposals list`".into(),
            ));
            continue;
        }
        // Retried before and failed again each time: automatic fixes are not helping.
        let failed_again = failed_retries(&s, j);
        if failed_again >= opts.max_failed_retries {
            let why = format!(
                "retried {failed_again} time(s) and failed again each time; left to {}",
                if opts.agent.is_some() && parked {
                    "the agent"
                } else {
                    "a person"
                }
            );
            report.left_alone.push((j.id, why));
            if parked {
                undecided.push(j.id);
            }
            continue;
        }
        let case = failure_case(&s, j);
        let (stage, actor, mode, verdict): (&str, Actor, StageMode, Option<Verdict>) =
            match precedent.classify(&case) {
                Ok(v) => (
                    "precedent",
                    classifier_actor(&precedent),
                    opts.precedent,
                    Some(v),
                ),
                Err(_) => match rules.explain(&case) {
                    Some(_) => (
                        "rules",
                        classifier_actor(&rules),
                        opts.rules,
                        rules.classify(&case).ok(),
                    ),
                    None => ("rules", classifier_actor(&rules), opts.rules, None),
                },
            };
        if parked {
            match verdict {
                Some(v)
                    if v.action == Label::RetryWithResources && !raises_limits(&s, j, &v, opts) =>
                {
                    report.left_alone.push((
                        j.id,
                        "needs more resources but is already at the largest memory/runtime recovery may set".into(),
                    ));
                    undecided.push(j.id);
                }
                Some(v) => {
                    let c = to_classification(&s, j, &v, opts);
                    match by_stage.iter_mut().find(|(st, _, _, _)| st == stage) {
                        Some((_, _, _, items)) => items.push(c),
                        None => by_stage.push((stage.to_string(), actor, mode, vec![c])),
                    }
                }
                None => undecided.push(j.id),
            }
            continue;
        }
        // A final failure.
        match verdict {
            Some(v)
                if v.action == Label::RetryWithResources && raises_limits(&s, j, &v, opts) =>
            {
                requeue.push((actor, to_classification(&s, j, &v, opts)))
            }
            Some(v) if v.action == Label::RetryWithResources => report.left_alone.push((
                j.id,
                "needs more resources but is already at the largest memory/runtime recovery may set".into(),
            )),
            Some(v) if v.action == Label::Fail => report
                .left_alone
                .push((j.id, format!("{stage} says it is permanent: {}", v.reason))),
            other if retry_unknown => {
                unknown_final = true;
                let reason = other.map(|v| v.reason).unwrap_or_else(|| {
                    "no rule explains it; retried because of --retry-unknown".into()
                });
                requeue.push((
                    actor,
                    Classification {
                        job_id: j.id,
                        action: Action::Retry,
                        reason,
                        memory_bytes: None,
                        runtime_seconds: None,
                    },
                ))
            }
            _ => report.left_alone.push((
                j.id,
                "no resource cause detected; use --retry-unknown to retry it anyway".into(),
            )),
        }
    }

    // The hook runs before unknown failures are retried.
    if unknown_final && !opts.dry_run {
        if let Some(hook) = &opts.recovery_hook {
            let status = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("{hook} {workflow_id}"))
                .env("TORC_WORKFLOW_ID", workflow_id.to_string())
                .env("TORC_RUN_ID", wf.run_id.to_string())
                .env("TORC_LEDGER_DIR", ledger.dir())
                .current_dir(&wf.def.submit_dir)
                .status()
                .map_err(|e| LedgerError::Invalid(format!("cannot run the recovery hook: {e}")))?;
            report.hook_exit = status.code();
            if !status.success() {
                return Err(LedgerError::Invalid(format!(
                    "the recovery hook `{hook}` exited with {}; nothing was requeued",
                    status
                        .code()
                        .map(|c| c.to_string())
                        .unwrap_or("a signal".into())
                )));
            }
        }
    }

    let ctx_for = |actor: &Actor| Ctx {
        actor: actor.clone(),
        cause: None,
        idempotency_key: None,
    };
    // One batch per stage: parked jobs are classified, final failures requeued.
    let mut batches: Vec<(String, Actor, StageMode, bool, Vec<Classification>)> = by_stage
        .into_iter()
        .map(|(stage, actor, mode, items)| (stage, actor, mode, false, items))
        .collect();
    for (actor, c) in requeue {
        let stage = match &actor {
            Actor::Classifier { name, .. } => name.clone(),
            _ => "rules".into(),
        };
        match batches
            .iter_mut()
            .find(|(st, _, _, rq, _)| *rq && *st == stage)
        {
            Some((_, _, _, _, v)) => v.push(c),
            None => batches.push((stage, actor, StageMode::Apply, true, vec![c])),
        }
    }
    for (stage, actor, mode, is_requeue, items) in batches {
        let req = ClassifyRequest {
            workflow_id,
            items: items.clone(),
            dry_run: mode == StageMode::Propose,
            evidence_digest: None,
        };
        let cmd = if is_requeue {
            Command::Requeue(req)
        } else {
            Command::Classify(req)
        };
        let (seq, status) = if opts.dry_run {
            ledger.preview(cmd)?;
            (None, "would_apply")
        } else {
            let head = ledger.execute(cmd, ctx_for(&actor))?.head();
            let status = if mode == StageMode::Propose {
                "proposed"
            } else {
                "applied"
            };
            (Some(head), status)
        };
        for c in items {
            report
                .decisions
                .push(pass_decision(&s, &c, &stage, seq, status, &name_of));
        }
    }

    // The agent, for what is left.
    let for_agent: Vec<JobId> = undecided
        .iter()
        .copied()
        .filter(|j| agent_runs_so_far.get(j).copied().unwrap_or(0) < opts.max_agent_runs_per_job)
        .collect();
    if let (Some(kind), false, false) = (&opts.agent, for_agent.is_empty(), opts.dry_run) {
        let propose_only = opts.agent_mode == StageMode::Propose;
        let prompt = agent::render_prompt(workflow_id, &opts.output_dir, propose_only);
        let digest = crate::classify::prompt_digest(agent::RECOVER_PROMPT);
        let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let config = write_mcp_config(
            &abs(&ledger.dir()),
            &abs(&opts.output_dir),
            kind,
            propose_only,
            &digest,
        )
        .map_err(|e| LedgerError::Invalid(format!("cannot write the agent's MCP config: {e}")))?;
        for j in &for_agent {
            *agent_runs_so_far.entry(*j).or_insert(0) += 1;
        }
        let before = ledger.state(None)?;
        let proposals_before = before.proposals.len();
        match agent::invoke(
            kind,
            workflow_id,
            &prompt,
            &config,
            std::path::Path::new(&wf.def.submit_dir),
            opts.agent_timeout,
            &opts.stop,
        ) {
            Err(e @ (AgentError::Missing { .. } | AgentError::Spawn { .. })) => {
                report.agent_error = Some(e.to_string());
            }
            Ok(outcome) => {
                let after = ledger.state(None)?;
                let proposed: std::collections::HashSet<JobId> = after
                    .proposals
                    .values()
                    .skip(proposals_before)
                    .flat_map(|p| p.items.iter().map(|i| i.job_id))
                    .collect();
                let (resolved, unresolved): (Vec<JobId>, Vec<JobId>) =
                    for_agent.iter().partition(|j| {
                        after
                            .job(**j)
                            .is_some_and(|x| x.status != JobStatus::PendingFailed)
                            || (propose_only && proposed.contains(j))
                    });
                // What the agent decided, from the ledger (not from what it says).
                for c in after
                    .classifications
                    .values()
                    .filter(|c| c.seq > before.last_seq)
                {
                    for it in &c.items {
                        report.decisions.push(pass_decision(
                            &after,
                            it,
                            "agent",
                            Some(c.seq),
                            "applied",
                            &name_of,
                        ));
                    }
                }
                for p in after.proposals.values().skip(proposals_before) {
                    if p.applied_by.is_none() {
                        for it in &p.items {
                            report.decisions.push(pass_decision(
                                &after,
                                it,
                                "agent",
                                Some(p.id),
                                "proposed",
                                &name_of,
                            ));
                        }
                    }
                }
                report.agent_runs.push(AgentRunReport {
                    agent: kind.label(),
                    prompt: agent::RECOVER_PROMPT_NAME.into(),
                    prompt_digest: digest,
                    exit_code: outcome.exit_code,
                    timed_out: outcome.timed_out,
                    duration_ms: outcome.duration_ms,
                    resolved,
                    unresolved,
                    output_tail: if outcome.stderr_tail.is_empty() {
                        outcome.stdout_tail
                    } else {
                        outcome.stderr_tail
                    },
                });
            }
        }
    }
    let now = ledger.state(None)?;
    report.still_parked = now
        .workflow(workflow_id)
        .map(|w| {
            now.jobs_of(w)
                .iter()
                .filter(|j| j.status == JobStatus::PendingFailed)
                .map(|j| j.id)
                .collect()
        })
        .unwrap_or_default();
    Ok(report)
}

fn pass_decision(
    s: &State,
    c: &Classification,
    stage: &str,
    seq: Option<u64>,
    status: &str,
    name_of: &dyn Fn(&Job) -> String,
) -> PassDecision {
    PassDecision {
        job_id: c.job_id,
        job_name: s.job(c.job_id).map(name_of).unwrap_or_default(),
        stage: stage.into(),
        action: c.action.as_str().into(),
        memory: c.memory_bytes.map(crate::model::format_memory),
        runtime: c.runtime_seconds.map(crate::model::format_duration),
        reason: c.reason.clone(),
        status: status.into(),
        seq,
    }
}
