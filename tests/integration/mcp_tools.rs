//! Every MCP tool through rmcp's in-process client, hostile arguments, modes, idempotency.

use crate::common::Sandbox;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, Implementation,
    InitializeRequestParams,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use torc_ledger::ledger::Ledger;
use torc_ledger::mcp::{Caps, LedgerMcp, Mode};

struct Agent {
    client: RunningService<RoleClient, InitializeRequestParams>,
    ledger: Ledger,
}

impl Agent {
    async fn connect(sb: &Sandbox, mode: Mode, caps: Caps) -> Agent {
        let ledger = Ledger::open(&sb.path().join("torc_ledger")).expect("open ledger");
        let server = LedgerMcp::new(ledger.clone(), mode, caps, Some("ci".into()));
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let running = server.serve(server_io).await.expect("server starts");
            let _ = running.waiting().await;
        });
        let client = InitializeRequestParams::new(
            ClientCapabilities::default(),
            Implementation::new("rmcp-test-agent", "9.9"),
        )
        .serve(client_io)
        .await
        .expect("client connects");
        Agent { client, ledger }
    }

    async fn tools(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        names
    }

    async fn call(&self, name: &str, args: Value) -> (bool, Value) {
        let r: CallToolResult = self
            .client
            .call_tool(
                CallToolRequestParams::new(name.to_string())
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} failed at the protocol level: {e}"));
        let v = r
            .structured_content
            .clone()
            .unwrap_or_else(|| serde_json::from_str(&text(&r)).unwrap());
        (r.is_error.unwrap_or(false), v)
    }

    fn last_seq(&self) -> u64 {
        self.ledger.state(None).unwrap().last_seq
    }
}

