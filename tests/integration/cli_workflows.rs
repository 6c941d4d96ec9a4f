//! Torc's workflow commands, and two runners on one ledger.

use crate::common::{stderr, stdout, wait_for, Sandbox};

const CHAIN: &str = "name: chain\njobs:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true', depends_on: [a]}\n";

#[test]
fn create_init_run_list_get_follow_torc_meanings() {
    let sb = Sandbox::new();
    sb.write("chain.yaml", CHAIN);
    let (code, c) = sb.json(&["workflows", "create", "chain.yaml"]);
    assert_eq!(code, 0, "{c}");
    assert_eq!(c["id"], 1);
    let (_, l) = sb.json(&["jobs", "list", "1"]);
    assert!(l["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "uninitialized"));
    let (code, i) = sb.json(&["workflows", "init", "1"]);
    assert_eq!(code, 0);
    assert_eq!(i["jobs_by_status"]["ready"], 1);
    assert_eq!(i["jobs_by_status"]["blocked"], 1);
    assert_eq!(i["run_id"], 1);
    // init twice is refused with the next step.
    let out = sb.run(&["workflows", "init", "1"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("reinit"), "{}", stderr(&out));
    let (code, r) = sb.json(&["workflows", "run", "1"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["stopped"]["reason"], "complete");
    assert_eq!(r["is_complete"], true);
    assert_eq!(r["jobs_run"], 2);
    let (_, wl) = sb.json(&["workflows", "list"]);
    assert_eq!(wl["items"][0]["name"], "chain");
    assert_eq!(wl["items"][0]["is_complete"], true);
    let (_, g) = sb.json(&["workflows", "get", "1"]);
    assert_eq!(g["total_jobs"], 2);
    assert!(g["spec_digest"].as_str().unwrap().len() == 64);
    // reset-status (all) then reinitialize: run 2, everything to do again.
    let (code, rs) = sb.json(&["workflows", "reset-status", "1", "--reinitialize"]);
    assert_eq!(code, 0, "{rs}");
    assert_eq!(rs["run_id"], 2);
    assert_eq!(rs["jobs_by_status"]["ready"], 1);
    // ... and that reset is undoable only while nothing moved on: the reinit touched the jobs.
    let reset_seq = rs["seqs"][0].as_u64().unwrap().to_string();
    let out = sb.run(&["undo", &reset_seq]);
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    // `reinitialize` is an alias of reinit.
    assert_eq!(
        sb.run(&["workflows", "reinitialize", "1"]).status.code(),
        Some(0)
    );
    assert_eq!(sb.json(&["status", "1"]).1["run_id"], 3);
}

#[test]
fn reset_status_undo_restores_the_statuses() {
    let sb = Sandbox::new();
    sb.write("chain.yaml", CHAIN);
    assert_eq!(sb.run(&["run", "chain.yaml"]).status.code(), Some(0));
    let digest = sb.json(&["replay"]).1["digest"].clone();
    let (_, rs) = sb.json(&["workflows", "reset-status", "1"]);
    assert_eq!(
        sb.json(&["status", "1"]).1["jobs_by_status"]["uninitialized"],
        2
    );
    let seq = rs["seqs"][0].as_u64().unwrap().to_string();
    assert_eq!(sb.run(&["undo", &seq]).status.code(), Some(0));
    assert_eq!(
        sb.json(&["status", "1"]).1["jobs_by_status"]["completed"],
        2
    );
    assert_eq!(sb.json(&["replay"]).1["digest"], digest);
}

#[test]
fn two_runs_of_different_workflows_share_one_ledger() {
    let sb = Sandbox::new();
    sb.write(
        "w1.yaml",
        "name: w1\njobs:\n  - {name: a, command: 'while [ ! -f go1 ]; do sleep 0.05; done'}\n",
    );
    sb.write(
        "w2.yaml",
        "name: w2\njobs:\n  - {name: a, command: 'touch go1; echo two > two.txt'}\n  - {name: b, command: 'true', depends_on: [a]}\n",
    );
    let first = sb.spawn(&["run", "w1.yaml"]);
    wait_for("the first run to become the owner", || {
        sb.path().join("torc_ledger/owner.sock").exists()
    });
    // The second run goes through the owner; its job lets the first finish.
    let out = sb.run(&["run", "w2.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(sb.json(&["status", "1"]).1["is_complete"], true);
    assert_eq!(sb.json(&["status", "2"]).1["is_complete"], true);
    assert_eq!(sb.json(&["replay", "--verify"]).1["chain_ok"], true);
}

#[test]
fn help_teaches() {
    let sb = Sandbox::new();
    let out = sb.run(&["--help"]);
    let text = stdout(&out);
    for needle in [
        "Exit codes",
        "pending_failed",
        "--ledger",
        "TORC_LEDGER_DIR",
        "--at",
        "demo",
    ] {
        assert!(
            text.contains(needle),
            "--help should mention {needle}: {text}"
        );
    }
    let out = sb.run(&["classify", "--help"]);
    assert!(stdout(&out).contains("--dry-run") && stdout(&out).contains("Examples"));
}
