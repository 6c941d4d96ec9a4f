//! The projection: current state as a pure fold of the event log.
//!
//! `apply` is total and deterministic: it never fails and never looks at anything but the event.
//! `digest()` hashes a canonical form of the operational state (statuses, attempts, runs,
//! overrides, retry counters, owed recovery scripts, open/applied proposals). Bookkeeping that
//! only records *where* in the log something happened (last-touched seqs, decision lists,
//! attempt history, idempotency keys) is left out, so an undo that restores a state restores its
//! digest too.

use crate::event::{Body, Classification, Event, Exit, Hash, InitKind, Override, Why};
use crate::model::{JobId, JobStatus, ResourceRequirements, Seq, WorkflowDef, WorkflowId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workflow {
    pub id: WorkflowId,
    pub def: Arc<WorkflowDef>,
    pub spec_digest: String,
    pub first_job_id: JobId,
    pub run_id: u64,
    pub created_seq: Seq,
    /// Reverse edges: `dependents[i]` are the indexes of jobs that depend on job index `i`.
    pub dependents: Vec<Vec<u32>>,
}

impl Workflow {
    pub fn job_ids(&self) -> std::ops::Range<JobId> {
        self.first_job_id..self.first_job_id + self.def.jobs.len() as u64
    }
    pub fn job_id_of(&self, index: u32) -> JobId {
        self.first_job_id + index as u64
    }
}

/// One attempt of a job: started, and perhaps finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub run_id: u64,
    pub attempt_id: u32,
    pub started_seq: Seq,
    pub stdout_path: String,
    pub stderr_path: String,
    pub exit: Option<Exit>,
    pub finished_seq: Option<Seq>,
    /// The classification (retry or requeue) that put the job back for this attempt: how the
    /// ledger links a decision to its outcome.
    pub decision: Option<Seq>,
    /// Ended by Ctrl-C or a runner that died, not by the job: says nothing about a decision.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub workflow_id: WorkflowId,
    /// Position in the workflow's job list.
    pub index: u32,
    pub status: JobStatus,
    pub attempt_id: u32,
    /// Failure-handler retries granted in run `.0`: `.1` of them.
    pub handler_retries: (u64, u32),
    pub resource_override: Override,
    /// A recovery script to run before the next attempt, with the failed attempt's return code.
    pub owed_script: Option<(String, i64)>,
    /// The seq of the last event that touched this job: its version, for stale checks.
    pub last_seq: Seq,
    pub attempts: Vec<Attempt>,
    /// Seqs of the classifications applied to this job.
    pub decisions: Vec<Seq>,
}

