//! `eval`, `eval history`, `eval compare`, `fixtures export|check` through the real binary:
//! metrics on a tiny labeled set, bad lines, the agent and HTTP classifiers (against a local
//! chat-completions mock), and fixtures exported from a ledger's own history.

use crate::common::{bin, stderr, stdout, Sandbox};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// Four cases: one of each label, and a fourth (transient) whose tail says nothing the rules
/// know (so they fall back to their default, retry) and that the mock HTTP model garbles.
fn tiny() -> String {
    [
        json!({"id": "t1", "category": "oom", "action": "retry_with_resources",
               "adjust": {"memory_factor": 2}, "difficulty": "easy",
               "command": "python merge.py", "return_code": 137,
               "stderr_tail": "merging 1200 files\nOut of memory: Killed process 4242 (python)",
               "rationale": "the OOM killer", "source": "test"}),
        json!({"id": "t2", "category": "code-bug", "action": "fail", "difficulty": "easy",
               "command": "python qc.py", "return_code": 1,
               "stderr_tail": "Traceback (most recent call last):\n  File \"qc.py\", line 9\nKeyError: 'sample_id'",
               "rationale": "a bug", "source": "test"}),
        json!({"id": "t3", "category": "network", "action": "retry", "difficulty": "medium",
               "command": "curl -O https://example.org/x", "return_code": 56,
               "stderr_tail": "curl: (56) Recv failure: Connection reset by peer",
               "rationale": "a reset", "source": "test"}),
        json!({"id": "t4", "category": "network", "action": "retry", "difficulty": "hard",
               "command": "./sync.sh", "return_code": 3,
               "stderr_tail": "sync: garbled reply from peer, giving up for now",
               "rationale": "odd but transient", "source": "test"}),
    ]
    .iter()
    .map(|v| v.to_string() + "\n")
    .collect()
}

fn run_env(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(sb.path())
        .env_remove("TORC_LEDGER_DIR")
        .env_remove("OPENAI_API_KEY")
        .env("USER", "tester");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run torc-ledger")
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): stdout={} stderr={}", stdout(o), stderr(o)))
}

fn predicted(v: &Value, id: &str) -> Value {
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no prediction for {id}: {v}"))["predicted"]
        .clone()
}