fn text(r: &CallToolResult) -> String {
    serde_json::to_value(&r.content[0]).unwrap()["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn parked_demo() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_answers_with_torcs_keys() {
    let sb = parked_demo();
    let a = Agent::connect(&sb, Mode::Apply, Caps::default()).await;
    assert_eq!(
        a.tools().await,
        [
            "apply_proposal",
            "classify_and_resolve_failures",
            "get_decision_history",
            "get_job_details",
            "get_job_logs",
            "get_workflow_status",
            "list_failed_jobs",
            "list_jobs_by_status",
            "list_pending_failed_jobs",
            "undo_decision"
        ]
    );
    let (err, st) = a
        .call("get_workflow_status", json!({"workflow_id": 1}))
        .await;
    assert!(!err);
    assert_eq!(st["workflow_id"], 1);
    assert_eq!(st["name"], "demo_pipeline");
    assert_eq!(st["total_jobs"], 5);
    assert_eq!(st["job_counts_by_status"]["pending_failed"], 2);

    let (_, p) = a
        .call("list_pending_failed_jobs", json!({"workflow_id": 1}))
        .await;
    assert_eq!(p["pending_failed_count"], 2);
    let j = &p["pending_failed_jobs"][0];
    for key in [
        "job_id",
        "name",
        "command",
        "attempt_id",
        "return_code",
        "exec_time_minutes",
        "stderr_tail",
        "stderr_read_error",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    assert!(j["stderr_tail"].as_str().unwrap().contains("NCCL"));
    assert!(p["guidance"].as_str().unwrap().contains("dry_run"));

    let (_, d) = a.call("get_job_details", json!({"job_id": 1})).await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(d["memory_bytes"], 512u64 << 20);

    let (_, l) = a
        .call(
            "get_job_logs",
            json!({"workflow_id": 1, "job_id": 1, "log_type": "stderr", "tail_lines": 5}),
        )
        .await;
    assert_eq!(l["attempt_id"], 2);
    let (_, l1) = a
        .call(
            "get_job_logs",
            json!({"workflow_id": 1, "job_id": 3, "log_type": "stderr"}),
        )
        .await;
    assert!(l1["content"].as_str().unwrap().contains("KeyError"));

    let (_, bs) = a
        .call(
            "list_jobs_by_status",
            json!({"workflow_id": 1, "status": "blocked"}),
        )
        .await;
    assert_eq!(bs["count"], 2);

    // dry run → proposal → apply; fail → list_failed_jobs; history with outcome; undo.
    let (err, dry) = a
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "classifications": [{"job_id": 2, "action": "retry", "reason": "NCCL"}]}),
        )
        .await;
    assert!(!err, "{dry}");
    assert_eq!(dry["dry_run"], true, "dry_run defaults to true");
    assert_eq!(dry["results"][0]["status"], "would_apply");
    let pid = dry["proposal_id"].as_u64().unwrap();
    let (err, ap) = a.call("apply_proposal", json!({"proposal_id": pid})).await;
    assert!(!err, "{ap}");
    assert!(!ap["seqs"].as_array().unwrap().is_empty());
    let (err, f) = a
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "dry_run": false, "classifications": [{"job_id": 3, "action": "fail", "reason": "KeyError"}]}),
        )
        .await;
    assert!(!err, "{f}");
    assert_eq!(f["results"][0]["status"], "applied");
    let (_, fl) = a.call("list_failed_jobs", json!({"workflow_id": 1})).await;
    assert_eq!(fl["failed_count"], 1);
    assert!(fl["failed_jobs"][0]["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("KeyError"));

    let (_, h) = a.call("get_decision_history", json!({"job_id": 2})).await;
    assert_eq!(h["count"], 1);
    let dec = &h["decisions"][0];
    assert_eq!(dec["proposal_id"], pid);
    assert_eq!(dec["actor"], "agent:ci (rmcp-test-agent)/9.9");
    assert_eq!(dec["items"][0]["outcome"], "not run yet");
    assert!(dec["time"].as_str().is_some());

    let fail_seq = f["seqs"][0].as_i64().unwrap();
    let (err, dry_undo) = a
        .call("undo_decision", json!({"seq": fail_seq, "dry_run": true}))
        .await;
    assert!(!err);
    assert_eq!(dry_undo["would_append"].as_array().unwrap().len(), 3);
    let (err, u) = a.call("undo_decision", json!({"seq": fail_seq})).await;
    assert!(!err, "{u}");
    let s = a.ledger.state(None).unwrap();
    assert_eq!(s.job(3).unwrap().status.as_str(), "pending_failed");
    assert_eq!(s.job(5).unwrap().status.as_str(), "blocked");

    // The outcome of the retry shows once the job ran.
    drop(a);
    assert_eq!(sb.run(&["workflows", "run", "1"]).status.code(), Some(4));
    let a = Agent::connect(&sb, Mode::Read, Caps::default()).await;
    let (_, h) = a
        .call("get_decision_history", json!({"workflow_id": 1}))
        .await;
    assert_eq!(h["decisions"][0]["items"][0]["outcome"], "retry succeeded");
    assert!(h["decisions"][1]["undone_by"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_get_per_item_errors_and_record_nothing() {
    let sb = parked_demo();
    sb.run(&["workflows", "create", "demo.yaml"]); // workflow 2, jobs 6..10
    let caps = Caps {
        max_memory_bytes: 64 << 30,
        max_items: 1000,
        ..Caps::default()
    };
    let a = Agent::connect(&sb, Mode::Apply, caps).await;
    let before = a.last_seq();
    let huge = "x".repeat(1 << 20);
    let (err, v) = a
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "dry_run": false, "classifications": [
                {"job_id": 2, "action": "retry", "reason": "fine"},
                {"job_id": 6, "action": "retry"},
                {"job_id": 424242, "action": "fail"},
                {"job_id": 1, "action": "fail"},
                {"job_id": 3, "action": "explode"},
                {"job_id": 3, "action": "retry", "memory": "900g"},
                {"job_id": 3, "action": "retry", "runtime": "two hours"},
                {"job_id": 3, "action": "retry", "memory": "lots"},
                {"job_id": 3, "action": "fail", "reason": huge},
                {"job_id": -7, "action": "fail"},
            ]}),
        )
        .await;
    assert!(err, "refused as a whole");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 10);
    assert_eq!(r[0]["status"], "skipped");
    let msg = |i: usize| r[i]["message"].as_str().unwrap().to_string();
    assert!(msg(4).contains("unknown action"), "{}", msg(4));
    assert!(msg(5).contains("above this server's limit"), "{}", msg(5));
    assert!(msg(6).contains("ISO-8601"), "{}", msg(6));
    assert!(msg(7).contains("\"lots\""), "{}", msg(7));
    assert!(msg(8).contains("bytes"), "{}", msg(8));
    assert!(msg(8).len() < 400, "a huge reason is not echoed back");
    assert!(msg(9).contains("positive"), "{}", msg(9));
    assert_eq!(a.last_seq(), before, "nothing partial was recorded");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("nothing was recorded"));

    // The ledger's own rules, per job: another workflow's job, unknown job, wrong status.
    let (err, v) = a
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "dry_run": false, "classifications": [
                {"job_id": 6, "action": "retry"}, {"job_id": 424242, "action": "fail"}, {"job_id": 1, "action": "fail"}]}),
        )
        .await;
    assert!(err);
    let r = v["results"].as_array().unwrap();
    assert!(r[0]["message"]
        .as_str()
        .unwrap()
        .contains("belongs to workflow 2"));
    assert!(r[1]["message"].as_str().unwrap().contains("no such job"));
    assert!(r[2]["message"]
        .as_str()
        .unwrap()
        .contains("only pending_failed"));
    assert_eq!(a.last_seq(), before);

    // Too many items in one call.
    let many: Vec<Value> = (0..1500)
        .map(|_| json!({"job_id": 2, "action": "retry"}))
        .collect();
    let (err, v) = a
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "classifications": many}),
        )
        .await;
    assert!(err);
    assert!(v["error"].as_str().unwrap().contains("at most 1000"));
    // Unknown workflow, bad status, bad log type, absurd tail: clear refusals.
    for (tool, args, needle) in [
        (
            "get_workflow_status",
            json!({"workflow_id": 99}),
            "unknown workflow 99",
        ),
        (
            "list_jobs_by_status",
            json!({"workflow_id": 1, "status": "exploded"}),
            "unknown status",
        ),
        (
            "get_job_logs",
            json!({"workflow_id": 1, "job_id": 2, "log_type": "core"}),
            "log_type",
        ),
        (
            "get_job_logs",
            json!({"workflow_id": 2, "job_id": 2, "log_type": "stderr"}),
            "belongs to workflow 1",
        ),
        ("get_job_details", json!({"job_id": 0}), "unknown job"),
        (
            "apply_proposal",
            json!({"proposal_id": 3}),
            "does not exist",
        ),
        ("undo_decision", json!({"seq": 1}), "cannot be undone"),
        ("get_decision_history", json!({}), "workflow_id or job_id"),
    ] {
        let (err, v) = a.call(tool, args.clone()).await;
        assert!(err, "{tool} {args}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{tool}: {v}");
    }
    let (err, v) = a
        .call("get_job_logs", json!({"workflow_id": 1, "job_id": 2, "log_type": "stderr", "tail_lines": 1_000_000_000i64}))
        .await;
    assert!(!err);
    assert_eq!(v["tail_lines"], 10_000);
    assert_eq!(a.last_seq(), before, "reads record nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_binary_stderr_costs_a_bounded_read() {
    let sb = parked_demo();
    // Make job 2's stderr 10 GB (sparse) ending in binary junk and a last line.
    let path = sb.path().join("torc_output/job_stdio/job_wf1_j2_r1_a1.e");
    {
        use std::io::{Seek, SeekFrom, Write};
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(10 << 30).unwrap();
        let mut f = f;
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(b"\n\xff\xfe\x00binary\nfinal: NCCL WARN connection reset\n")
            .unwrap();
    }
    let a = Agent::connect(&sb, Mode::Read, Caps::default()).await;
    let (err, p) = a
        .call("list_pending_failed_jobs", json!({"workflow_id": 1}))
        .await;
    assert!(!err);
    let train = p["pending_failed_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "train")
        .unwrap();
    let tail = train["stderr_tail"].as_str().unwrap();
    assert!(
        tail.ends_with("final: NCCL WARN connection reset"),
        "{tail:?}"
    );
    assert!(tail.contains('\u{fffd}'), "non-UTF-8 bytes replaced");
    assert!(tail.len() <= 64 * 1024);
    assert!(train["stderr_read_error"].is_null());
    // A missing log is an error field, not a failure.
    std::fs::remove_file(sb.path().join("torc_output/job_stdio/job_wf1_j3_r1_a1.e")).unwrap();
    let (_, p) = a
        .call("list_pending_failed_jobs", json!({"workflow_id": 1}))
        .await;
    let v = &p["pending_failed_jobs"][1];
    assert!(v["stderr_tail"].is_null());
    assert!(v["stderr_read_error"]
        .as_str()
        .unwrap()
        .contains("cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_hide_and_refuse_what_they_forbid() {
    let sb = parked_demo();
    let read = Agent::connect(&sb, Mode::Read, Caps::default()).await;
    let tools = read.tools().await;
    assert!(!tools.iter().any(|t| t == "classify_and_resolve_failures"
        || t == "apply_proposal"
        || t == "undo_decision"));
    let (err, v) = read
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "classifications": [{"job_id": 2, "action": "retry"}]}),
        )
        .await;
    assert!(err);
    assert!(v["error"].as_str().unwrap().contains("read mode"), "{v}");
    drop(read);

    let propose = Agent::connect(&sb, Mode::Propose, Caps::default()).await;
    let before = propose.last_seq();
    let (err, v) = propose
        .call(
            "classify_and_resolve_failures",
            json!({"workflow_id": 1, "dry_run": false, "classifications": [{"job_id": 2, "action": "retry"}]}),
        )
        .await;
    assert!(err);
    assert!(v["error"].as_str().unwrap().contains("propose mode"));
    let (err, v) = propose.call("undo_decision", json!({"seq": 1})).await;
    assert!(
        err && v["error"].as_str().unwrap().contains("--mode apply"),
        "{v}"
    );
    assert_eq!(propose.last_seq(), before);
    // Dry runs are allowed, and idempotent with a key.
    let args = json!({"workflow_id": 1, "idempotency_key": "k-1",
        "classifications": [{"job_id": 2, "action": "retry", "memory": "2g", "reason": "r"}]});
    let (_, a1) = propose
        .call("classify_and_resolve_failures", args.clone())
        .await;
    let (_, a2) = propose.call("classify_and_resolve_failures", args).await;
    assert_eq!(a1["proposal_id"], a2["proposal_id"]);
    assert_eq!(a2["replayed"], true);
    assert_eq!(propose.last_seq(), before + 1);
    // Recorded with the agent as actor.
    let s = propose.ledger.state(None).unwrap();
    let p = s.proposals.values().next().unwrap();
    assert_eq!(p.actor, "agent:ci (rmcp-test-agent)/9.9");
}

