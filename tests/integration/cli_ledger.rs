//! Decisions, proposals, undo, replay, export/import, time travel, refusals, and many
//! processes on one ledger.

use crate::common::{bin, stderr, stdout, wait_for, Sandbox};
use serde_json::json;
use std::process::Command;

const DEMO: &str = include_str!("../../examples/demo.yaml");

fn parked_demo() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("demo.yaml", DEMO);
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    sb
}

fn export(sb: &Sandbox) -> String {
    let out = sb.run(&["export"]);
    assert_eq!(out.status.code(), Some(0));
    stdout(&out)
}

fn job_status(sb: &Sandbox, id: &str) -> String {
    sb.json(&["jobs", "get", id]).1["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn dry_run_records_a_proposal_and_apply_does_exactly_that_once() {
    let sb = parked_demo();
    let (code, p) = sb.json(&[
        "classify",
        "1",
        "--job",
        "2",
        "--action",
        "retry",
        "--memory",
        "1g",
        "--reason",
        "NCCL: transient",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["results"][0]["status"], "would_apply");
    assert_eq!(p["results"][0]["job_name"], "train");
    let pid = p["proposal_id"].as_u64().unwrap();
    // Nothing changed but the proposal.
    assert_eq!(job_status(&sb, "2"), "pending_failed");
    let (_, list) = sb.json(&["proposals", "list", "1"]);
    assert_eq!(list["items"][0]["status"], "open");

    let (code, a) = sb.json(&["proposals", "apply", &pid.to_string()]);
    assert_eq!(code, 0, "{a}");
    assert_eq!(a["results"][0]["status"], "applied");
    let (_, j) = sb.json(&["jobs", "get", "2"]);
    assert_eq!(j["status"], "ready");
    assert_eq!(j["attempt_id"], 2);
    // The override is on this job only; the shared group is untouched.
    assert_eq!(j["memory_bytes"], 1u64 << 30);
    assert_eq!(
        sb.json(&["jobs", "get", "3"]).1["memory_bytes"],
        512u64 << 20
    );
    assert_eq!(j["decisions"][0]["proposal_id"], pid);

    // Applying again is refused, and says by which event it was applied.
    let before = export(&sb);
    let out = sb.run(&["proposals", "apply", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("already applied"), "{}", stderr(&out));
    assert_eq!(export(&sb), before, "a refused command records nothing");
}

#[test]
fn a_proposal_goes_stale_when_its_job_changes() {
    let sb = parked_demo();
    let (_, p) = sb.json(&[
        "classify",
        "1",
        "--job",
        "3",
        "--action",
        "fail",
        "--reason",
        "bug",
        "--dry-run",
    ]);
    let pid = p["proposal_id"].as_u64().unwrap().to_string();
    // Someone decides job 3 directly, then undoes it: job 3 is pending_failed again but changed.
    let (_, d) = sb.json(&[
        "classify", "1", "--job", "3", "--action", "retry", "--reason", "x",
    ]);
    let seq = d["seqs"][0].as_u64().unwrap().to_string();
    assert_eq!(sb.run(&["undo", &seq]).status.code(), Some(0));
    assert_eq!(job_status(&sb, "3"), "pending_failed");
    let out = sb.run(&["proposals", "apply", &pid]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(err.contains("stale") && err.contains("job 3"), "{err}");
    assert_eq!(
        sb.json(&["proposals", "list", "1"]).1["items"][0]["status"],
        "stale"
    );
}

#[test]
fn only_pending_failed_jobs_can_be_classified_and_refusals_are_per_job() {
    let sb = parked_demo();
    let before = export(&sb);
    sb.write(
        "batch.json",
        &json!([
            {"job_id": 2, "action": "retry", "reason": "transient"},
            {"job_id": 1, "action": "fail", "reason": "completed already"},
            {"job_id": 77, "action": "retry"}
        ])
        .to_string(),
    );
    let (code, v) = sb.json(&["classify", "1", "--from", "batch.json"]);
    assert_eq!(code, 5);
    let results = v["error"]["detail"].as_array().unwrap();
    assert_eq!(results[0]["status"], "skipped");
    assert_eq!(results[1]["status"], "error");
    assert!(results[1]["message"]
        .as_str()
        .unwrap()
        .contains("is completed"));
    assert!(results[2]["message"]
        .as_str()
        .unwrap()
        .contains("no such job"));
    assert_eq!(export(&sb), before, "nothing partial was recorded");
    // Malformed memory in a file: a bad-input error naming the value.
    sb.write(
        "bad.json",
        r#"[{"job_id": 2, "action": "retry", "memory": "lots"}]"#,
    );
    let out = sb.run(&["classify", "1", "--from", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"lots\""), "{}", stderr(&out));
    sb.write("act.json", r#"[{"job_id": 2, "action": "maybe"}]"#);
    let out = sb.run(&["classify", "1", "--from", "act.json"]);
    assert!(stderr(&out).contains("unknown action"), "{}", stderr(&out));
    // A job of another workflow.
    sb.run(&["workflows", "create", "demo.yaml"]);
    let out = sb.run(&[
        "classify", "2", "--job", "2", "--action", "fail", "--reason", "r",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("belongs to workflow 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fail_cancels_downstream_and_undo_restores_then_redo() {
    let sb = parked_demo();
    let digest0 = sb.json(&["replay"]).1["digest"].clone();
    let (_, f) = sb.json(&[
        "classify", "1", "--job", "3", "--action", "fail", "--reason", "KeyError",
    ]);
    let fail_seq = f["seqs"][0].as_u64().unwrap();
    assert_eq!(job_status(&sb, "3"), "failed");
    assert_eq!(job_status(&sb, "5"), "canceled");
    // The cancellation is caused by that decision.
    let (_, shown) = sb.json(&["show", &fail_seq.to_string()]);
    let caused = shown["caused"].as_array().unwrap();
    assert!(caused.iter().any(|e| e["summary"]
        .as_str()
        .unwrap()
        .contains("blocked → canceled")));

    // Dry run changes nothing; the real undo restores the digest exactly.
    let before = export(&sb);
    let (code, dry) = sb.json(&["undo", &fail_seq.to_string(), "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(dry["would_append"].as_array().unwrap().len(), 3);
    assert_eq!(export(&sb), before);
    let (code, u) = sb.json(&["undo", &fail_seq.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(job_status(&sb, "3"), "pending_failed");
    assert_eq!(job_status(&sb, "5"), "blocked");
    assert_eq!(sb.json(&["replay"]).1["digest"], digest0);
    // Undoing the same decision twice is refused; undoing the undo redoes it.
    let out = sb.run(&["undo", &fail_seq.to_string()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("already undone"), "{}", stderr(&out));
    let undo_seq = u["seqs"][0].as_u64().unwrap().to_string();
    assert_eq!(sb.run(&["undo", &undo_seq]).status.code(), Some(0));
    assert_eq!(job_status(&sb, "5"), "canceled");
}

#[test]
fn undo_refuses_when_later_events_moved_on_and_names_them() {
    let sb = parked_demo();
    let (_, r) = sb.json(&[
        "classify", "1", "--job", "2", "--action", "retry", "--reason", "t",
    ]);
    let seq = r["seqs"][0].as_u64().unwrap().to_string();
    sb.run(&["workflows", "run", "1"]); // train runs again: the retry has consequences now
    let before = export(&sb);
    let out = sb.run(&["undo", &seq]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(
        err.contains("later events changed") && err.contains("job 2"),
        "{err}"
    );
    assert!(err.contains("job_started"), "names the later events: {err}");
    assert_eq!(export(&sb), before);
    // Facts from the runner are not decisions.
    let out = sb.run(&["undo", "1"]);
    assert!(
        stderr(&out).contains("cannot be undone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn at_seq_reads_the_past_and_replay_verifies() {
    let sb = parked_demo();
    let (_, log) = sb.json(&["log", "-n", "1000"]);
    let total = log["items"].as_array().unwrap().len() as u64;
    assert_eq!(log["items"][0]["seq"], total, "newest first, seqs dense");
    // As of event 1 the workflow existed but nothing was initialized.
    let (_, st) = sb.json(&["status", "1", "--at", "1"]);
    assert_eq!(st["jobs_by_status"], json!({"uninitialized": 5}));
    let (_, jl) = sb.json(&["jobs", "list", "1", "--at", "8"]);
    assert_eq!(jl["items"][0]["status"], "ready");
    let (_, r) = sb.json(&["replay", "--until", "8"]);
    assert_eq!(r["events"], 8);
    let (code, r) = sb.json(&["replay", "--verify"]);
    assert_eq!(code, 0);
    assert_eq!(r["chain_ok"], true);
    assert_eq!(r["matches_live"], true);
    // Writes do not take --at.
    let out = sb.run(&["undo", "3", "--at", "2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn export_import_round_trips_and_refuses_tampering() {
    let sb = parked_demo();
    let text = export(&sb);
    let digest = sb.json(&["replay"]).1["digest"].clone();
    sb.write("log.jsonl", &text);
    let (code, v) = sb.json(&["--ledger", "copy", "import", "log.jsonl"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["digest"], digest);
    assert_eq!(
        sb.json(&["--ledger", "copy", "replay", "--verify"]).1["digest"],
        digest
    );
    // Importing into a non-empty ledger is refused.
    let out = sb.run(&["--ledger", "copy", "import", "log.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not empty"));
    // Change one reason in event 27's neighbourhood: refused, naming the first bad seq.
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[9]).unwrap();
    v["actor"] = json!("runner");
    v["body"] = json!({"recovery_script_ran": {"job_id": 1, "attempt_id": 1, "script": "x", "return_code": 0}});
    lines[9] = v.to_string();
    sb.write("tampered.jsonl", &(lines.join("\n") + "\n"));
    let out = sb.run(&["--ledger", "t2", "import", "tampered.jsonl"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("event 10"), "{}", stderr(&out));
    // Nothing was imported.
    let out = sb.run(&["--ledger", "t2", "replay"]);
    assert_eq!(
        sb.json(&["--ledger", "t2", "replay"]).1["events"],
        0,
        "{}",
        stderr(&out)
    );
}

#[test]
fn replay_verify_names_the_first_bad_seq_of_a_tampered_store() {
    let sb = parked_demo();
    {
        let l = torc_ledger::ledger::LocalLedger::open(&sb.path().join("torc_ledger")).unwrap();
        let ev = l.store().get(12, false).unwrap().unwrap();
        let mut env = ev.env.clone();
        env.actor = torc_ledger::event::Actor::System;
        // Re-encode with a valid hash of its own: only the chain link after it breaks.
        let (bytes, _) = torc_ledger::event::codec::encode(&env);
        l.store().tamper(12, &bytes).unwrap();
    }
    let out = sb.run(&["replay", "--verify"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("broken at event 13"),
        "{}",
        stderr(&out)
    );
    // Reads refuse a ledger whose chain is broken rather than answer from a wrong state.
    let out = sb.run(&["status", "1"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

#[test]
fn idempotency_key_gives_the_same_answer_and_appends_nothing() {
    let sb = parked_demo();
    let args = [
        "classify",
        "1",
        "--job",
        "2",
        "--action",
        "retry",
        "--reason",
        "t",
        "--idempotency-key",
        "agent-42",
    ];
    let (_, a) = sb.json(&args);
    let before = export(&sb);
    let (code, b) = sb.json(&args);
    assert_eq!(code, 0);
    assert_eq!(a["seqs"], b["seqs"]);
    assert_eq!(b["replayed"], true);
    assert_eq!(export(&sb), before);
}

/// While `run` owns the ledger, other processes read and write through it.
#[test]
fn many_processes_share_one_ledger_while_run_is_running() {
    let sb = parked_demo();
    sb.write(
        "slow.yaml",
        "name: slow\njobs:\n  - {name: wait, command: 'while [ ! -f go ]; do sleep 0.05; done'}\n",
    );
    let run = sb.spawn(&["run", "slow.yaml"]);
    // Wait until the slow job runs (the owner serves the ledger from then on).
    wait_for("the slow job to run", || {
        let (code, v) = sb.json(&["jobs", "list", "2"]);
        code == 0 && v["items"][0]["status"] == "running"
    });
    assert!(sb.path().join("torc_ledger/owner.sock").exists());
    // Reads, a decision and an undo from other processes, concurrently.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let dir = sb.path().to_path_buf();
            std::thread::spawn(move || {
                let out = Command::new(bin())
                    .args(["-f", "json", "status", "1"])
                    .current_dir(dir)
                    .output()
                    .unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            })
        })
        .collect();
    let (code, d) = sb.json(&[
        "classify", "1", "--job", "3", "--action", "fail", "--reason", "bug",
    ]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(job_status(&sb, "5"), "canceled");
    let seq = d["seqs"][0].as_u64().unwrap().to_string();
    let out = sb.run(&["undo", &seq]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for t in threads {
        t.join().unwrap();
    }
    let out = sb.run(&["log", "-n", "3"]);
    assert!(!stderr(&out).contains("lock"), "{}", stderr(&out));
    std::fs::write(sb.path().join("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The owner is gone: the socket is cleaned up and short commands open the ledger directly.
    assert!(!sb.path().join("torc_ledger/owner.sock").exists());
    assert_eq!(job_status(&sb, "3"), "pending_failed");
    assert_eq!(sb.json(&["replay", "--verify"]).1["chain_ok"], true);
}

#[test]
fn ctrl_c_stops_jobs_cleanly_and_run_resumes() {
    let sb = Sandbox::new();
    sb.write(
        "long.yaml",
        "name: long\njobs:\n  - {name: a, command: 'if [ -f go ]; then exit 0; fi; touch started; sleep 30'}\n  - {name: b, command: 'true', depends_on: [a]}\n",
    );
    let run = sb.spawn(&["run", "long.yaml"]);
    wait_for("the job to start", || sb.path().join("started").exists());
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"));
    let (_, j) = sb.json(&["jobs", "get", "1"]);
    assert_eq!(j["status"], "ready");
    assert_eq!(j["attempt_id"], 2);
    assert_eq!(j["attempts"][0]["return_code"], 143); // SIGTERM
    let log = stdout(&sb.run(&["log"]));
    assert!(log.contains("interrupted"), "{log}");
    // Resume.
    std::fs::write(sb.path().join("go"), "").unwrap();
    let out = sb.run(&["workflows", "run", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(job_status(&sb, "2"), "completed");
}
