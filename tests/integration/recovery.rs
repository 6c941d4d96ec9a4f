//! `recover` and `watch`: precedent, rules and a real agent process over MCP.

use crate::common::{bin, stderr, stdout, Sandbox};
use serde_json::Value;
use std::process::Command;

const SPEC: &str = r#"
name: recovery_e2e
use_pending_failed: true
resource_requirements:
  - {name: small, num_cpus: 1, memory: 256m, runtime: PT10S}
  - {name: quick, num_cpus: 1, memory: 256m, runtime: PT2S}
jobs:
  - name: transient
    # No rule knows this message: it is the agent's to decide.
    command: 'if [ "$TORC_ATTEMPT_ID" -lt 2 ]; then echo "quantum flux regulator desynchronized (code 0x2a)" >&2; exit 3; fi; echo ok'
    resource_requirements: small
  - name: permanent
    command: 'echo "Traceback (most recent call last):" >&2; echo "ZeroDivisionError: division by zero" >&2; exit 1'
    resource_requirements: small
  - name: downstream
    command: 'echo never > downstream_ran'
    resource_requirements: small
    depends_on: [permanent]
  - name: oom
    command: 'if [ "$TORC_ATTEMPT_ID" -lt 2 ]; then echo "slurmstepd: error: Detected 1 oom_kill event in StepId=1.0. Some of your processes may have been killed by the cgroup out-of-memory handler." >&2; kill -9 $$; fi; echo fine'
    resource_requirements: small
  - name: timeout
    command: 'if [ "$TORC_ATTEMPT_ID" -lt 2 ]; then sleep 30; fi; echo done'
    resource_requirements: quick
"#;

