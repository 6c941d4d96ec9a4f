//! The tools. Inputs use i64 ids (some clients warn on uint64 schemas); every id, action,
//! memory and runtime is checked here and refused per item with a message an agent can act on.

use super::{LedgerMcp, Mode, GUIDE};
use crate::decide::{ClassifyRequest, Command, DecideError};
use crate::event::{Actor, Classification};
use crate::ledger::{Ctx, LedgerError};
use crate::model::{parse_duration, parse_memory, Action, JobStatus, Seq, WorkflowId};
use crate::state::State;
use crate::views;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars::{self, JsonSchema};
use rmcp::{tool, tool_handler, tool_router, Peer, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WorkflowArgs {
    /// The workflow's id (see `torc-ledger workflows list`).
    pub workflow_id: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobArgs {
    /// The job's id.
    pub job_id: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobLogsArgs {
    pub workflow_id: i64,
    pub job_id: i64,
    /// "stdout" or "stderr".
    pub log_type: String,
    /// How many lines from the end (default 100).
    pub tail_lines: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusArgs {
    pub workflow_id: i64,
    /// A Torc status name: uninitialized, blocked, ready, pending, running, completed, failed,
    /// canceled, terminated, disabled, pending_failed.
    pub status: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ClassificationIn {
    /// A job in pending_failed.
    pub job_id: i64,
    /// "retry" (back to ready as the next attempt) or "fail" (failed; dependents canceled).
    pub action: String,
    /// retry only: memory for this job's next attempts, e.g. "8g" (1024-based k/m/g/t).
    pub memory: Option<String>,
    /// retry only: runtime for this job's next attempts, ISO-8601, e.g. "PT2H".
    pub runtime: Option<String>,
    /// Why: recorded with the decision and shown to people.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ClassifyArgs {
    pub workflow_id: i64,
    pub classifications: Vec<ClassificationIn>,
    /// true (the default): record a proposal and change nothing; false: apply now.
    pub dry_run: Option<bool>,
    /// Same key, same answer: a repeated call with this key appends nothing.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApplyProposalArgs {
    /// The proposal_id a dry run returned.
    pub proposal_id: i64,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct HistoryArgs {
    /// Decisions about this workflow (give this or job_id).
    pub workflow_id: Option<i64>,
    /// Decisions about this job.
    pub job_id: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UndoArgs {
    /// The seq of the decision to undo (a classification's seq, or an undo's seq to redo).
    pub seq: i64,
    /// true: show what would be restored, record nothing.
    pub dry_run: Option<bool>,
}

/// A tool answer: structured JSON, also as text for clients that only read text.
fn ok(v: Value) -> Result<CallToolResult, rmcp::ErrorData> {
    Ok(CallToolResult::structured(v))
}

/// A refusal the agent should read and act on (not a protocol error).
fn refusal(message: impl Into<String>, mut extra: Value) -> CallToolResult {
    if !extra.is_object() {
        extra = json!({});
    }
    extra["error"] = json!(message.into());
    let mut r = CallToolResult::structured(extra);
    r.is_error = Some(true);
    r
}

fn refuse(message: impl Into<String>, extra: Value) -> Result<CallToolResult, rmcp::ErrorData> {
    Ok(refusal(message, extra))
}

fn id(v: i64, what: &str) -> Result<u64, String> {
    if v <= 0 {
        Err(format!("{what} must be a positive id, got {v}"))
    } else {
        Ok(v as u64)
    }
}

impl LedgerMcp {
    fn ctx(&self, peer: &Peer<RoleServer>, key: Option<String>) -> Ctx {
        let (name, version) = peer
            .peer_info()
            .map(|p| (p.client_info.name.clone(), p.client_info.version.clone()))
            .unwrap_or_else(|| ("unknown-agent".into(), "?".into()));
        let name = match &self.actor_label {
            Some(label) => format!("{label} ({name})"),
            None => name,
        };
        Ctx {
            actor: Actor::Agent {
                name,
                version,
                model: None,
                prompt_digest: self.prompt_digest.clone(),
            },
            cause: None,
            idempotency_key: key,
        }
    }

    fn state(&self) -> Result<State, LedgerError> {
        self.ledger.state(None)
    }

    /// The current state, or the refusal to return.
    fn snapshot(&self) -> Result<State, CallToolResult> {
        self.state().map_err(|e| refusal(e.to_string(), json!({})))
    }

    /// The current state and a known workflow, or the refusal to return.
    fn load(&self, workflow_id: i64) -> Result<(State, WorkflowId), CallToolResult> {
        let s = self.snapshot()?;
        match self.workflow_or_refuse(&s, workflow_id) {
            Ok(wf) => Ok((s, wf)),
            Err(m) => Err(refusal(m, json!({}))),
        }
    }

    fn workflow_or_refuse(&self, s: &State, wf: i64) -> Result<WorkflowId, String> {
        let wf = id(wf, "workflow_id")?;
        s.workflow(wf).map(|_| wf).ok_or_else(|| {
            format!("unknown workflow {wf}; `torc-ledger workflows list` shows them")
        })
    }

    /// Turn tool items into classifications; per-item errors for the bad ones.
    fn check_items(
        &self,
        s: &State,
        wf: WorkflowId,
        items: &[ClassificationIn],
    ) -> (Vec<Classification>, Vec<(usize, String)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let mut err = |m: String| bad.push((i, m));
            let job_id = match id(it.job_id, "job_id") {
                Ok(j) => j,
                Err(e) => {
                    err(e);
                    continue;
                }
            };
            let Some(action) = Action::parse(it.action.trim()) else {
                err(format!(
                    "unknown action {:?}: use \"retry\" or \"fail\"",
                    truncate(&it.action, 40)
                ));
                continue;
            };
            let reason = it.reason.clone().unwrap_or_default();
            if reason.len() > self.caps.max_reason_bytes {
                err(format!(
                    "reason is {} bytes; keep it under {} bytes",
                    reason.len(),
                    self.caps.max_reason_bytes
                ));
                continue;
            }
            let memory_bytes = match capped(
                it.memory.as_deref(),
                parse_memory,
                self.caps.max_memory_bytes,
                "memory",
                crate::model::format_memory,
            ) {
                Ok(m) => m,
                Err(m) => {
                    err(m);
                    continue;
                }
            };
            let runtime_seconds = match capped(
                it.runtime.as_deref(),
                parse_duration,
                self.caps.max_runtime_seconds,
                "runtime",
                crate::model::format_duration,
            ) {
                Ok(r) => r,
                Err(m) => {
                    err(m);
                    continue;
                }
            };
            good.push(Classification {
                job_id,
                action,
                reason,
                memory_bytes,
                runtime_seconds,
            });
        }
        // The ledger's own rules (status, workflow membership, duplicates), per job.
        if bad.is_empty() {
            if let Err(DecideError::ItemsRefused(errs)) =
                crate::decide::validate_classifications(s, wf, &good)
            {
                for e in errs {
                    if let Some(i) = good.iter().position(|c| c.job_id == e.job_id) {
                        bad.push((i, format!("job {}: {}", e.job_id, e.reason)));
                    }
                }
            }
        }
        (good, bad)
    }
}

/// A memory or runtime string, parsed and held to this server's cap.
fn capped(
    raw: Option<&str>,
    parse: fn(&str) -> Result<u64, crate::model::ResourceError>,
    cap: u64,
    what: &str,
    show: fn(u64) -> String,
) -> Result<Option<u64>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match parse(raw) {
        Ok(v) if v > cap => Err(format!(
            "{what} {} is above this server's limit of {}; ask for less or have a person decide",
            truncate(raw, 40),
            show(cap)
        )),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(truncate(&e.to_string(), 300)),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

fn item_result(s: &State, it: &ClassificationIn, status: &str, message: Option<String>) -> Value {
    let job_name = (it.job_id > 0)
        .then(|| views::job_name(s, it.job_id as u64))
        .flatten();
    let mut v = json!({
        "job_id": it.job_id,
        "job_name": job_name,
        "action": truncate(&it.action, 40),
        "reason": it.reason.as_deref().map(|r| truncate(r, 200)),
        "status": status,
    });
    if let Some(m) = message {
        v["message"] = json!(m);
    }
    v
}

#[tool_router(vis = "pub(crate)")]
impl LedgerMcp {
    #[tool(
        description = "A workflow's job counts by status (Torc's get_workflow_status). \
Returns workflow_id, name, total_jobs, job_counts_by_status, run_id, is_complete."
    )]
    async fn get_workflow_status(
        &self,
        Parameters(a): Parameters<WorkflowArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (s, wf) = match self.load(a.workflow_id) {
            Ok(x) => x,
            Err(r) => return Ok(r),
        };
        let st = views::status(&s, wf).expect("known workflow");
        ok(json!({
            "workflow_id": wf,
            "name": st["workflow_name"],
            "total_jobs": st["total_jobs"],
            "job_counts_by_status": st["jobs_by_status"],
            "run_id": st["run_id"],
            "is_complete": st["is_complete"],
            "as_of_seq": st["as_of_seq"],
        }))
    }

    #[tool(
        description = "The jobs waiting in pending_failed for a classification, each with its \
command, attempt, return code, run time and the last 50 lines of its stderr \
(Torc's list_pending_failed_jobs). Read the stderr tails, then call \
classify_and_resolve_failures. See the guidance field for how to decide."
    )]
    async fn list_pending_failed_jobs(
        &self,
        Parameters(a): Parameters<WorkflowArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (s, wf) = match self.load(a.workflow_id) {
            Ok(x) => x,
            Err(r) => return Ok(r),
        };
        let jobs: Vec<Value> = views::jobs_in(&s, wf, JobStatus::PendingFailed)
            .into_iter()
            .map(|j| failed_job(&s, j))
            .collect();
        ok(json!({
            "workflow_id": wf,
            "pending_failed_count": jobs.len(),
            "pending_failed_jobs": jobs,
            "guidance": GUIDE,
        }))
    }

    #[tool(
        description = "Classify pending_failed jobs as retry (optionally with more memory or \
runtime for that job only) or fail (Torc's classify_and_resolve_failures). dry_run defaults to \
true: it records a proposal, changes nothing and returns proposal_id; show it to the user, then \
apply_proposal(proposal_id). With dry_run false (apply mode only) the classifications are applied \
at once, all or nothing. Each result's status says what happened to that job: would_apply, \
applied, skipped (not applied because another item was refused) or error (with message). \
Transient (retry): network/DNS/HTTP 5xx/429, node failure, preemption, NCCL/IB errors, stale NFS. \
Resources: OOM (137, Killed, CUDA out of memory) -> retry with memory; time limit (152) -> retry \
with runtime. Permanent (fail): exceptions in the job's code, missing inputs, bad config, \
permission/auth/license errors."
    )]
    async fn classify_and_resolve_failures(
        &self,
        Parameters(a): Parameters<ClassifyArgs>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let dry_run = a.dry_run.unwrap_or(true);
        if !dry_run && self.mode != Mode::Apply {
            return refuse(
                format!(
                    "this server runs in {} mode: call again with dry_run: true, and ask a person to apply the proposal (`torc-ledger proposals apply ID`), or restart the server with --mode apply",
                    self.mode.as_str()
                ),
                json!({"workflow_id": a.workflow_id, "dry_run": false, "results": []}),
            );
        }
        if a.classifications.len() > self.caps.max_items {
            return refuse(
                format!(
                    "{} classifications in one call; at most {} per call: split them",
                    a.classifications.len(),
                    self.caps.max_items
                ),
                json!({"workflow_id": a.workflow_id, "dry_run": dry_run, "results": []}),
            );
        }
        if a.classifications.is_empty() {
            return refuse(
                "no classifications given; list the pending_failed jobs first",
                json!({"workflow_id": a.workflow_id, "dry_run": dry_run, "results": []}),
            );
        }
        if a.idempotency_key.as_ref().is_some_and(|k| k.len() > 200) {
            return refuse("idempotency_key is longer than 200 bytes", json!({}));
        }
        let s = match self.snapshot() {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let wf = match self.workflow_or_refuse(&s, a.workflow_id) {
            Ok(w) => w,
            Err(m) => return refuse(m, json!({"dry_run": dry_run, "results": []})),
        };
        let (good, bad) = self.check_items(&s, wf, &a.classifications);
        if !bad.is_empty() {
            let results: Vec<Value> = a
                .classifications
                .iter()
                .enumerate()
                .map(|(i, it)| match bad.iter().find(|(b, _)| *b == i) {
                    Some((_, m)) => item_result(&s, it, "error", Some(m.clone())),
                    None => item_result(
                        &s,
                        it,
                        "skipped",
                        Some("not applied: other items in this call were refused; fix them and call again".into()),
                    ),
                })
                .collect();
            return refuse(
                format!(
                    "{} of {} classifications refused; nothing was recorded",
                    bad.len(),
                    a.classifications.len()
                ),
                json!({"workflow_id": wf, "dry_run": dry_run, "results": results}),
            );
        }
        let req = ClassifyRequest {
            workflow_id: wf,
            items: good,
            dry_run,
            evidence_digest: None,
        };
        let appended = match self.ledger.execute(
            Command::Classify(req),
            self.ctx(&peer, a.idempotency_key.clone()),
        ) {
            Ok(x) => x,
            Err(e) => {
                return refuse(
                    format!("{e}; nothing was recorded"),
                    json!({"workflow_id": wf, "dry_run": dry_run, "results": []}),
                )
            }
        };
        let after = self.state().unwrap_or(s);
        let status = if dry_run { "would_apply" } else { "applied" };
        let results: Vec<Value> = a
            .classifications
            .iter()
            .map(|it| item_result(&after, it, status, None))
            .collect();
        let mut v = json!({
            "workflow_id": wf,
            "dry_run": dry_run,
            "results": results,
            "seqs": appended.seqs,
            "replayed": appended.replayed,
        });
        if dry_run {
            v["proposal_id"] = json!(appended.head());
            v["message"] = json!(format!(
                "proposal {} recorded; nothing changed. Show it to the user; apply it with apply_proposal({}){}",
                appended.head(),
                appended.head(),
                if self.mode == Mode::Apply { "" } else { " (a person: `torc-ledger proposals apply ID`)" }
            ));
        } else {
            v["message"] = json!(format!(
                "{} classification(s) applied as event {}; undo with undo_decision({})",
                a.classifications.len(),
                appended.head(),
                appended.head()
            ));
        }
        ok(v)
    }

    #[tool(
        description = "Apply exactly what a dry run proposed (by its proposal_id), or a clear \
refusal: unknown, already applied, or stale (a job changed since the dry run: review again)."
    )]
    async fn apply_proposal(
        &self,
        Parameters(a): Parameters<ApplyProposalArgs>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let pid = match id(a.proposal_id, "proposal_id") {
            Ok(p) => p,
            Err(m) => return refuse(m, json!({})),
        };
        let appended = match self.ledger.execute(
            Command::ApplyProposal { proposal_id: pid },
            self.ctx(&peer, a.idempotency_key),
        ) {
            Ok(x) => x,
            Err(e) => return refuse(e.to_string(), json!({"proposal_id": pid, "applied": false})),
        };
        let s = match self.snapshot() {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let Some(p) = s.proposals.get(&pid) else {
            return refuse(
                format!("proposal {pid} does not exist"),
                json!({"applied": false}),
            );
        };
        let results: Vec<Value> = p
            .items
            .iter()
            .map(|c| {
                json!({"job_id": c.job_id, "job_name": views::job_name(&s, c.job_id),
                       "action": c.action.as_str(), "reason": c.reason, "status": "applied"})
            })
            .collect();
        ok(json!({
            "proposal_id": pid,
            "workflow_id": p.workflow_id,
            "applied": true,
            "results": results,
            "seqs": appended.seqs,
            "replayed": appended.replayed,
        }))
    }

    #[tool(
        description = "One job: status, command, effective resources (spec plus per-job \
override), every attempt with return code, duration and peak memory, the decisions about it, \
and the last lines of its stderr."
    )]
    async fn get_job_details(
        &self,
        Parameters(a): Parameters<JobArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let s = match self.snapshot() {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let Some(j) = id(a.job_id, "job_id").ok().and_then(|j| s.job(j)) else {
            return refuse(format!("unknown job {}", a.job_id), json!({}));
        };
        ok(views::job_details(&s, j, 50))
    }

    #[tool(
        description = "The end of a job's latest stdout or stderr (log_type), tail_lines lines \
(default 100). Reads from the end of the file within a byte bound; never fails on binary data."
    )]
    async fn get_job_logs(
        &self,
        Parameters(a): Parameters<JobLogsArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (s, wf) = match self.load(a.workflow_id) {
            Ok(x) => x,
            Err(r) => return Ok(r),
        };
        let Some(j) = id(a.job_id, "job_id").ok().and_then(|j| s.job(j)) else {
            return refuse(format!("unknown job {}", a.job_id), json!({}));
        };
        if j.workflow_id != wf {
            return refuse(
                format!(
                    "job {} belongs to workflow {}, not {wf}",
                    j.id, j.workflow_id
                ),
                json!({}),
            );
        }
        let stderr = match a.log_type.as_str() {
            "stderr" => true,
            "stdout" => false,
            other => {
                return refuse(
                    format!(
                        "log_type {:?}: use \"stdout\" or \"stderr\"",
                        truncate(other, 20)
                    ),
                    json!({}),
                )
            }
        };
        let lines = a
            .tail_lines
            .unwrap_or(100)
            .clamp(1, self.caps.max_tail_lines as i64) as usize;
        let (text, err) = views::log_tail(j, stderr, lines);
        let path = j.attempts.last().map(|a| {
            if stderr {
                &a.stderr_path
            } else {
                &a.stdout_path
            }
        });
        ok(json!({
            "workflow_id": wf,
            "job_id": j.id,
            "attempt_id": j.attempts.last().map(|a| a.attempt_id),
            "log_type": a.log_type,
            "path": path,
            "tail_lines": lines,
            "content": text,
            "read_error": err,
        }))
    }

    #[tool(description = "A workflow's jobs in one status (Torc's status names).")]
    async fn list_jobs_by_status(
        &self,
        Parameters(a): Parameters<StatusArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (s, wf) = match self.load(a.workflow_id) {
            Ok(x) => x,
            Err(r) => return Ok(r),
        };
        let Some(status) = JobStatus::parse(&a.status) else {
            return refuse(
                format!(
                    "unknown status {:?}; use one of: {}",
                    truncate(&a.status, 40),
                    JobStatus::ALL.map(|s| s.as_str()).join(", ")
                ),
                json!({}),
            );
        };
        let jobs: Vec<Value> = views::jobs_in(&s, wf, status)
            .into_iter()
            .map(|j| views::job(&s, j))
            .collect();
        ok(json!({"workflow_id": wf, "status": status.as_str(), "count": jobs.len(), "jobs": jobs}))
    }

    #[tool(
        description = "A workflow's failed and terminated jobs, with return codes and stderr \
tails (which Torc's list_failed_jobs omits)."
    )]
    async fn list_failed_jobs(
        &self,
        Parameters(a): Parameters<WorkflowArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (s, wf) = match self.load(a.workflow_id) {
            Ok(x) => x,
            Err(r) => return Ok(r),
        };
        let mut jobs: Vec<Value> = Vec::new();
        for st in [JobStatus::Failed, JobStatus::Terminated] {
            for j in views::jobs_in(&s, wf, st) {
                let mut v = failed_job(&s, j);
                v["status"] = json!(st.as_str());
                jobs.push(v);
            }
        }
        ok(json!({"workflow_id": wf, "failed_count": jobs.len(), "failed_jobs": jobs}))
    }

    #[tool(
        description = "Decisions about a workflow or a job, oldest first: who decided what and \
why, from which proposal, whether it was undone, and how the next attempt turned out (retry \
succeeded / failed again)."
    )]
    async fn get_decision_history(
        &self,
        Parameters(a): Parameters<HistoryArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        if a.workflow_id.is_none() && a.job_id.is_none() {
            return refuse("give workflow_id or job_id", json!({}));
        }
        let s = match self.snapshot() {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let wf = match a
            .workflow_id
            .map(|w| self.workflow_or_refuse(&s, w))
            .transpose()
        {
            Ok(w) => w,
            Err(m) => return refuse(m, json!({})),
        };
        let job = match a.job_id.map(|j| id(j, "job_id")).transpose() {
            Ok(Some(j)) if s.job(j).is_none() => {
                return refuse(format!("unknown job {j}"), json!({}))
            }
            Ok(j) => j,
            Err(m) => return refuse(m, json!({})),
        };
        let mut decisions = views::decision_history(&s, wf, job);
        // Time of each decision, from its event.
        for d in decisions.iter_mut() {
            let seq = d["seq"].as_u64().unwrap_or(0);
            if let Ok(ev) = self.ledger.events(seq, Some(seq), 1) {
                if let Some(ev) = ev.first() {
                    d["time"] = json!(views::time_str(ev.time_ms));
                }
            }
        }
        ok(
            json!({"workflow_id": wf, "job_id": job, "count": decisions.len(), "decisions": decisions}),
        )
    }

    #[tool(
        description = "Undo a decision by its seq (appends compensating events; nothing is \
deleted). Refused, naming the jobs in the way, if later events moved on. Undo an undo to redo. \
dry_run: true shows what would be restored."
    )]
    async fn undo_decision(
        &self,
        Parameters(a): Parameters<UndoArgs>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let target: Seq = match id(a.seq, "seq") {
            Ok(s) => s,
            Err(m) => return refuse(m, json!({})),
        };
        let cmd = Command::Undo {
            target,
            batch: Vec::new(),
        };
        if a.dry_run.unwrap_or(false) {
            return match self.ledger.preview(cmd) {
                Ok(bodies) => ok(json!({
                    "target": target,
                    "dry_run": true,
                    "would_append": bodies.iter().map(|b| json!({"kind": b.kind(), "body": b})).collect::<Vec<_>>(),
                })),
                Err(e) => refuse(e.to_string(), json!({"target": target, "dry_run": true})),
            };
        }
        match self.ledger.execute(cmd, self.ctx(&peer, None)) {
            Ok(app) => ok(json!({
                "target": target,
                "dry_run": false,
                "seqs": app.seqs,
                "message": format!("undone as event {}; undo_decision({}) redoes it", app.head(), app.head()),
            })),
            Err(e) => refuse(e.to_string(), json!({"target": target, "dry_run": false})),
        }
    }
}

