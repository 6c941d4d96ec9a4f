//! `log`, `show`, `replay`, `undo`, `export`, `import`: the ledger itself.

use super::render::{time_str, Out};
use super::{exit, no_at, open_existing, Cli, CliError, CliResult};
use crate::decide::{Command, DecideError};
use crate::event::codec::ExportLine;
use crate::event::describe::describe;
use crate::event::{Body, Envelope, Event};
use crate::ledger::{Ctx, Ledger, LedgerError, LocalLedger};
use crate::model::{JobId, Seq, WorkflowId};
use crate::state::State;
use clap::Args;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Only events about this workflow (its jobs, runs and decisions).
    #[arg(long, short = 'w')]
    pub workflow: Option<WorkflowId>,
    /// Show at most N events (newest first).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub seq: Seq,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Stop after this event (state as of SEQ).
    #[arg(long, value_name = "SEQ")]
    pub until: Option<Seq>,
    /// Also compare the replayed digest with the live state's digest.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct UndoArgs {
    /// The event to undo: a classification, a reset-status, or an undo (to redo).
    pub seq: Seq,
    /// Show what would be restored, record nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A file written by `torc-ledger export` ("-" for stdin).
    pub file: PathBuf,
}

pub use crate::views::workflow_of;

pub fn namer(s: &State) -> impl Fn(JobId) -> Option<String> + '_ {
    move |id| crate::views::job_name(s, id)
}

fn event_json(ev: &Event, s: &State) -> Value {
    let mut v = serde_json::to_value(ExportLine::from_event(ev)).unwrap_or(Value::Null);
    v["time"] = json!(time_str(ev.time_ms));
    v["summary"] = json!(describe(ev, &namer(s)));
    v
}

pub fn log(cli: &Cli, out: &Out, a: &LogArgs) -> CliResult {
    let ledger = open_existing(cli)?;
    let s = ledger.state(None)?;
    let last = cli.at.unwrap_or(s.last_seq).min(s.last_seq);
    // Walk back in windows until enough events match.
    let mut picked: Vec<Event> = Vec::new();
    let mut hi = last;
    const WINDOW: u64 = 4096;
    while hi >= 1 && picked.len() < a.limit {
        let lo = hi.saturating_sub(WINDOW - 1).max(1);
        let evs = ledger.events(lo, Some(hi), WINDOW as usize)?;
        for ev in evs.into_iter().rev() {
            if picked.len() >= a.limit {
                break;
            }
            if a.workflow.is_none() || workflow_of(&s, &ev.body) == a.workflow {
                picked.push(ev);
            }
        }
        if lo == 1 {
            break;
        }
        hi = lo - 1;
    }
    if out.json() {
        let items: Vec<Value> = picked.iter().map(|e| event_json(e, &s)).collect();
        out.print_json(&json!({"items": items}));
        return Ok(exit::OK);
    }
    if picked.is_empty() {
        out.note("(no events)");
        return Ok(exit::OK);
    }
    // Newest batch first; inside a batch, the head and then what it caused.
    let mut i = 0;
    while i < picked.len() {
        // Find the batch: events are newest-first, children have index > 0.
        let mut j = i;
        while j < picked.len() && picked[j].index > 0 {
            j += 1;
        }
        let batch_end = j.min(picked.len() - 1);
        let head = &picked[batch_end];
        let name = namer(&s);
        if head.index == 0 {
            out.line(format!(
                "{:>6}  {}  {:<18}  {}{}",
                head.seq,
                time_str(head.time_ms),
                head.actor.label(),
                describe(head, &name),
                decision_link(&s, head)
            ));
        }
        for k in (i..batch_end + usize::from(head.index != 0)).rev() {
            if k == batch_end && head.index == 0 {
                continue;
            }
            let ev = &picked[k];
            out.line(format!("{:>6}    └ {}", ev.seq, describe(ev, &name)));
        }
        i = batch_end + 1;
    }
    Ok(exit::OK)
}

