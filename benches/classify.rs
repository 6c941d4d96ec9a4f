//! Throughput of the built-in rules classifier over the labeled corpus.
//!
//! `rules/corpus`: every case of `fixtures/failures/dev.jsonl` and `heldout.jsonl` classified
//! once per iteration (the stderr tail normalised, all phrases matched in one pass, the rules
//! tried in order). Criterion reports cases/s as elements/s. Target: ≥ 50,000 cases/s.
//! `precedent/signature` is the cost of one failure signature (masking) for comparison.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use torc_ledger::classify::precedent::signature;
use torc_ledger::classify::rules::RulesClassifier;
use torc_ledger::classify::{Classifier, FailureCase};
use torc_ledger::eval::fixtures;

fn corpus() -> Vec<FailureCase> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/failures");
    let loaded = fixtures::load(&[format!("{dir}/dev.jsonl"), format!("{dir}/heldout.jsonl")])
        .expect("the corpus is readable");
    assert!(loaded.bad.is_empty(), "{:?}", loaded.bad);
    loaded.fixtures.iter().map(|f| f.case()).collect()
}

fn bench_rules(c: &mut Criterion) {
    let cases = corpus();
    let rules = RulesClassifier::new();
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(cases.len() as u64));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("corpus", |b| {
        b.iter(|| {
            for case in &cases {
                black_box(
                    rules
                        .classify(black_box(case))
                        .expect("rules always answer"),
                );
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("precedent");
    g.throughput(Throughput::Elements(cases.len() as u64));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("signature", |b| {
        b.iter(|| {
            for case in &cases {
                black_box(signature(black_box(case)));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench_rules
}
criterion_main!(benches);