/// A failed or parked job as the recovery tools show it.
fn failed_job(s: &State, j: &crate::state::Job) -> Value {
    let wf = s.workflow(j.workflow_id).expect("known");
    let def = &wf.def.jobs[j.index as usize];
    let last = j.attempts.last().and_then(|a| a.exit.as_ref());
    let (tail, err) = views::log_tail(j, true, 50);
    json!({
        "job_id": j.id,
        "name": def.name,
        "command": def.command,
        "attempt_id": j.attempt_id,
        "return_code": last.map(|e| e.return_code),
        "exec_time_minutes": last.map(|e| e.duration_ms as f64 / 60_000.0),
        "timed_out": last.map(|e| e.timed_out),
        "peak_memory_bytes": last.and_then(|e| e.peak_memory_bytes),
        "memory_limit_bytes": s.effective_resources(j).memory_bytes,
        "runtime_limit_seconds": s.effective_resources(j).runtime_seconds,
        "stderr_tail": tail,
        "stderr_read_error": err,
    })
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LedgerMcp {
    /// A tool this mode forbids is not listed; called anyway, it is refused with what to do.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        if let Some((name, least)) = super::WRITE_TOOLS
            .iter()
            .find(|(n, _)| *n == request.name.as_ref())
        {
            if (self.mode as u8) < (*least as u8) {
                let r = refuse(
                    format!(
                        "{name} is not available: this server runs in {} mode (it needs --mode {}). {}",
                        self.mode.as_str(),
                        least.as_str(),
                        if self.mode == Mode::Propose {
                            "Record a proposal with classify_and_resolve_failures (dry_run: true) and ask a person to apply it with `torc-ledger proposals apply ID`."
                        } else {
                            "Ask a person to restart the server with a wider --mode, or to act with the torc-ledger CLI."
                        }
                    ),
                    json!({"tool": name, "mode": self.mode.as_str()}),
                )?;
                return Ok(r.into());
            }
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "torc-ledger",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(format!(
                "{GUIDE}\n\nThis server runs in {} mode.",
                self.mode.as_str()
            ))
    }
}