#[test]
fn rules_eval_reports_the_metrics_records_the_run_and_history_lists_it() {
    let sb = Sandbox::new();
    sb.write("tiny.jsonl", &tiny());
    let (code, v) = sb.json(&["eval", "--fixtures", "tiny.jsonl"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["n"], 4);
    assert_eq!(v["accuracy"], 1.0);
    assert_eq!(v["classifier"], "rules");
    assert_eq!(v["per_class"]["fail"]["support"], 1);
    assert_eq!(v["per_class"]["retry"]["recall"], 1.0);
    assert_eq!(v["confusion"]["retry"]["retry"], 2);
    assert_eq!(
        v["confusion"]["retry_with_resources"]["retry_with_resources"],
        1
    );
    assert_eq!(v["costly"]["permanent_retried"]["count"], 0);
    assert_eq!(v["by_difficulty"]["hard"]["n"], 1);
    assert_eq!(v["by_category"]["network"]["correct"], 2);
    assert!(v["latency_ms"]["p50"].is_number());
    assert_eq!(predicted(&v, "t2"), "fail");
    let p = &v["predictions"][0];
    assert!(
        p["reason"].as_str().unwrap().contains("out_of_memory"),
        "{p}"
    );
    assert!(p["latency_ms"].is_number());
    assert_eq!(v["fixture_digest"].as_str().unwrap().len(), 64);
    let run = v["run"].as_u64().expect("recorded");

    // The run is an event: history lists it, show and log describe it.
    let (_, h) = sb.json(&["eval", "history"]);
    assert_eq!(h["items"][0]["run"], run);
    assert_eq!(h["items"][0]["accuracy"], 1.0);
    assert_eq!(h["items"][0]["fixture_digest"], v["fixture_digest"]);
    let (_, ev) = sb.json(&["show", &run.to_string()]);
    assert_eq!(ev["kind"], "evaluation_recorded");
    assert_eq!(
        ev["body"]["evaluation_recorded"]["predictions"][1]["predicted"],
        "fail"
    );
    let log = stdout(&sb.run(&["log"]));
    assert!(
        log.contains("evaluation 1 of rules on 4 case(s): accuracy 1.000"),
        "{log}"
    );

    // The table a person reads: accuracy, the costly errors, the confusion matrix.
    let out = sb.run(&["eval", "--fixtures", "tiny.jsonl", "--no-record"]);
    let t = stdout(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(t.contains("accuracy 1.000 (4/4 right"), "{t}");
    assert!(t.contains("transient failures failed (lost work)"), "{t}");
    assert!(
        t.contains("EXPECTED \\ PREDICTED  retry  fail  retry_with_resources  error"),
        "{t}"
    );
    assert!(t.contains("not recorded"), "{t}");
    let (_, h) = sb.json(&["eval", "history"]);
    assert_eq!(
        h["items"].as_array().unwrap().len(),
        1,
        "--no-record recorded nothing"
    );
    // An evaluation changes no job, so it is not undoable.
    let out = sb.run(&["undo", &run.to_string()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("evaluation changes no job"));
}

#[test]
fn bad_fixture_lines_are_named_and_skipped_or_refused_with_strict() {
    let sb = Sandbox::new();
    let mut text = tiny();
    text.push_str("{\"id\": \"t5\", oops\n");
    text.push_str(
        &(json!({"id": "t6", "category": "x", "action": "retry",
        "adjust": {"memory_factor": 2}, "difficulty": "easy", "command": "x", "return_code": 1,
        "stderr_tail": "", "rationale": "", "source": "s"})
        .to_string()
            + "\n"),
    );
    sb.write("mixed.jsonl", &text);
    sb.write("tiny.jsonl", &tiny());
    let out = sb.run(&[
        "-f",
        "json",
        "eval",
        "--fixtures",
        "mixed.jsonl",
        "--no-record",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("mixed.jsonl:5:") && err.contains("skipped"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:6:") && err.contains("retry_with_resources"),
        "{err}"
    );
    let v = json_of(&out);
    assert_eq!(v["n"], 4);
    assert_eq!(v["skipped_lines"][0]["line"], 5);

    let out = sb.run(&["eval", "--fixtures", "mixed.jsonl", "--strict"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("2 bad fixture line(s), nothing evaluated"));
    assert!(!sb.path().join("torc_ledger").exists(), "nothing recorded");

    let out = sb.run(&["fixtures", "check", "mixed.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("4 good case(s), 2 bad line(s)"));
    assert_eq!(
        sb.run(&["fixtures", "check", "mixed.jsonl", "tiny.jsonl"])
            .status
            .code(),
        Some(2)
    );

    // Clear errors for what cannot run at all.
    let out = sb.run(&["eval"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--fixtures FILE"));
    let out = sb.run(&["eval", "--fixtures", "nope.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read fixture file nope.jsonl"));
    let out = sb.run(&["eval", "--fixtures", "tiny.jsonl", "-c", "oracle"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown classifier"));
    let out = sb.run(&["eval", "compare", "1", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no ledger"));
}

#[test]
fn an_agent_command_classifies_and_compare_shows_where_two_runs_disagree() {
    let sb = Sandbox::new();
    sb.write("tiny.jsonl", &tiny());
    // A script "model": garbage on the garbled case, fail on the KeyError, retry otherwise.
    // (It reads the case from stdin, after the prompt.)
    sb.write(
        "agent.sh",
        r#"input=$(cat)
case "$input" in
  *garbled*) echo 'I think it is fine?' ;;
  *sample_id*) echo '{"action": "fail", "reason": "a bug in qc.py"}' ;;
  *) echo "{\"action\": \"retry\", \"reason\": \"model=$TORC_LEDGER_MODEL\"}" ;;
esac
"#,
    );
    let (_, a) = sb.json(&["eval", "--fixtures", "tiny.jsonl"]);
    let (code, b) = sb.json(&[
        "eval",
        "--fixtures",
        "tiny.jsonl",
        "--classifier",
        "agent:bash agent.sh",
        "--model",
        "m-7b",
    ]);
    assert_eq!(code, 0, "{b}");
    assert_eq!(b["classifier"], "agent:bash agent.sh");
    assert_eq!(b["model"], "m-7b");
    assert_eq!(
        b["errors"], 1,
        "the non-JSON answer is an error for that case"
    );
    assert_eq!(b["accuracy"], 0.5);
    assert!(predicted(&b, "t4").is_null());
    assert_eq!(b["costly"]["resources_retried_without"]["count"], 1);
    assert_eq!(b["confusion"]["retry"]["error"], 1);
    assert!(b["prompt_digest"].as_str().unwrap().len() == 64);
    let reason = b["predictions"][2]["reason"].as_str().unwrap();
    assert_eq!(reason, "model=m-7b");

    let (ra, rb) = (a["run"].to_string(), b["run"].to_string());
    let (code, c) = sb.json(&["eval", "compare", &ra, &rb]);
    assert_eq!(code, 0);
    assert_eq!(c["same_fixtures"], true);
    let acc = c["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "accuracy")
        .unwrap();
    assert_eq!(acc["delta"], -0.5);
    let ids: Vec<&str> = c["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["t1", "t4"]);
    assert_eq!(c["disagreements"][0]["a"], "retry_with_resources");
    assert_eq!(c["disagreements"][0]["b"], "retry");
    assert_eq!(c["disagreements"][0]["a_right"], true);
    let t = stdout(&sb.run(&["eval", "compare", &ra, &rb]));
    assert!(
        t.contains("they disagree on 2 of 4 case(s): A right on 2, B right on 0"),
        "{t}"
    );

    // Comparing with something that is not a run says so.
    let out = sb.run(&["eval", "compare", &ra, "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run 999 does not exist"));
}

/// A chat-completions server on 127.0.0.1: 429 for the first request, a malformed answer for
/// the garbled case, otherwise an answer read off the case.
fn mock_llm() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            let answer = |content: &str| {
                json!({"choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content}}]})
                .to_string()
            };
            let (status, reply) = if n == 0 {
                (429, r#"{"error": {"message": "rate limited"}}"#.to_string())
            } else if body.contains("garbled") {
                (200, answer("{\"action\": \"retr"))
            } else if body.contains("Out of memory") {
                (
                    200,
                    answer(
                        r#"{"action": "retry_with_resources", "memory_factor": 2, "reason": "OOM killer"}"#,
                    ),
                )
            } else if body.contains("KeyError") {
                (200, answer(r#"{"action": "fail", "reason": "KeyError"}"#))
            } else {
                (200, answer(r#"{"action": "retry", "reason": "network"}"#))
            };
            log.lock().unwrap().push(format!("{head}\n{body}"));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn an_openai_compatible_endpoint_classifies_with_retries_and_survives_bad_answers() {
    let sb = Sandbox::new();
    sb.write("tiny.jsonl", &tiny());
    sb.write(
        "prompt_v2.md",
        "Classify the failed job. Answer JSON: {action, reason}.",
    );
    let (url, seen) = mock_llm();
    let out = run_env(
        &sb,
        &[
            "-f",
            "json",
            "eval",
            "--fixtures",
            "tiny.jsonl",
            "--classifier",
            &format!("http:{url}"),
            "--model",
            "qwen2.5-7b-instruct",
            "--prompt",
            "prompt_v2.md",
            "--concurrency",
            "1",
            "--api-key-env",
            "MY_LLM_KEY",
        ],
        &[
            ("MY_LLM_KEY", "sk-local-test"),
            ("TORC_LEDGER_HTTP_BACKOFF_MS", "10"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["n"], 4);
    assert_eq!(
        v["errors"], 1,
        "the malformed answer is one error, not a crash"
    );
    assert_eq!(v["errors_by_kind"]["bad_answer"], 1);
    assert_eq!(v["accuracy"], 0.75);
    assert!(predicted(&v, "t4").is_null());
    let t4 = v["predictions"][3]["reason"].as_str().unwrap();
    assert!(t4.contains("bad_answer"), "{t4}");
    assert_eq!(predicted(&v, "t1"), "retry_with_resources");
    assert_eq!(v["model"], "qwen2.5-7b-instruct");
    assert_eq!(v["classifier"], format!("http:{url}/chat/completions"));

    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 5, "4 cases + 1 retry after the 429");
    let first = &reqs[0];
    assert!(first.starts_with("POST /v1/chat/completions"), "{first}");
    assert!(first
        .to_lowercase()
        .contains("authorization: bearer sk-local-test"));
    let body: Value = serde_json::from_str(first.split_once("\n\n").unwrap().1).unwrap();
    assert_eq!(body["model"], "qwen2.5-7b-instruct");
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(
        body["messages"][0]["content"],
        "Classify the failed job. Answer JSON: {action, reason}."
    );

    // The prompt's digest is recorded: a second prompt is a different, comparable run.
    let (_, h) = sb.json(&["eval", "history"]);
    let digest = h["items"][0]["prompt_digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    assert_eq!(digest, v["prompt_digest"].as_str().unwrap());

    // Unreachable endpoint: every case is an error, the run still completes.
    let out = run_env(
        &sb,
        &[
            "-f",
            "json",
            "eval",
            "--fixtures",
            "tiny.jsonl",
            "-c",
            "http:http://127.0.0.1:9/v1",
            "--retries",
            "1",
            "--no-record",
        ],
        &[("TORC_LEDGER_HTTP_BACKOFF_MS", "1")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["errors"], 4);
    assert_eq!(v["errors_by_kind"]["unavailable"], 4);
    assert_eq!(v["accuracy"], 0.0);
}

const HISTORY: &str = r#"
name: history
use_pending_failed: true
resource_requirements:
  - name: small
    memory: 1g
    runtime: PT5M
jobs:
  - name: fetch
    resource_requirements: small
    command: "if [ -e fetched.ok ]; then echo ok; else touch fetched.ok; echo 'curl: (56) Recv failure: Connection reset by peer' >&2; exit 56; fi"
  - name: parse
    resource_requirements: small
    command: "echo 'Traceback (most recent call last):' >&2; echo \"KeyError: 'sample_id'\" >&2; exit 1"
  - name: merge
    resource_requirements: small
    command: "if [ -e merged.ok ]; then echo ok; else touch merged.ok; echo 'MemoryError: Unable to allocate 3.1 GiB for an array' >&2; exit 1; fi"
  - name: report
    resource_requirements: small
    command: "echo 'Permission denied' >&2; exit 1"
"#;

#[test]
fn fixtures_export_turns_the_ledgers_decided_failures_into_a_benchmark() {
    let sb = Sandbox::new();
    sb.write("history.yaml", HISTORY);
    assert_eq!(sb.run(&["run", "history.yaml"]).status.code(), Some(4));
    let classify = |args: &[&str]| {
        let mut a = vec!["classify", "1"];
        a.extend_from_slice(args);
        let out = sb.run(&a);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    classify(&[
        "--job",
        "1",
        "--job",
        "2",
        "--action",
        "retry",
        "--reason",
        "looks transient",
    ]);
    classify(&[
        "--job", "3", "--action", "retry", "--memory", "2g", "--reason", "OOM",
    ]);
    classify(&["--job", "4", "--action", "fail", "--reason", "permissions"]);
    // fetch and merge now succeed; parse fails the same way again.
    assert_eq!(sb.run(&["workflows", "run", "1"]).status.code(), Some(4));

    let (code, v) = sb.json(&["fixtures", "export"]);
    assert_eq!(code, 0, "{v}");
    let items = v["items"].as_array().unwrap();
    let by_name = |cmd: &str| {
        items
            .iter()
            .find(|f| f["command"].as_str().unwrap().contains(cmd))
            .unwrap_or_else(|| panic!("no fixture for {cmd}: {v}"))
    };
    let fetch = by_name("fetched.ok");
    assert_eq!(fetch["action"], "retry");
    assert_eq!(fetch["return_code"], 56);
    assert!(fetch["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("Connection reset by peer"));
    assert_eq!(fetch["runtime_limit_s"], 300);
    assert!(fetch["source"].as_str().unwrap().contains("job 1 (fetch)"));
    let parse = by_name("sample_id");
    assert_eq!(parse["action"], "fail");
    assert!(parse["rationale"]
        .as_str()
        .unwrap()
        .contains("failed the same way"));
    let merge = by_name("merged.ok");
    assert_eq!(merge["action"], "retry_with_resources");
    assert_eq!(merge["adjust"]["memory_factor"], 2.0);
    assert_eq!(merge["memory_limit_bytes"], 1u64 << 30);
    assert_eq!(items.len(), 3, "the failed job's outcome is unknown: {v}");
    let skipped = v["skipped"].as_array().unwrap();
    assert!(skipped
        .iter()
        .any(|s| s["job_id"] == 4 && s["why"].as_str().unwrap().contains("never rerun")));

    // JSON Lines on stdout (the summary on stderr), valid for eval and fixtures check.
    let out = sb.run(&["fixtures", "export", "--workflow", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 3);
    assert!(stderr(&out).contains("exported 3 fixture(s): 1 retry, 1 fail, 1 retry_with_resources"));
    sb.write("ours.jsonl", &stdout(&out));
    assert_eq!(
        sb.run(&["fixtures", "check", "ours.jsonl"]).status.code(),
        Some(0)
    );
    let (_, e) = sb.json(&["eval", "--fixtures", "ours.jsonl"]);
    assert_eq!(e["n"], 3);
    assert_eq!(e["accuracy"], 1.0, "{e}");

    // Precedent learns the same outcomes from this ledger: it has seen every one of them.
    let out = sb.run(&[
        "-f",
        "json",
        "eval",
        "--fixtures",
        "ours.jsonl",
        "-c",
        "precedent",
    ]);
    assert!(
        stderr(&out).contains("learned 3 outcome(s) from the ledger"),
        "{}",
        stderr(&out)
    );
    let p = json_of(&out);
    assert_eq!(p["accuracy"], 1.0, "{p}");
    // Unseen failures: precedent abstains, and that counts as an error. The curl reset is the
    // same failure as fetch's (another command): the looser match knows it.
    sb.write("tiny.jsonl", &tiny());
    let (_, p) = sb.json(&[
        "eval",
        "--fixtures",
        "tiny.jsonl",
        "-c",
        "precedent",
        "--no-record",
    ]);
    assert_eq!(p["errors"], 3, "{p}");
    assert!(p["predictions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("no precedent"));
    assert_eq!(predicted(&p, "t3"), "retry");
    assert!(p["predictions"][2]["reason"]
        .as_str()
        .unwrap()
        .contains("another command"));

    let out = sb.run(&["fixtures", "export", "--workflow", "9"]);
    assert_eq!(out.status.code(), Some(2));
}
