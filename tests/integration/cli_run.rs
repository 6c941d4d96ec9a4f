//! The real binary on example specs: runs, parking, handlers, timeouts, env, order, resume.

use crate::common::{stderr, stdout, Sandbox};
use serde_json::Value;

const DEMO: &str = include_str!("../../examples/demo.yaml");

fn statuses(sb: &Sandbox, wf: &str) -> Vec<(String, String)> {
    let (code, v) = sb.json(&["jobs", "list", wf]);
    assert_eq!(code, 0);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of(sb: &Sandbox, wf: &str, name: &str) -> String {
    statuses(sb, wf)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no job {name}"))
        .1
}

#[test]
fn demo_run_parks_unexplained_failures_and_says_how_to_classify() {
    let sb = Sandbox::new();
    sb.write("demo.yaml", DEMO);
    let out = sb.run(&["run", "demo.yaml"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("2 job(s) awaiting classification"), "{text}");
    assert!(text.contains("torc-ledger classify 1 --job 2"), "{text}");
    assert_eq!(
        statuses(&sb, "1"),
        vec![
            ("fetch".into(), "completed".into()),
            ("train".into(), "pending_failed".into()),
            ("validate".into(), "pending_failed".into()),
            ("report".into(), "blocked".into()),
            ("publish".into(), "blocked".into()),
        ]
    );
    // Torc's status shape.
    let (_, st) = sb.json(&["status", "1"]);
    assert_eq!(st["workflow_id"], 1);
    assert_eq!(st["workflow_name"], "demo_pipeline");
    assert_eq!(st["total_jobs"], 5);
    assert_eq!(st["jobs_by_status"]["pending_failed"], 2);
    assert_eq!(st["is_complete"], false);
    // fetch was retried by its failure handler: two attempts, logs named as Torc names them.
    let (_, job) = sb.json(&["jobs", "get", "1"]);
    assert_eq!(job["attempt_id"], 2);
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["return_code"], 75);
    assert!(attempts[0]["stderr_path"]
        .as_str()
        .unwrap()
        .ends_with("torc_output/job_stdio/job_wf1_j1_r1_a1.e"));
    assert!(sb
        .path()
        .join("torc_output/job_stdio/job_wf1_j1_r1_a2.o")
        .exists());
    // The parked job shows its stderr tail and effective resources.
    let (_, train) = sb.json(&["jobs", "get", "2"]);
    assert!(train["stderr_tail"].as_str().unwrap().contains("NCCL WARN"));
    assert_eq!(train["memory_bytes"], 512 << 20);
    assert_eq!(train["runtime_seconds"], 60);
}

#[test]
fn diamond_tutorial_runs_in_file_dependency_order() {
    let sb = Sandbox::new();
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec_files/diamond.yaml"),
    )
    .unwrap();
    sb.write("diamond.yaml", &spec);
    let out = sb.run(&["run", "diamond.yaml", "-j", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("complete"));
    assert_eq!(
        std::fs::read_to_string(sb.path().join("f5.txt")).unwrap(),
        "data1\ndata2\n"
    );
    // postprocess depends on work1 and work2 through files.
    let (_, j) = sb.json(&["jobs", "get", "4"]);
    assert_eq!(j["depends_on"], serde_json::json!([2, 3]));
}

#[test]
fn jobs_get_the_torc_environment() {
    let sb = Sandbox::new();
    sb.write(
        "env.yaml",
        r#"
name: envcheck
env: {WF_LEVEL: "wf", SHARED: "from-workflow"}
jobs:
  - name: show
    command: 'echo "$TORC_WORKFLOW_ID $TORC_RUN_ID $TORC_JOB_ID $TORC_JOB_NAME $TORC_ATTEMPT_ID $WF_LEVEL $SHARED" > env_out.txt; echo "$TORC_OUTPUT_DIR" > outdir.txt; pwd > cwd.txt'
    env: {SHARED: "from-job"}
"#,
    );
    let out = sb.run(&["run", "env.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sb.path().join("env_out.txt")).unwrap(),
        "1 1 1 show 1 wf from-job\n"
    );
    let outdir = std::fs::read_to_string(sb.path().join("outdir.txt")).unwrap();
    assert!(outdir.trim().ends_with("torc_output"), "{outdir}");
    // Jobs run in the directory the workflow was submitted from.
    let cwd = std::fs::read_to_string(sb.path().join("cwd.txt")).unwrap();
    assert_eq!(
        std::fs::canonicalize(cwd.trim()).unwrap(),
        std::fs::canonicalize(sb.path()).unwrap()
    );
}

#[test]
fn failure_handler_max_retries_means_retries_and_script_runs_before_each() {
    let sb = Sandbox::new();
    sb.write(
        "h.yaml",
        r#"
name: handlers
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [3], max_retries: 2, recovery_script: 'echo "rc=$TORC_RETURN_CODE attempt=$TORC_ATTEMPT_ID" >> recovery.txt'}
      - {match_all_exit_codes: true, max_retries: 0}
jobs:
  - name: always3
    command: 'echo attempt $TORC_ATTEMPT_ID >> attempts.txt; exit 3'
    failure_handler: h
  - name: other
    command: 'exit 4'
    failure_handler: h
"#,
    );
    let out = sb.run(&["run", "h.yaml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    // max_retries: 2 → 3 attempts (Torc 1.0.0's code allows only 2).
    assert_eq!(
        std::fs::read_to_string(sb.path().join("attempts.txt")).unwrap(),
        "attempt 1\nattempt 2\nattempt 3\n"
    );
    // The script ran before each retry, with the failed attempt's code and the next attempt id.
    assert_eq!(
        std::fs::read_to_string(sb.path().join("recovery.txt")).unwrap(),
        "rc=3 attempt=2\nrc=3 attempt=3\n"
    );
    assert_eq!(status_of(&sb, "1", "always3"), "failed");
    // A listed code wins over match_all; exit 4 hits the catch-all rule with no retries.
    let (_, other) = sb.json(&["jobs", "get", "2"]);
    assert_eq!(other["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(other["status"], "failed");
}

#[test]
fn failed_cancels_dependents_unless_they_opt_out() {
    let sb = Sandbox::new();
    sb.write(
        "c.yaml",
        r#"
name: cascade
jobs:
  - {name: up, command: 'exit 1'}
  - {name: strict, command: 'echo ran > strict.txt', depends_on: [up]}
  - {name: lenient, command: 'echo ran > lenient.txt', depends_on: [up], cancel_on_blocking_job_failure: false}
  - {name: after_strict, command: 'true', depends_on: [strict]}
"#,
    );
    let out = sb.run(&["run", "c.yaml"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        statuses(&sb, "1"),
        vec![
            ("up".into(), "failed".into()),
            ("strict".into(), "canceled".into()),
            ("lenient".into(), "completed".into()),
            ("after_strict".into(), "canceled".into()),
        ]
    );
    assert!(!sb.path().join("strict.txt").exists());
    assert!(sb.path().join("lenient.txt").exists());
}

#[test]
fn a_job_past_its_runtime_is_killed_and_recorded_as_a_timeout() {
    let sb = Sandbox::new();
    sb.write(
        "t.yaml",
        r#"
name: timeouts
use_pending_failed: true
resource_requirements:
  - {name: short, num_cpus: 1, memory: 100m, runtime: PT1S}
jobs:
  - {name: slow, command: 'sleep 30', resource_requirements: short}
"#,
    );
    let out = sb.run(&["run", "t.yaml"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let (_, j) = sb.json(&["jobs", "get", "1"]);
    let a = &j["attempts"][0];
    assert_eq!(a["timed_out"], true);
    assert_eq!(a["return_code"], 152);
    assert_eq!(j["status"], "pending_failed");
    assert!(a["duration_ms"].as_u64().unwrap() < 20_000);
    let log = stdout(&sb.run(&["log"]));
    assert!(log.contains("killed at its runtime limit"), "{log}");
}

#[test]
fn one_job_at_a_time_with_j1_in_priority_order() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: prio
jobs:
  - {name: low, command: 'echo low >> order.txt', priority: 1}
  - {name: high, command: 'echo high >> order.txt', priority: 10}
  - {name: mid, command: 'echo mid >> order.txt', priority: 5}
"#,
    );
    let out = sb.run(&["run", "p.yaml", "-j", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(sb.path().join("order.txt")).unwrap(),
        "high\nmid\nlow\n"
    );
    // With -j 1 every start is followed by its own end before the next start.
    let (_, log) = sb.json(&["log", "-n", "1000"]);
    let kinds: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .filter(|k| k == "job_started" || k == "job_finished")
        .collect();
    assert_eq!(kinds.len(), 6);
    for pair in kinds.chunks(2) {
        assert_eq!(pair, ["job_started", "job_finished"]);
    }
}

#[test]
fn invalid_specs_are_refused_before_anything_is_recorded() {
    let sb = Sandbox::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "typo.yaml",
            "name: t\njobs:\n  - name: a\n    comand: echo\n",
            &["comand", "line 4"],
        ),
        (
            "cycle.yaml",
            "name: t\njobs:\n  - {name: a, command: x, depends_on: [c]}\n  - {name: b, command: x, depends_on: [a]}\n  - {name: c, command: x, depends_on: [b]}\n",
            &["cycle", "a", "b", "c"],
        ),
        (
            "mem.yaml",
            "name: t\nresource_requirements:\n  - {name: r, num_cpus: 1, memory: 2gb, runtime: PT1M}\njobs:\n  - {name: a, command: x, resource_requirements: r}\n",
            &["2gb"],
        ),
        (
            "rt.yaml",
            "name: t\nresource_requirements:\n  - {name: r, num_cpus: 1, memory: 2g, runtime: 30 minutes}\njobs:\n  - {name: a, command: x, resource_requirements: r}\n",
            &["30 minutes"],
        ),
        (
            "dup.yaml",
            "name: t\njobs:\n  - {name: a, command: x}\n  - {name: a, command: y}\n",
            &["\"a\" is used twice"],
        ),
        (
            "dep.yaml",
            "name: t\njobs:\n  - {name: a, command: x, depends_on: [nope]}\n",
            &["nope"],
        ),
        ("syntax.yaml", "name: t\njobs: [\n", &["line"]),
    ];
    for (file, text, needles) in cases {
        sb.write(file, text);
        let out = sb.run(&["run", file]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
        let err = stderr(&out);
        for n in *needles {
            assert!(err.contains(n), "{file}: error should mention {n:?}: {err}");
        }
    }
    // Nothing was recorded: no ledger was even created.
    assert!(!sb.path().join("torc_ledger").exists());
    let out = sb.run(&["workflows", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no ledger"));
}

#[test]
fn reset_failed_only_and_run_again_starts_a_new_run() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        r#"
name: rerun
jobs:
  - {name: flaky, command: 'if [ -f ok ]; then exit 0; fi; touch ok; exit 1'}
  - {name: next, command: 'true', depends_on: [flaky]}
"#,
    );
    assert_eq!(sb.run(&["run", "r.yaml"]).status.code(), Some(3));
    assert_eq!(status_of(&sb, "1", "next"), "canceled");
    let (code, v) = sb.json(&["workflows", "reset-status", "1", "--failed-only"]);
    assert_eq!(code, 0);
    assert_eq!(v["seqs"].as_array().unwrap().len(), 3); // reset + 2 jobs
    let out = sb.run(&["workflows", "run", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let (_, st) = sb.json(&["status", "1"]);
    assert_eq!(st["run_id"], 2);
    assert_eq!(st["is_complete"], true);
    let (_, j) = sb.json(&["jobs", "get", "1"]);
    assert_eq!(j["attempts"][1]["run_id"], 2);
}

#[test]
fn unknown_ids_and_statuses_get_clear_errors() {
    let sb = Sandbox::new();
    sb.write("demo.yaml", DEMO);
    sb.run(&["run", "demo.yaml"]);
    for (args, needle) in [
        (vec!["status", "9"], "unknown workflow 9"),
        (vec!["jobs", "get", "99"], "unknown job 99"),
        (
            vec!["jobs", "list", "1", "--status", "bogus"],
            "unknown status",
        ),
        (vec!["show", "9999"], "does not exist"),
        (vec!["proposals", "apply", "3"], "proposal 3 does not exist"),
        (vec!["status", "1", "--at", "99999"], "past the last event"),
    ] {
        let out = sb.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // -f json errors are JSON on stdout too.
    let (code, v) = sb.json(&["jobs", "get", "99"]);
    assert_eq!(code, 2);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown job"));
    let _: Value = v;
}