fn agents_path() -> String {
    format!(
        "{}/tests/agents:{}",
        env!("CARGO_MANIFEST_DIR"),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn run_with_agents(
    sb: &Sandbox,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(sb.path())
        .env("PATH", agents_path())
        .env("USER", "tester");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn parked() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("wf.yaml", SPEC);
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    sb
}

fn job(sb: &Sandbox, id: &str) -> Value {
    sb.json(&["jobs", "get", id]).1
}

fn decision_actor(sb: &Sandbox, id: &str) -> String {
    job(sb, id)["decisions"][0]["actor"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn one_recover_with_an_agent_completes_what_can_complete_and_attributes_every_decision() {
    let sb = parked();
    let out = run_with_agents(
        &sb,
        &["recover", "1", "--ai-recovery", "--ai-agent", "claude"],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    // Transient, OOM and timeout completed; the permanent one failed, its dependent canceled.
    for (id, status) in [
        ("1", "completed"),
        ("2", "failed"),
        ("3", "canceled"),
        ("4", "completed"),
        ("5", "completed"),
    ] {
        assert_eq!(job(&sb, id)["status"], status, "job {id}: {text}");
    }
    assert!(!sb.path().join("downstream_ran").exists());
    // OOM and timeout got larger limits on those jobs only.
    assert_eq!(job(&sb, "4")["memory_bytes"], 384u64 << 20, "256m × 1.5");
    assert_eq!(job(&sb, "4")["runtime_seconds"], 10);
    assert_eq!(job(&sb, "5")["runtime_seconds"], 3, "2 s × 1.5");
    assert_eq!(job(&sb, "5")["memory_bytes"], 256u64 << 20);
    assert_eq!(
        job(&sb, "2")["memory_bytes"],
        256u64 << 20,
        "the shared group is unchanged"
    );
    // Each decision by the right classifier.
    assert_eq!(decision_actor(&sb, "2"), "classifier:rules/1");
    assert_eq!(decision_actor(&sb, "4"), "classifier:rules/1");
    assert_eq!(decision_actor(&sb, "5"), "classifier:rules/1");
    assert_eq!(
        decision_actor(&sb, "1"),
        "agent:recovery (claude-standin)/1.0"
    );
    // The agent's decision carries the prompt's digest.
    let (_, log) = sb.json(&["log", "-n", "500"]);
    let agent_event = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "classification_applied" && e["actor"]["agent"].is_object())
        .expect("an agent decision");
    let digest = agent_event["actor"]["agent"]["prompt_digest"]
        .as_str()
        .unwrap();
    assert_eq!(digest.len(), 64);
    // Outcomes are linked: stats per decider.
    let (_, st) = sb.json(&["stats", "1"]);
    let by = |actor: &str| {
        st["deciders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["actor"] == actor)
            .cloned()
            .unwrap_or_else(|| panic!("no {actor} in {st}"))
    };
    let rules = by("classifier:rules/1");
    assert_eq!(rules["retries_succeeded"], 2);
    assert_eq!(rules["fails_stayed_failed"], 1);
    assert_eq!(
        by("agent:recovery (claude-standin)/1.0")["retries_succeeded"],
        1
    );
    // The decision history says how the retry turned out.
    let oom = job(&sb, "4");
    assert_eq!(oom["decisions"][0]["items"][0]["action"], "retry");
    assert_eq!(
        oom["decisions"][0]["items"][0]["outcome"],
        "retry succeeded"
    );
    assert_eq!(oom["attempts"][1]["decision"], oom["decisions"][0]["seq"]);
    // `log` and `show` show the link too.
    let seq = oom["decisions"][0]["seq"].to_string();
    let log = stdout(&sb.run(&["log", "-n", "500"]));
    assert!(
        log.contains(&format!("[retry decided by event {seq} succeeded]")),
        "{log}"
    );
    let shown = stdout(&sb.run(&["show", &seq]));
    assert!(shown.contains("[retry succeeded]"), "{shown}");
}

#[test]
fn copilot_in_propose_only_mode_leaves_proposals_for_a_person() {
    let sb = parked();
    let out = run_with_agents(
        &sb,
        &[
            "recover",
            "1",
            "--ai-recovery",
            "--ai-agent",
            "copilot",
            "--ai-propose-only",
            "--no-run",
        ],
        &[],
    );
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    // Rules applied theirs; the agent's decision is a proposal, the job still parked.
    assert_eq!(job(&sb, "1")["status"], "pending_failed");
    assert_eq!(job(&sb, "4")["status"], "ready");
    let (_, p) = sb.json(&["proposals", "list", "1"]);
    let open: Vec<&Value> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["status"] == "open")
        .collect();
    assert_eq!(open.len(), 1, "{p}");
    assert_eq!(open[0]["actor"], "agent:recovery (copilot-standin)/1.0");
    let pid = open[0]["proposal_id"].to_string();
    assert_eq!(sb.run(&["proposals", "apply", &pid]).status.code(), Some(0));
    assert_eq!(job(&sb, "1")["status"], "ready");
}

#[test]
fn a_missing_agent_is_a_clear_error_and_the_jobs_stay_parked() {
    let sb = parked();
    let out = Command::new(bin())
        .args([
            "recover",
            "1",
            "--ai-recovery",
            "--ai-agent",
            "copilot",
            "--no-run",
        ])
        .current_dir(sb.path())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("copilot was not found on PATH"), "{text}");
    assert!(
        text.contains("torc-ledger classify 1"),
        "names the manual alternative: {text}"
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(job(&sb, "1")["status"], "pending_failed");
}

#[test]
fn watch_stops_when_the_agent_changes_nothing() {
    let sb = parked();
    let out = run_with_agents(
        &sb,
        &["watch", "1", "--ai-recovery", "--ai-agent", "claude"],
        &[("STANDIN_BEHAVIOUR", "nothing")],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}{}", stderr(&out));
    assert!(text.contains("the agent resolved nothing"), "{text}");
    // Rules still did their part; the unknown one stays parked for a person.
    assert_eq!(job(&sb, "1")["status"], "pending_failed");
    assert_eq!(job(&sb, "4")["status"], "completed");
    assert_eq!(job(&sb, "2")["status"], "failed");
}

#[test]
fn a_generic_agent_command_gets_the_prompt_and_the_config() {
    let sb = parked();
    let script = sb.write(
        "agent.sh",
        "#!/usr/bin/env bash\ncat > prompt.txt\ncp \"$TORC_LEDGER_MCP_CONFIG\" config.json\n",
    );
    let cmd = format!("bash {}", script.display());
    let out = run_with_agents(
        &sb,
        &[
            "recover",
            "1",
            "--ai-recovery",
            "--ai-agent",
            &cmd,
            "--no-run",
        ],
        &[],
    );
    assert!(
        stdout(&out).contains("resolved 0 job(s)"),
        "{}",
        stdout(&out)
    );
    let prompt = std::fs::read_to_string(sb.path().join("prompt.txt")).unwrap();
    assert!(prompt.contains("workflow 1"), "{prompt}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path().join("config.json")).unwrap())
            .unwrap();
    let args = config["mcpServers"]["torc-ledger"]["args"].to_string();
    assert!(
        args.contains("\"mcp\"") && args.contains("\"apply\"") && args.contains("--prompt-digest"),
        "{args}"
    );
}

#[test]
fn without_pending_failed_recover_fixes_final_failures_by_resource_cause() {
    let sb = Sandbox::new();
    sb.write(
        "f.yaml",
        "name: final\nresource_requirements:\n  - {name: quick, num_cpus: 1, memory: 100m, runtime: PT1S}\njobs:\n  - {name: slow, command: 'if [ \"$TORC_ATTEMPT_ID\" -lt 2 ]; then sleep 30; fi', resource_requirements: quick}\n  - {name: after, command: 'true', depends_on: [slow]}\n  - {name: odd, command: 'if [ -f again ]; then exit 0; fi; touch again; echo weird >&2; exit 9'}\n",
    );
    assert_eq!(sb.run(&["run", "f.yaml"]).status.code(), Some(3));
    assert_eq!(job(&sb, "1")["status"], "terminated");
    assert_eq!(job(&sb, "2")["status"], "canceled");
    // Dry run first: nothing recorded.
    let before = sb.json(&["replay"]).1["events"].clone();
    let out = sb.run(&["recover", "1", "--dry-run"]);
    assert!(stdout(&out).contains("would apply"), "{}", stdout(&out));
    assert_eq!(sb.json(&["replay"]).1["events"], before);
    // The timeout is requeued with more time, its canceled dependent comes back and runs;
    // the unknown failure is left alone without --retry-unknown.
    let out = sb.run(&["recover", "1"]);
    assert!(stdout(&out).contains("--retry-unknown"), "{}", stdout(&out));
    assert_eq!(job(&sb, "1")["status"], "completed");
    assert_eq!(job(&sb, "1")["runtime_seconds"], 2);
    assert_eq!(job(&sb, "2")["status"], "completed");
    assert_eq!(job(&sb, "3")["status"], "failed");
    let out = sb.run(&[
        "recover",
        "1",
        "--retry-unknown",
        "--recovery-hook",
        "echo hooked > hook.txt",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(job(&sb, "3")["status"], "completed");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("hook.txt")).unwrap(),
        "hooked 1\n"
    );
}