/// For a runner event of an attempt that a decision caused: which decision, and (at the end)
/// how it turned out. Empty otherwise.
fn decision_link(s: &State, ev: &Event) -> String {
    let (job_id, finished) = match &ev.body {
        Body::StatusChanged {
            job_id,
            why: crate::event::Why::Started,
            ..
        } => (*job_id, false),
        Body::JobFinished { job_id, .. } => (*job_id, true),
        _ => return String::new(),
    };
    let Some(job) = s.job(job_id) else {
        return String::new();
    };
    let attempt = job.attempts.iter().find(|a| {
        if finished {
            a.finished_seq == Some(ev.seq)
        } else {
            a.started_seq == ev.seq + 1
        }
    });
    match attempt.and_then(|a| a.decision.map(|d| (a, d))) {
        Some((a, d)) if finished => {
            let ok = a.exit.as_ref().is_some_and(|e| e.succeeded());
            format!(
                "  [retry decided by event {d} {}]",
                if ok { "succeeded" } else { "failed again" }
            )
        }
        Some((_, d)) => format!("  [retry decided by event {d}]"),
        None => String::new(),
    }
}

pub fn show(cli: &Cli, out: &Out, a: &ShowArgs) -> CliResult {
    let ledger = open_existing(cli)?;
    if let Some(at) = cli.at {
        if a.seq > at {
            return Err(CliError::bad_input(format!(
                "event {} comes after --at {at}; as of event {at} it did not exist yet",
                a.seq
            )));
        }
    }
    let s = super::read_state(cli, &ledger)?;
    let evs = ledger.events(a.seq, Some(a.seq), 1)?;
    let ev = evs.first().ok_or_else(|| {
        CliError::bad_input(format!(
            "event {} does not exist (the log has {} events); see `torc-ledger log`",
            a.seq, s.last_seq
        ))
    })?;
    // The rest of its batch, if it is a head.
    let mut caused = Vec::new();
    if ev.index == 0 {
        for e in ledger.events(a.seq + 1, cli.at, 100_000)? {
            if e.index == 0 {
                break;
            }
            caused.push(e);
        }
    }
    let head = (ev.index > 0).then(|| ev.seq - ev.index as u64);
    if out.json() {
        let mut v = event_json(ev, &s);
        v["caused"] = json!(caused.iter().map(|e| event_json(e, &s)).collect::<Vec<_>>());
        v["batch_head"] = json!(head);
        out.print_json(&v);
    } else {
        let name = namer(&s);
        out.line(format!("event {} ({})", ev.seq, ev.body.kind()));
        out.line(format!("  time:  {}", time_str(ev.time_ms)));
        out.line(format!("  actor: {}", ev.actor.label()));
        if let Some(c) = ev.cause {
            out.line(format!("  cause: event {c}"));
        }
        if let Some(h) = head {
            out.line(format!("  part of the batch of event {h}"));
        }
        if let Some(k) = &ev.idempotency_key {
            out.line(format!("  idempotency key: {k}"));
        }
        out.line(format!("  what:  {}", describe(ev, &name)));
        if let Body::ClassificationApplied { items, .. } | Body::ProposalRecorded { items, .. } =
            &ev.body
        {
            // For an applied decision, how each job's next attempt turned out.
            let outcomes = crate::views::decision(&s, ev.seq);
            for it in items {
                let outcome = outcomes
                    .as_ref()
                    .and_then(|d| {
                        d["items"]
                            .as_array()?
                            .iter()
                            .find(|i| i["job_id"] == it.job_id)?["outcome"]
                            .as_str()
                            .map(|o| format!(" [{o}]"))
                    })
                    .unwrap_or_default();
                out.line(format!(
                    "    job {}: {} — {}{outcome}",
                    it.job_id,
                    it.action.as_str(),
                    if it.reason.is_empty() {
                        "(no reason given)"
                    } else {
                        &it.reason
                    }
                ));
            }
        }
        if let Some(u) = s.undos.iter().find(|(_, t)| **t == ev.seq).map(|(u, _)| *u) {
            out.line(format!("  undone by event {u}"));
        }
        out.line(format!("  hash:  {}", crate::event::hex(&ev.hash)));
        out.line(format!("  prev:  {}", crate::event::hex(&ev.prev_hash)));
        for e in &caused {
            out.line(format!("  └ {:>5}  {}", e.seq, describe(e, &name)));
        }
    }
    Ok(exit::OK)
}