impl Job {
    /// The attempt a decision put the job back for (interrupted attempts say nothing about it).
    pub fn attempt_for(&self, decision: Seq) -> Option<&Attempt> {
        self.attempts
            .iter()
            .find(|a| a.decision == Some(decision) && !a.interrupted)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Seq,
    pub workflow_id: WorkflowId,
    pub items: Vec<Classification>,
    pub job_versions: Vec<(JobId, Seq)>,
    pub actor: String,
    /// The classification that applied it, while that is not undone.
    pub applied_by: Option<Seq>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedClassification {
    pub seq: Seq,
    pub workflow_id: WorkflowId,
    pub proposal: Option<Seq>,
    pub items: Vec<Classification>,
    pub actor: String,
    pub undone_by: Option<Seq>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub last_seq: Seq,
    pub last_hash: Hash,
    pub workflows: Vec<Workflow>,
    pub jobs: Vec<Job>,
    pub proposals: BTreeMap<Seq, Proposal>,
    pub classifications: BTreeMap<Seq, AppliedClassification>,
    /// `undo` events: undo seq → target seq.
    pub undos: BTreeMap<Seq, Seq>,
    /// Idempotency key → the digest of the command that used it, and the seqs it appended.
    pub idempotency: HashMap<String, (String, Vec<Seq>)>,
    /// Seqs of the recorded evaluations (`eval history`), oldest first. Bookkeeping: not part
    /// of the digest.
    #[serde(default)]
    pub evaluations: Vec<Seq>,
}

impl State {
    pub fn workflow(&self, id: WorkflowId) -> Option<&Workflow> {
        id.checked_sub(1)
            .and_then(|i| self.workflows.get(i as usize))
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        id.checked_sub(1).and_then(|i| self.jobs.get(i as usize))
    }

    fn job_mut(&mut self, id: JobId) -> Option<&mut Job> {
        id.checked_sub(1)
            .and_then(|i| self.jobs.get_mut(i as usize))
    }

    pub fn next_workflow_id(&self) -> WorkflowId {
        self.workflows.len() as u64 + 1
    }

    pub fn next_job_id(&self) -> JobId {
        self.jobs.len() as u64 + 1
    }

    pub fn jobs_of(&self, wf: &Workflow) -> &[Job] {
        let start = (wf.first_job_id - 1) as usize;
        &self.jobs[start..start + wf.def.jobs.len()]
    }

    /// The job's resources: its spec group plus any per-job override.
    pub fn effective_resources(&self, job: &Job) -> ResourceRequirements {
        let wf = self
            .workflow(job.workflow_id)
            .expect("job of a known workflow");
        let mut rr = wf.def.resources_of(&wf.def.jobs[job.index as usize]);
        if let Some(m) = job.resource_override.memory_bytes {
            rr.memory_bytes = m;
            rr.memory = crate::model::format_memory(m);
        }
        if let Some(r) = job.resource_override.runtime_seconds {
            rr.runtime_seconds = r;
            rr.runtime = crate::model::format_duration(r);
        }
        rr
    }

    pub fn counts_by_status(&self, wf: &Workflow) -> BTreeMap<JobStatus, usize> {
        let mut counts = BTreeMap::new();
        for j in self.jobs_of(wf) {
            *counts.entry(j.status).or_insert(0) += 1;
        }
        counts
    }

    /// Torc's completion rule: every job completed, failed, canceled, terminated or disabled.
    pub fn is_complete(&self, wf: &Workflow) -> bool {
        self.jobs_of(wf).iter().all(|j| j.status.is_done())
    }

    /// The undo chain of an event: the first non-undo event it leads to, and how many undos
    /// lie on the way (odd: that root is currently undone).
    pub fn undo_root(&self, mut seq: Seq) -> (Seq, usize) {
        let mut depth = 0;
        while let Some(&t) = self.undos.get(&seq) {
            seq = t;
            depth += 1;
        }
        (seq, depth)
    }

    /// Fold one event into the state.
    pub fn apply(&mut self, ev: &Event) {
        let seq = ev.seq;
        match &ev.body {
            Body::WorkflowCreated {
                workflow_id,
                first_job_id,
                spec_digest,
                def,
            } => {
                let mut dependents = vec![Vec::new(); def.jobs.len()];
                for (i, j) in def.jobs.iter().enumerate() {
                    for &d in &j.depends_on {
                        if let Some(v) = dependents.get_mut(d as usize) {
                            v.push(i as u32);
                        }
                    }
                }
                for (i, _) in def.jobs.iter().enumerate() {
                    self.jobs.push(Job {
                        id: first_job_id + i as u64,
                        workflow_id: *workflow_id,
                        index: i as u32,
                        status: JobStatus::Uninitialized,
                        attempt_id: 1,
                        handler_retries: (0, 0),
                        resource_override: Override::default(),
                        owed_script: None,
                        last_seq: seq,
                        attempts: Vec::new(),
                        decisions: Vec::new(),
                    });
                }
                self.workflows.push(Workflow {
                    id: *workflow_id,
                    def: Arc::new(def.clone()),
                    spec_digest: spec_digest.clone(),
                    first_job_id: *first_job_id,
                    run_id: 0,
                    created_seq: seq,
                    dependents,
                });
            }
            Body::RunInitialized {
                workflow_id,
                run_id,
                kind: InitKind::Init | InitKind::Reinit,
            } => {
                if let Some(wf) = self
                    .workflows
                    .get_mut((*workflow_id as usize).wrapping_sub(1))
                {
                    wf.run_id = *run_id;
                }
            }
            Body::StatusChanged {
                job_id,
                to,
                attempt_id,
                why,
                ..
            } => {
                if let Some(j) = self.job_mut(*job_id) {
                    j.status = *to;
                    j.attempt_id = *attempt_id;
                    j.last_seq = seq;
                    if *why == Why::Interrupted {
                        if let Some(a) = j.attempts.last_mut() {
                            a.interrupted = true;
                        }
                    }
                }
            }
            Body::JobStarted {
                job_id,
                run_id,
                attempt_id,
                stdout_path,
                stderr_path,
            } => {
                if let Some(j) = self.job_mut(*job_id) {
                    // The latest decision since the previous attempt started; or, when that
                    // attempt was interrupted, the decision it was running for.
                    let since = j.attempts.last().map(|a| a.started_seq).unwrap_or(0);
                    let carried = j
                        .attempts
                        .last()
                        .filter(|a| a.interrupted)
                        .and_then(|a| a.decision);
                    let decision = j
                        .decisions
                        .last()
                        .copied()
                        .filter(|d| *d > since)
                        .or(carried);
                    j.attempts.push(Attempt {
                        run_id: *run_id,
                        attempt_id: *attempt_id,
                        started_seq: seq,
                        stdout_path: stdout_path.clone(),
                        stderr_path: stderr_path.clone(),
                        exit: None,
                        finished_seq: None,
                        decision,
                        interrupted: false,
                    });
                    j.last_seq = seq;
                }
            }
            Body::JobFinished {
                job_id,
                attempt_id,
                exit,
                ..
            } => {
                if let Some(j) = self.job_mut(*job_id) {
                    if let Some(a) = j
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.attempt_id == *attempt_id && a.exit.is_none())
                    {
                        a.exit = Some(exit.clone());
                        a.finished_seq = Some(seq);
                    }
                    j.last_seq = seq;
                }
            }
            Body::HandlerMatched { job_id, retry, .. } => {
                let run = self
                    .job(*job_id)
                    .and_then(|j| self.workflow(j.workflow_id))
                    .map(|w| w.run_id)
                    .unwrap_or(0);
                if let Some(j) = self.job_mut(*job_id) {
                    if *retry {
                        j.handler_retries = if j.handler_retries.0 == run {
                            (run, j.handler_retries.1 + 1)
                        } else {
                            (run, 1)
                        };
                    }
                    j.last_seq = seq;
                }
            }
            Body::RecoveryScriptOwed {
                job_id,
                script,
                return_code,
            } => {
                if let Some(j) = self.job_mut(*job_id) {
                    j.owed_script = Some((script.clone(), *return_code));
                    j.last_seq = seq;
                }
            }
            Body::RecoveryScriptRan { job_id, .. } => {
                if let Some(j) = self.job_mut(*job_id) {
                    j.owed_script = None;
                    j.last_seq = seq;
                }
            }
            Body::ProposalRecorded {
                workflow_id,
                items,
                job_versions,
            } => {
                self.proposals.insert(
                    seq,
                    Proposal {
                        id: seq,
                        workflow_id: *workflow_id,
                        items: items.clone(),
                        job_versions: job_versions.clone(),
                        actor: ev.actor.label(),
                        applied_by: None,
                    },
                );
            }
            Body::ClassificationApplied {
                workflow_id,
                proposal,
                items,
                ..
            } => {
                if let Some(p) = proposal.and_then(|p| self.proposals.get_mut(&p)) {
                    p.applied_by = Some(seq);
                }
                for it in items {
                    if let Some(j) = self.job_mut(it.job_id) {
                        j.decisions.push(seq);
                    }
                }
                self.classifications.insert(
                    seq,
                    AppliedClassification {
                        seq,
                        workflow_id: *workflow_id,
                        proposal: *proposal,
                        items: items.clone(),
                        actor: ev.actor.label(),
                        undone_by: None,
                    },
                );
            }
            Body::OverrideSet { job_id, to, .. } => {
                if let Some(j) = self.job_mut(*job_id) {
                    j.resource_override = *to;
                    j.last_seq = seq;
                }
            }
            Body::Undone { target } => {
                self.undos.insert(seq, *target);
                let (root, depth) = self.undo_root(seq);
                let active = depth % 2 == 0;
                if let Some(c) = self.classifications.get_mut(&root) {
                    c.undone_by = if active { None } else { Some(seq) };
                    let proposal = c.proposal;
                    if let Some(p) = proposal.and_then(|p| self.proposals.get_mut(&p)) {
                        p.applied_by = if active { Some(root) } else { None };
                    }
                }
            }
            Body::EvaluationRecorded { .. } => self.evaluations.push(seq),
            Body::StatusReset { .. } | Body::RunnerStarted { .. } | Body::RunnerStopped { .. } => {}
        }
        if let Some(stored) = &ev.idempotency_key {
            let (key, digest) = split_idempotency_key(stored);
            let entry = self
                .idempotency
                .entry(key.to_string())
                .or_insert_with(|| (digest.to_string(), Vec::new()));
            entry.1.push(seq);
        }
        self.last_seq = seq;
        self.last_hash = ev.hash;
    }

    /// A hash of the canonical operational state; equal states give equal digests.
    pub fn digest(&self) -> String {
        #[derive(Serialize)]
        struct CanonWorkflow<'a> {
            id: WorkflowId,
            spec_digest: &'a str,
            first_job_id: JobId,
            run_id: u64,
            jobs: usize,
        }
        #[derive(Serialize)]
        struct CanonJob<'a> {
            id: JobId,
            status: u8,
            attempt_id: u32,
            handler_retries: (u64, u32),
            resource_override: Override,
            owed_script: &'a Option<(String, i64)>,
        }
        let mut h = blake3::Hasher::new();
        h.update(b"torc-ledger state v1\n");
        for wf in &self.workflows {
            let c = CanonWorkflow {
                id: wf.id,
                spec_digest: &wf.spec_digest,
                first_job_id: wf.first_job_id,
                run_id: wf.run_id,
                jobs: wf.def.jobs.len(),
            };
            h.update(&bincode::serialize(&c).expect("serializable"));
        }
        for j in &self.jobs {
            let c = CanonJob {
                id: j.id,
                status: j.status.to_int(),
                attempt_id: j.attempt_id,
                handler_retries: j.handler_retries,
                resource_override: j.resource_override,
                owed_script: &j.owed_script,
            };
            h.update(&bincode::serialize(&c).expect("serializable"));
        }
        for (id, p) in &self.proposals {
            h.update(&id.to_le_bytes());
            h.update(&[p.applied_by.is_some() as u8]);
        }
        crate::event::hex(h.finalize().as_bytes())
    }
}

