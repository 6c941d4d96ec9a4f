//! Behaviour that a review found wrong once: owner hand-over, idempotency keys tied to their
//! command, bounded recovery, long ledger paths, recovery scripts and runtimes, interrupted retries.

use crate::common::{stderr, stdout, wait_for, Sandbox};

#[test]
fn a_client_run_takes_over_when_the_owner_exits_first() {
    let sb = Sandbox::new();
    sb.write(
        "a.yaml",
        "name: a\njobs:\n  - {name: a, command: 'sleep 1'}\n",
    );
    sb.write(
        "b.yaml",
        "name: b\njobs:\n  - {name: b1, command: 'sleep 3'}\n  - {name: b2, command: 'echo hi', depends_on: [b1]}\n",
    );
    let owner = sb.spawn(&["run", "a.yaml"]);
    wait_for("the owner's socket", || {
        sb.path().join("torc_ledger/owner.sock").exists()
    });
    // b runs through a's process; a exits while b1 still runs; b takes the ledger over.
    let out = sb.run(&["run", "b.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let _ = owner.wait_with_output();
    let (_, st) = sb.json(&["status", "2"]);
    assert_eq!(st["jobs_by_status"]["completed"], 2, "{st}");
    let (_, j) = sb.json(&["jobs", "get", "2"]);
    assert_eq!(j["attempts"].as_array().unwrap().len(), 1, "b1 ran once");
    assert_eq!(sb.json(&["replay", "--verify"]).1["chain_ok"], true);
    assert!(
        !sb.path().join("torc_ledger/owner.sock").exists(),
        "the new owner cleaned up"
    );
}

#[test]
fn an_idempotency_key_is_tied_to_its_command() {
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    let (code, _) = sb.json(&[
        "classify",
        "1",
        "--job",
        "2",
        "--action",
        "retry",
        "--reason",
        "x",
        "--dry-run",
        "--idempotency-key",
        "K",
    ]);
    assert_eq!(code, 0);
    let before = stdout(&sb.run(&["export"]));
    for args in [
        vec!["proposals", "apply", "29", "--idempotency-key", "K"],
        vec![
            "classify",
            "1",
            "--job",
            "3",
            "--action",
            "fail",
            "--reason",
            "y",
            "--idempotency-key",
            "K",
        ],
        vec!["proposals", "apply", "9999", "--idempotency-key", "K"],
    ] {
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("already used for another command"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(stdout(&sb.run(&["export"])), before, "nothing recorded");
    assert_eq!(sb.json(&["jobs", "get", "2"]).1["status"], "pending_failed");
}

#[test]
fn watch_stops_escalating_a_fix_that_does_not_help() {
    let sb = Sandbox::new();
    sb.write(
        "o.yaml",
        "name: o\nuse_pending_failed: true\nresource_requirements:\n  - {name: r, num_cpus: 1, memory: 1g, runtime: PT1M}\njobs:\n  - {name: a, command: 'echo Killed >&2; exit 137', resource_requirements: r}\n",
    );
    assert_eq!(sb.run(&["run", "o.yaml"]).status.code(), Some(4));
    let out = sb.run(&["watch", "1"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("failed again each time"), "{text}");
    let (_, j) = sb.json(&["jobs", "get", "1"]);
    assert_eq!(
        j["attempts"].as_array().unwrap().len(),
        3,
        "two fixes tried, then a person"
    );
    // Propose-only stages stop after proposing, and do not propose twice.
    let sb = Sandbox::new();
    sb.write("o.yaml", "name: o\nuse_pending_failed: true\njobs:\n  - {name: a, command: 'echo Killed >&2; exit 137'}\n");
    assert_eq!(sb.run(&["run", "o.yaml"]).status.code(), Some(4));
    let out = sb.run(&["watch", "1", "--rules-propose-only"]);
    assert!(
        stdout(&out).contains("proposals recorded"),
        "{}",
        stdout(&out)
    );
    let out = sb.run(&["watch", "1", "--rules-propose-only"]);
    assert!(
        stdout(&out).contains("an open proposal awaits a person"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        sb.json(&["proposals", "list", "1"]).1["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_long_ledger_path_still_gets_an_owner_socket() {
    let sb = Sandbox::new();
    let deep = sb.path().join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let ledger = deep.join("torc_ledger");
    let ledger = ledger.to_str().unwrap();
    sb.write(
        "w.yaml",
        "name: w\njobs:\n  - {name: a, command: 'while [ ! -f go ]; do sleep 0.05; done'}\n",
    );
    let run = sb.spawn(&["--ledger", ledger, "run", "w.yaml"]);
    wait_for("the job to run", || {
        let (code, v) = sb.json(&["--ledger", ledger, "status", "1"]);
        code == 0 && v["jobs_by_status"]["running"] == 1
    });
    std::fs::write(sb.path().join("go"), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_recovery_script_does_not_use_up_the_jobs_runtime() {
    let sb = Sandbox::new();
    sb.write(
        "s.yaml",
        r#"
name: s
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [7], max_retries: 1, recovery_script: "sleep 1.5"}
jobs:
  - {name: a, command: 'if [ $TORC_ATTEMPT_ID -lt 2 ]; then exit 7; fi; sleep 1', resource_requirements: r, failure_handler: h}
  - {name: huge, command: 'true', resource_requirements: big}
resource_requirements:
  - {name: r, num_cpus: 1, memory: 1g, runtime: PT2S}
  - {name: big, num_cpus: 1, memory: 1g, runtime: PT9223372036854775807S}
"#,
    );
    let out = sb.run(&["run", "s.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let (_, j) = sb.json(&["jobs", "get", "1"]);
    assert_eq!(j["attempts"][1]["timed_out"], false, "{j}");
    assert_eq!(
        sb.json(&["jobs", "get", "2"]).1["status"],
        "completed",
        "an enormous runtime is no limit, not a crash"
    );
}

#[test]
fn an_interrupted_retry_is_judged_by_the_attempt_that_finished() {
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        "name: i\nuse_pending_failed: true\njobs:\n  - {name: a, command: 'if [ $TORC_ATTEMPT_ID -lt 2 ]; then exit 1; fi; if [ $TORC_ATTEMPT_ID -lt 3 ]; then touch started; sleep 30; fi'}\n",
    );
    assert_eq!(sb.run(&["run", "i.yaml"]).status.code(), Some(4));
    assert_eq!(
        sb.run(&["classify", "1", "--job", "1", "--action", "retry", "--reason", "t"])
            .status
            .code(),
        Some(0)
    );
    let run = sb.spawn(&["workflows", "run", "1"]);
    wait_for("the retry to start", || sb.path().join("started").exists());
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    assert_eq!(run.wait_with_output().unwrap().status.code(), Some(130));
    assert_eq!(sb.run(&["workflows", "run", "1"]).status.code(), Some(0));
    let (_, st) = sb.json(&["stats", "1"]);
    let d = &st["deciders"][0];
    assert_eq!(d["retries_succeeded"], 1, "{st}");
    assert_eq!(d["retries_failed_again"], 0, "{st}");
}

#[test]
fn a_snapshot_speeds_opening_and_never_changes_the_answer() {
    use torc_ledger::ledger::LocalLedger;
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    let dir = sb.path().join("torc_ledger");
    let full = {
        let l = LocalLedger::open_with_snapshots(&dir, 1).unwrap();
        let digest = l.with_state(|s| s.digest());
        let (seq, _) = l.store().snapshot().unwrap().expect("a snapshot was taken");
        assert_eq!(seq, l.last_seq());
        digest
    };
    // More events after the snapshot, then reopen: snapshot + the rest equals a full replay.
    assert_eq!(
        sb.run(&["classify", "1", "--job", "3", "--action", "fail", "--reason", "bug"])
            .status
            .code(),
        Some(0)
    );
    let l = LocalLedger::open_with_snapshots(&dir, 1_000_000).unwrap();
    let live = l.with_state(|s| s.digest());
    let replayed = l.verify(None).unwrap().digest;
    assert_eq!(live, replayed);
    assert_ne!(live, full);
    // Opening trusts the snapshot for what it covers (that is the point: no refold); only
    // `replay --verify` checks every event. Damage an event the snapshot covers: open still
    // works, verify names it.
    let ev = l.store().get(5, false).unwrap().unwrap();
    let mut env = ev.env.clone();
    env.actor = torc_ledger::event::Actor::System;
    let (bytes, _) = torc_ledger::event::codec::encode(&env);
    l.store().tamper(5, &bytes).unwrap();
    drop(l);
    let l = LocalLedger::open_with_snapshots(&dir, 1_000_000).expect("opens from the snapshot");
    let report = l.verify(None).unwrap();
    assert!(!report.chain_ok);
    assert_eq!(report.first_bad.unwrap().0, 6);
}

#[test]
fn eval_compare_lists_relabeled_cases_apart_instead_of_crashing() {
    let sb = Sandbox::new();
    let line = r#"{"id":"c1","category":"code-bug","action":"fail","difficulty":"easy","command":"python x.py","return_code":1,"stderr_tail":"KeyError: 'a'","rationale":"r","source":"s"}"#;
    sb.write("one.jsonl", &format!("{line}\n"));
    sb.write(
        "relabeled.jsonl",
        &format!(
            "{}\n",
            line.replace("\"action\":\"fail\"", "\"action\":\"retry\"")
        ),
    );
    let fail = r#"agent:cat >/dev/null; echo '{"action":"fail"}'"#;
    let retry = r#"agent:cat >/dev/null; echo '{"action":"retry"}'"#;
    assert_eq!(
        sb.run(&["eval", "--fixtures", "one.jsonl", "--classifier", fail])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        sb.run(&[
            "eval",
            "--fixtures",
            "relabeled.jsonl",
            "--classifier",
            retry
        ])
        .status
        .code(),
        Some(0)
    );
    let (_, runs) = sb.json(&["eval", "history"]);
    let ids: Vec<String> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{runs}");
    let out = sb.run(&["eval", "compare", &ids[0], &ids[1]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("different labels"),
        "{}",
        stdout(&out)
    );
    let (_, v) = sb.json(&["eval", "compare", &ids[0], &ids[1]]);
    assert_eq!(v["relabeled"][0]["id"], "c1");
    assert_eq!(v["disagreements"].as_array().unwrap().len(), 0);
}

#[test]
fn readme_promises_kept_at_the_edges() {
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    // `run -f json` says which events it appended.
    let (code, v) = sb.json(&["run", "demo.yaml"]);
    assert_eq!(code, 4);
    assert_eq!(v["events_appended"]["from"], 2, "{v}");
    assert_eq!(v["events_appended"]["to"], 28, "{v}");
    // `show` honours --at.
    let out = sb.run(&["show", "28", "--at", "20"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("comes after --at 20"),
        "{}",
        stderr(&out)
    );
    // Usage errors are JSON too with -f json.
    let out = sb.run(&["-f", "json", "jobs", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["error"]["exit_code"], 2);
    // recover --no-run leaves jobs ready: that is success (4 while jobs stay parked).
    let sb = Sandbox::new();
    sb.write(
        "n.yaml",
        "name: n\nuse_pending_failed: true\njobs:\n  - {name: a, command: 'echo \"Connection refused\" >&2; exit 1'}\n",
    );
    assert_eq!(sb.run(&["run", "n.yaml"]).status.code(), Some(4));
    let out = sb.run(&["recover", "1", "--no-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(sb.json(&["jobs", "get", "1"]).1["status"], "ready");
}

#[test]
fn undo_says_when_a_decision_can_no_longer_be_undone() {
    let sb = Sandbox::new();
    sb.write("c.yaml", "name: c\njobs:\n  - {name: a, command: 'exit 1'}\n  - {name: b, command: 'true', depends_on: [a]}\n");
    assert_eq!(sb.run(&["run", "c.yaml"]).status.code(), Some(3));
    let (_, r) = sb.json(&["workflows", "reset-status", "1", "--failed-only"]);
    let reset = r["seqs"][0].to_string();
    assert_eq!(
        sb.run(&["workflows", "reinitialize", "1"]).status.code(),
        Some(0)
    );
    let out = sb.run(&["undo", &reset]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("cannot be undone at all now"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("run_initialized"), "{}", stderr(&out));
}