pub fn replay(cli: &Cli, out: &Out, a: &ReplayArgs) -> CliResult {
    let ledger = open_existing(cli)?;
    let until = a.until.or(cli.at);
    let report = ledger.verify(until)?;
    let live = if a.verify && until.is_none() {
        Some(ledger.state(None)?.digest())
    } else {
        None
    };
    if a.verify && until.is_some() {
        out.note("note: with --until (or --at) the replay is not compared with the live state; only the hash chain up to that event is checked");
    }
    let matches_live = live.as_ref().map(|l| *l == report.digest);
    if out.json() {
        out.print_json(&json!({
            "events": report.events,
            "last_seq": report.last_seq,
            "digest": report.digest,
            "chain_ok": report.chain_ok,
            "first_bad_seq": report.first_bad.as_ref().map(|b| b.0),
            "problem": report.first_bad.as_ref().map(|b| b.1.clone()),
            "live_digest": live,
            "matches_live": matches_live,
        }));
    } else {
        out.line(format!("events:   {}", report.events));
        out.line(format!("digest:   {}", report.digest));
        out.line(format!(
            "chain_ok: {}",
            if report.chain_ok { "true" } else { "false" }
        ));
        if let Some(m) = matches_live {
            out.line(format!(
                "live:     {}",
                if m {
                    "replayed state equals the live state"
                } else {
                    "DIFFERS from the live state"
                }
            ));
        }
    }
    if let Some((seq, why)) = &report.first_bad {
        return Err(CliError {
            code: exit::VERIFY_FAILED,
            message: format!(
                "the hash chain is broken at event {seq}: {why}. Events before {seq} verify; keep a copy of the ledger directory and restore from an export"
            ),
            detail: None,
        });
    }
    if matches_live == Some(false) {
        return Err(CliError {
            code: exit::VERIFY_FAILED,
            message: "the replayed state differs from the live state".into(),
            detail: None,
        });
    }
    Ok(exit::OK)
}

pub fn undo(cli: &Cli, out: &Out, a: &UndoArgs) -> CliResult {
    no_at(cli, "undo")?;
    let ledger = open_existing(cli)?;
    let s = ledger.state(None)?;
    let cmd = Command::Undo {
        target: a.seq,
        batch: Vec::new(),
    };
    let name = namer(&s);
    let fake = |b: &Body, i: usize| Event {
        env: Envelope {
            seq: s.last_seq + 1 + i as u64,
            time_ms: 0,
            actor: crate::event::Actor::current_user(),
            cause: None,
            index: i as u32,
            idempotency_key: None,
            prev_hash: [0; 32],
            body: b.clone(),
        },
        hash: [0; 32],
    };
    if a.dry_run {
        let bodies = ledger.preview(cmd).map_err(|e| undo_error(&ledger, e))?;
        if out.json() {
            out.print_json(&json!({
                "dry_run": true,
                "target": a.seq,
                "would_append": bodies.iter().enumerate().map(|(i, b)| json!({
                    "kind": b.kind(), "body": b, "summary": describe(&fake(b, i), &name)
                })).collect::<Vec<_>>(),
            }));
        } else {
            out.line(format!(
                "undo {} would append {} events:",
                a.seq,
                bodies.len()
            ));
            for (i, b) in bodies.iter().enumerate() {
                out.line(format!("  {}", describe(&fake(b, i), &name)));
            }
            out.line("(dry run: nothing recorded)");
        }
        return Ok(exit::OK);
    }
    let appended = ledger
        .execute(cmd, Ctx::user())
        .map_err(|e| undo_error(&ledger, e))?;
    let evs = ledger.events(
        appended.head(),
        appended.seqs.last().copied(),
        appended.seqs.len(),
    )?;
    if out.json() {
        out.print_json(&json!({
            "target": a.seq,
            "seqs": appended.seqs,
            "events": evs.iter().map(|e| event_json(e, &s)).collect::<Vec<_>>(),
        }));
    } else {
        out.line(format!(
            "undid event {} as event {}; redo with: torc-ledger undo {}",
            a.seq,
            appended.head(),
            appended.head()
        ));
        for e in evs.iter().skip(1) {
            out.line(format!("  └ {:>5}  {}", e.seq, describe(e, &name)));
        }
    }
    Ok(exit::OK)
}