/// A stored idempotency key is `KEY#DIGEST`: the caller's key and the first 16 hex digits of
/// the digest of the command it was used with (so the same key with another command is refused,
/// not answered with the first command's result).
pub fn split_idempotency_key(stored: &str) -> (&str, &str) {
    match stored.rsplit_once('#') {
        Some((k, d)) if d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()) => (k, d),
        _ => (stored, ""),
    }
}

/// Why a job is in its status, for people: the latest reason recorded.
pub fn describe_why(why: &Why) -> String {
    match why {
        Why::Initialized => "initialized".into(),
        Why::Unblocked => "dependencies done".into(),
        Why::Started => "started".into(),
        Why::Finished => "finished".into(),
        Why::HandlerRetry => "failure handler retry".into(),
        Why::MaxRetriesExceeded => "failure handler retries exhausted".into(),
        Why::NoHandler => "no failure handler".into(),
        Why::NoMatchingRule => "no matching failure-handler rule".into(),
        Why::UpstreamFailed { upstream } => format!("upstream job {upstream} did not succeed"),
        Why::Classified => "classified".into(),
        Why::Reset => "reset".into(),
        Why::Interrupted => "interrupted".into(),
        Why::Undo => "undo".into(),
        Why::Requeued => "put back by recovery".into(),
    }
}

