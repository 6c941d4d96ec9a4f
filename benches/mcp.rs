//! MCP tool latency through rmcp's in-process client (the full protocol path, JSON included):
//! `list_pending_failed_jobs` with 1,000 pending jobs among 10,000, and one
//! `classify_and_resolve_failures` call applying 1,000 classifications.
//! Targets on the 2-core machine: under 50 ms and under 100 ms.

use criterion::{criterion_group, criterion_main, Criterion};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, Implementation, InitializeRequestParams,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use torc_ledger::decide::Command;
use torc_ledger::event::{Exit, InitKind};
use torc_ledger::ledger::{Ctx, Ledger, LocalLedger};
use torc_ledger::mcp::{Caps, LedgerMcp, Mode};
use torc_ledger::model::{JobDef, WorkflowDef};

const JOBS: usize = 10_000;
const PENDING: usize = 1_000;

/// A ledger with one workflow of 10,000 jobs, 1,000 of them parked in pending_failed with a
/// small stderr file each.
fn build(dir: &std::path::Path) -> Ledger {
    let l = LocalLedger::open(&dir.join("ledger")).unwrap();
    let def = WorkflowDef {
        name: "bench".into(),
        description: None,
        use_pending_failed: true,
        env: BTreeMap::new(),
        submit_dir: dir.display().to_string(),
        jobs: (0..JOBS)
            .map(|i| JobDef {
                name: format!("job{i}"),
                command: format!("python train.py --shard {i}"),
                depends_on: vec![],
                resource_requirements: None,
                failure_handler: None,
                cancel_on_blocking_job_failure: true,
                env: BTreeMap::new(),
                priority: 0,
            })
            .collect(),
        resource_requirements: vec![],
        failure_handlers: vec![],
    };
    let ctx = Ctx::runner();
    l.execute(
        Command::CreateWorkflow {
            def,
            spec_digest: "bench".into(),
        },
        ctx.clone(),
    )
    .unwrap();
    l.execute(
        Command::Initialize {
            workflow_id: 1,
            kind: InitKind::Init,
        },
        ctx.clone(),
    )
    .unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for j in 1..=PENDING as u64 {
        let e = logs.join(format!("{j}.e"));
        std::fs::write(
            &e,
            format!("Traceback (most recent call last):\n  File \"train.py\", line {j}\nRuntimeError: NCCL error: unhandled system error, shard {j}\n"),
        )
        .unwrap();
        l.execute(
            Command::StartJob {
                job_id: j,
                stdout_path: logs.join(format!("{j}.o")).display().to_string(),
                stderr_path: e.display().to_string(),
            },
            ctx.clone(),
        )
        .unwrap();
        l.execute(
            Command::FinishJob {
                job_id: j,
                exit: Exit {
                    return_code: 1,
                    signal: None,
                    duration_ms: 1000,
                    peak_memory_bytes: None,
                    timed_out: false,
                },
            },
            ctx.clone(),
        )
        .unwrap();
    }
    Ledger::Local(std::sync::Arc::new(l))
}

async fn connect(ledger: Ledger) -> RunningService<RoleClient, InitializeRequestParams> {
    let server = LedgerMcp::new(ledger, Mode::Apply, Caps::default(), None);
    let (s, c) = tokio::io::duplex(64 << 20);
    tokio::spawn(async move {
        let running = server.serve(s).await.unwrap();
        let _ = running.waiting().await;
    });
    InitializeRequestParams::new(
        ClientCapabilities::default(),
        Implementation::new("bench", "1"),
    )
    .serve(c)
    .await
    .unwrap()
}

async fn call(
    client: &RunningService<RoleClient, InitializeRequestParams>,
    name: &str,
    args: Value,
) -> Value {
    let r = client
        .call_tool(
            CallToolRequestParams::new(name.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{name}: {:?}", r.structured_content);
    r.structured_content.unwrap()
}

fn bench_mcp(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = build(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(connect(ledger.clone()));

    let mut g = c.benchmark_group("mcp");
    g.sample_size(20);
    g.bench_function("list_pending_failed_jobs/1000_of_10000", |b| {
        b.iter(|| {
            let v = rt.block_on(call(
                &client,
                "list_pending_failed_jobs",
                json!({"workflow_id": 1}),
            ));
            assert_eq!(v["pending_failed_count"], PENDING);
        })
    });
    let items: Vec<Value> = (1..=PENDING)
        .map(
            |j| json!({"job_id": j, "action": "retry", "memory": "2g", "reason": "NCCL transient"}),
        )
        .collect();
    g.bench_function("classify_and_resolve_failures/apply_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let v = rt.block_on(call(
                    &client,
                    "classify_and_resolve_failures",
                    json!({"workflow_id": 1, "dry_run": false, "classifications": items}),
                ));
                total += start.elapsed();
                // Put the jobs back (not timed): undo the decision.
                let seq = v["seqs"][0].as_u64().unwrap();
                ledger
                    .execute(
                        Command::Undo {
                            target: seq,
                            batch: vec![],
                        },
                        Ctx::user(),
                    )
                    .unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_mcp);
criterion_main!(benches);