#[test]
fn mcp_config_prints_snippets_with_absolute_paths() {
    let sb = Sandbox::new();
    let out = sb.run(&["mcp", "config", "--agent", "claude"]);
    assert_eq!(out.status.code(), Some(0));
    let text = crate::common::stdout(&out);
    let dir = std::fs::canonicalize(sb.path()).unwrap();
    assert!(text.contains("claude mcp add torc-ledger -- /"), "{text}");
    assert!(
        text.contains(&format!("{}/torc_ledger", dir.display()))
            || text.contains(&format!("{}/torc_ledger", sb.path().display())),
        "{text}"
    );
    assert!(text.contains("\"mcpServers\""), "{text}");
    let (code, v) = sb.json(&["mcp", "config", "--agent", "copilot", "--mode", "apply"]);
    assert_eq!(code, 0);
    let server = &v["mcpServers"]["torc-ledger"];
    assert_eq!(server["type"], "local");
    assert!(server["command"].as_str().unwrap().starts_with('/'));
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.ends_with(&["mcp", "--mode", "apply"]), "{args:?}");
    assert!(args[1].starts_with('/'), "ledger path absolute: {args:?}");
    let (_, j) = sb.json(&["mcp", "config", "--agent", "json"]);
    assert_eq!(j["mcpServers"]["torc-ledger"]["type"], "stdio");
}