/// What a runner needs to know about a workflow to make progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerView {
    pub workflow_id: WorkflowId,
    pub workflow_name: String,
    pub run_id: u64,
    pub submit_dir: String,
    /// Ready jobs, highest priority first, then by id.
    pub ready: Vec<ReadyJob>,
    pub counts: BTreeMap<JobStatus, usize>,
    pub last_seq: Seq,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyJob {
    pub job_id: JobId,
    pub name: String,
    pub command: String,
    /// Workflow env, then job env (job wins).
    pub env: Vec<(String, String)>,
    pub attempt_id: u32,
    pub priority: i64,
    pub runtime_seconds: u64,
    pub memory_bytes: u64,
    pub owed_script: Option<(String, i64)>,
}

impl State {
    pub fn runner_view(&self, workflow_id: WorkflowId) -> Option<RunnerView> {
        let wf = self.workflow(workflow_id)?;
        let mut ready: Vec<ReadyJob> = self
            .jobs_of(wf)
            .iter()
            .filter(|j| j.status == JobStatus::Ready)
            .map(|j| {
                let def = &wf.def.jobs[j.index as usize];
                let rr = self.effective_resources(j);
                let mut env: Vec<(String, String)> = wf
                    .def
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                env.extend(def.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                ReadyJob {
                    job_id: j.id,
                    name: def.name.clone(),
                    command: def.command.clone(),
                    env,
                    attempt_id: j.attempt_id,
                    priority: def.priority,
                    runtime_seconds: rr.runtime_seconds,
                    memory_bytes: rr.memory_bytes,
                    owed_script: j.owed_script.clone(),
                }
            })
            .collect();
        ready.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.job_id.cmp(&b.job_id)));
        Some(RunnerView {
            workflow_id,
            workflow_name: wf.def.name.clone(),
            run_id: wf.run_id,
            submit_dir: wf.def.submit_dir.clone(),
            ready,
            counts: self.counts_by_status(wf),
            last_seq: self.last_seq,
        })
    }
}