/// Name the later events in the way, not only the jobs.
fn undo_error(ledger: &Ledger, e: LedgerError) -> CliError {
    if let LedgerError::Decide(DecideError::UndoBlocked { target, in_the_way }) = &e {
        let target = *target;
        let jobs: Vec<JobId> = in_the_way.iter().map(|(j, _)| *j).collect();
        let later: Vec<String> = ledger
            .events(target + 1, None, usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .filter(|ev| ev.body.job_id().is_some_and(|j| jobs.contains(&j)))
            // Not the target's own batch.
            .filter(|ev| ev.seq - ev.index as u64 != target)
            .take(20)
            .map(|ev| format!("{} ({})", ev.seq, ev.body.kind()))
            .collect();
        // The heads of those events: if one of them cannot be undone, neither can the target.
        let stuck: std::collections::BTreeSet<String> = ledger
            .events(target + 1, None, usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .filter(|ev| ev.body.job_id().is_some_and(|j| jobs.contains(&j)))
            .filter(|ev| ev.seq - ev.index as u64 != target)
            .filter_map(|ev| {
                let head = ev.seq - ev.index as u64;
                ledger.events(head, Some(head), 1).ok()?.into_iter().next()
            })
            .filter(|h| {
                !matches!(
                    h.body,
                    Body::ClassificationApplied { .. }
                        | Body::StatusReset { .. }
                        | Body::Undone { .. }
                )
            })
            .map(|h| format!("{} ({})", h.seq, h.body.kind()))
            .collect();
        let mut ce = CliError::from(e);
        ce.message
            .push_str(&format!("\nlater events in the way: {}", later.join(", ")));
        if !stuck.is_empty() {
            ce.message.push_str(&format!(
                "\nevent {target} cannot be undone at all now: the jobs moved on through {} (runs and runner facts are not undoable). Decide the jobs anew instead: classify them, or `workflows reset-status`",
                stuck.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        return ce;
    }
    e.into()
}

pub fn export(cli: &Cli, _out: &Out) -> CliResult {
    let ledger = open_existing(cli)?;
    let last = cli.at.unwrap_or(u64::MAX);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut from = 1;
    loop {
        let evs = ledger.events(from, Some(last), 10_000)?;
        if evs.is_empty() {
            break;
        }
        for ev in &evs {
            let line = serde_json::to_string(&ExportLine::from_event(ev))
                .map_err(|e| CliError::internal(e.to_string()))?;
            if writeln!(stdout, "{line}").is_err() {
                return Ok(exit::OK); // reader went away (e.g. `| head`)
            }
        }
        from = evs.last().map(|e| e.seq + 1).unwrap_or(u64::MAX);
    }
    let _ = stdout.flush();
    Ok(exit::OK)
}

pub fn import(cli: &Cli, out: &Out, a: &ImportArgs) -> CliResult {
    no_at(cli, "import")?;
    let reader: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&a.file).map_err(|e| {
                CliError::bad_input(format!("cannot read {}: {e}", a.file.display()))
            })?,
        ))
    };
    let local = match LocalLedger::open(&cli.ledger) {
        Ok(l) => l,
        Err(LedgerError::Busy(_)) => {
            return Err(CliError::bad_input(format!(
            "the ledger at {} is in use by {}; import into a new, unused directory with --ledger",
            cli.ledger.display(),
            crate::ledger::owner_description(&cli.ledger)
        )))
        }
        Err(e) => return Err(e.into()),
    };
    let n = local.import(reader.lines())?;
    let digest = local.with_state(|s| s.digest());
    if out.json() {
        out.print_json(&json!({"imported": n, "digest": digest, "chain_ok": true}));
    } else {
        out.line(format!(
            "imported {n} events into {}; every hash verified; digest {digest}",
            cli.ledger.display()
        ));
    }
    Ok(exit::OK)
}
