//! `eval`, `eval history`, `eval compare`: score a classifier or a prompt on labeled failures.

use super::render::{clip, time_str, Out};
use super::{exit, no_at, read_state, Cli, CliError, CliResult};
use crate::classify::precedent::{outcomes, Precedent, PrecedentClassifier};
use crate::classify::{self, Classifier, Label, Options};
use crate::decide::Command;
use crate::eval::fixtures::{self, Fixture};
use crate::eval::metrics::{Metrics, ERROR};
use crate::eval::{classify_all, evaluation, score};
use crate::event::{Body, Event, Prediction};
use crate::ledger::{Ctx, Ledger};
use crate::model::Seq;
use crate::runner::logs;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Examples:
  torc-ledger eval --fixtures fixtures/failures/dev.jsonl                      # the built-in rules
  torc-ledger eval --fixtures dev.jsonl --classifier 'agent:python3 ask_llm.py' --concurrency 8
  torc-ledger eval --fixtures dev.jsonl --classifier http:http://localhost:8000/v1 --model qwen2.5-7b --prompt prompts/classify_v1.md
  torc-ledger eval --fixtures heldout.jsonl --classifier precedent --train dev.jsonl
  torc-ledger eval history
  torc-ledger eval compare 12 15

Every run is recorded in the ledger (--ledger, created if needed) unless --no-record.
A case the classifier cannot answer (bad JSON, refusal, timeout, no precedent) counts as wrong."
)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub sub: Option<EvalCmd>,
    #[command(flatten)]
    pub run: EvalRunArgs,
}

#[derive(Args, Debug)]
pub struct EvalRunArgs {
    /// Labeled fixture files, JSON Lines (schemas/fixture.schema.json). Repeat or list several.
    #[arg(long = "fixtures", value_name = "FILE", num_args = 1..)]
    pub fixtures: Vec<PathBuf>,
    /// rules (built in), precedent (this ledger's history, plus --train), agent:<command>
    /// (run per case: {prompt, case} on stdin, JSON answer on stdout), or http:<url> (an
    /// OpenAI-compatible chat-completions API, e.g. http:http://localhost:8000/v1).
    #[arg(long, short = 'c', default_value = "rules")]
    pub classifier: String,
    /// The model name sent to http: (and given to agent: as TORC_LEDGER_MODEL).
    #[arg(long)]
    pub model: Option<String>,
    /// The prompt for agent: and http: (default: the bundled prompts/classify_v1.md). Its
    /// blake3 digest is recorded with the run.
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// How many cases to classify at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Only the first N cases.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seconds an agent or HTTP request may take per case.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The environment variable that holds the HTTP API key (not sent when unset).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// HTTP retries on 429, 5xx and connection errors (backoff 0.5 s, doubling;
    /// TORC_LEDGER_HTTP_BACKOFF_MS sets the first wait).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// precedent only: also learn from these labeled fixture files.
    #[arg(long, value_name = "FILE")]
    pub train: Vec<PathBuf>,
    /// Refuse the whole run when any fixture line is bad (default: report and skip it).
    #[arg(long)]
    pub strict: bool,
    /// Do not record the run in the ledger.
    #[arg(long)]
    pub no_record: bool,
    /// How many wrong cases the table lists.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub show_wrong: usize,
}

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// The recorded evaluation runs, oldest first.
    History,
    /// Two recorded runs side by side: metric deltas and the cases where they disagree.
    Compare {
        /// A run (its event seq, from `eval history`).
        a: Seq,
        /// Another run.
        b: Seq,
    },
}

pub fn eval(cli: &Cli, out: &Out, a: &EvalArgs) -> CliResult {
    match &a.sub {
        None => run(cli, out, &a.run),
        Some(EvalCmd::History) => history(cli, out),
        Some(EvalCmd::Compare { a, b }) => compare(cli, out, *a, *b),
    }
}

fn bad_lines_error(bad: &[fixtures::BadLine]) -> CliError {
    let mut e = CliError::bad_input(format!(
        "{} bad fixture line(s), nothing evaluated (--strict):\n{}",
        bad.len(),
        bad.iter()
            .map(|b| format!("  {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    e.detail = Some(json!({ "bad_lines": bad }));
    e
}

/// Read fixture files, reporting bad lines (or refusing them with `strict`).
fn read_fixtures(out: &Out, paths: &[PathBuf], strict: bool) -> Result<fixtures::Loaded, CliError> {
    let loaded = fixtures::load(paths).map_err(CliError::bad_input)?;
    if !loaded.bad.is_empty() {
        if strict {
            return Err(bad_lines_error(&loaded.bad));
        }
        for b in &loaded.bad {
            out.note(format!("warning: {b}; skipped"));
        }
    }
    Ok(loaded)
}

fn has_ledger(dir: &Path) -> bool {
    dir.join("db").exists()
}

fn read_tail(path: &str) -> Option<String> {
    logs::tail(Path::new(path), 40, logs::TAIL_BYTES).ok()
}

/// Precedent: learn from the ledger's decided failures with a known outcome, and `--train`.
fn precedent(cli: &Cli, out: &Out, a: &EvalRunArgs) -> Result<PrecedentClassifier, CliError> {
    let mut p = PrecedentClassifier::new();
    let mut from_ledger = 0;
    if has_ledger(&cli.ledger) {
        let ledger = Ledger::open(&cli.ledger)?;
        let state = ledger.state(None)?;
        drop(ledger);
        let (found, _) = outcomes(&state, None, &read_tail);
        from_ledger = found.len();
        for o in found {
            p.learn(Precedent {
                source: format!("decision {} (job {})", o.decision_seq, o.job_id),
                case: o.case,
                label: o.label,
                adjust: o.adjust,
            });
        }
    }
    let train = read_fixtures(out, &a.train, a.strict)?;
    let from_train = train.fixtures.len();
    for f in train.fixtures {
        p.learn(Precedent {
            source: format!("fixture {}", f.id),
            case: f.case(),
            label: f.action,
            adjust: f.adjust,
        });
    }
    out.note(format!(
        "precedent: learned {from_ledger} outcome(s) from the ledger at {} and {from_train} case(s) from --train",
        cli.ledger.display()
    ));
    // Scoring a classifier on what it learned from measures memory, not judgement.
    let canon = |p: &std::path::PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    if a.train
        .iter()
        .any(|t| a.fixtures.iter().any(|f| canon(f) == canon(t)))
    {
        out.note(
            "warning: --train and --fixtures share a file: precedent is scored on cases it learned from",
        );
    }
    if from_ledger > 0 {
        out.note(
            "note: cases exported from this ledger (`fixtures export`) are among what precedent learned; score it on fixtures from elsewhere for an honest number",
        );
    }
    Ok(p)
}

fn run(cli: &Cli, out: &Out, a: &EvalRunArgs) -> CliResult {
    no_at(cli, "eval")?;
    if a.fixtures.is_empty() {
        return Err(CliError::bad_input(
            "eval needs labeled failures: --fixtures FILE... (e.g. --fixtures fixtures/failures/dev.jsonl); or use `eval history` / `eval compare A B`",
        ));
    }
    if a.concurrency == 0 {
        return Err(CliError::bad_input("--concurrency must be at least 1"));
    }
    if !a.train.is_empty() && a.classifier != "precedent" {
        return Err(CliError::bad_input(
            "--train feeds the precedent classifier; add --classifier precedent or drop --train",
        ));
    }
    let loaded = read_fixtures(out, &a.fixtures, a.strict)?;
    let mut cases: Vec<Fixture> = loaded.fixtures;
    if let Some(n) = a.limit {
        cases.truncate(n);
    }
    if cases.is_empty() {
        return Err(CliError::bad_input(format!(
            "no usable cases in {}; check them with `torc-ledger fixtures check FILE`",
            loaded.files.join(", ")
        )));
    }

    let prompt_driven = a.classifier.starts_with("agent:") || a.classifier.starts_with("http:");
    let prompt = match &a.prompt {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            CliError::bad_input(format!("cannot read the prompt file {}: {e}", p.display()))
        })?,
        None => classify::DEFAULT_PROMPT.to_string(),
    };
    if a.prompt.is_some() && !prompt_driven {
        out.note(format!(
            "note: --prompt is ignored by the {} classifier",
            a.classifier
        ));
    }
    let backoff = std::env::var("TORC_LEDGER_HTTP_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(500));
    let opts = Options {
        model: a.model.clone(),
        prompt: prompt.clone(),
        timeout: Duration::from_secs(a.timeout.max(1)),
        api_key_env: a.api_key_env.clone(),
        http_retries: a.retries,
        http_backoff: backoff,
    };
    let classifier: Box<dyn Classifier> = match classify::build(&a.classifier, &opts) {
        Ok(Some(c)) => c,
        Ok(None) => Box::new(precedent(cli, out, a)?),
        Err(e) => return Err(CliError::bad_input(e)),
    };
    let prompt_digest = prompt_driven.then(|| classify::prompt_digest(&prompt));

    let bar = if out.json() || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(cases.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} cases, {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix(clip(&classifier.name(), 40));
        b
    };
    let results = classify_all(classifier.as_ref(), &cases, a.concurrency, &|n| {
        bar.set_position(n as u64)
    });
    bar.finish_and_clear();

    let (metrics, predictions) = score(&cases, &results);
    let record = evaluation(
        classifier.as_ref(),
        prompt_digest.clone(),
        &cases,
        &loaded.files,
        &metrics,
        predictions.clone(),
    );
    let fixture_digest = record.fixture_digest.clone();
    // The results are shown even when recording fails (the error follows them).
    let recorded: Result<Option<Seq>, CliError> = if a.no_record {
        Ok(None)
    } else {
        Ledger::open(&cli.ledger)
            .and_then(|l| l.execute(Command::RecordEvaluation(record), Ctx::user()))
            .map(|appended| Some(appended.head()))
            .map_err(|e| {
                let mut e = CliError::from(e);
                e.message = format!("the run was not recorded: {}", e.message);
                e
            })
    };
    let run_seq = recorded.as_ref().ok().copied().flatten();

    if out.json() {
        let mut v = serde_json::to_value(&metrics).unwrap_or(Value::Null);
        v["run"] = json!(run_seq);
        v["classifier"] = json!(classifier.name());
        v["classifier_version"] = json!(classifier.version());
        v["model"] = json!(classifier.model());
        v["prompt_digest"] = json!(prompt_digest);
        v["fixture_digest"] = json!(fixture_digest);
        v["fixture_files"] = json!(loaded.files);
        v["skipped_lines"] = json!(loaded.bad);
        v["predictions"] = json!(predictions.iter().map(prediction_json).collect::<Vec<_>>());
        if let Err(e) = &recorded {
            v["record_error"] = json!(e.message);
            eprintln!("error: {}", e.message);
            out.print_json(&v);
            return Ok(e.code);
        }
        out.print_json(&v);
        return Ok(exit::OK);
    }
    let title = format!(
        "{} {}{}{}",
        classifier.name(),
        classifier.version(),
        classifier
            .model()
            .map(|m| format!(" model {m}"))
            .unwrap_or_default(),
        prompt_digest
            .as_ref()
            .map(|d| format!(" prompt {}", &d[..12]))
            .unwrap_or_default()
    );
    print_report(out, &title, &fixture_digest, &loaded.files, &metrics);
    print_wrong(out, &cases, &predictions, a.show_wrong);
    match recorded? {
        Some(seq) => out.line(format!(
            "\nrecorded as run {seq}; list runs: torc-ledger eval history; compare: torc-ledger eval compare {seq} RUN"
        )),
        None => out.line("\nnot recorded (--no-record)"),
    }
    Ok(exit::OK)
}

fn prediction_json(p: &Prediction) -> Value {
    json!({
        "id": p.id,
        "expected": p.expected,
        "predicted": p.predicted,
        "reason": p.reason,
        "latency_ms": p.latency_us as f64 / 1000.0,
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn print_report(out: &Out, title: &str, digest: &str, files: &[String], m: &Metrics) {
    out.line(format!(
        "eval: {title} on {} case(s) from {} (fixtures {})",
        m.n,
        files.join(", "),
        &digest[..12.min(digest.len())]
    ));
    out.line(format!(
        "accuracy {:.3} ({}/{} right; {} without a verdict{})",
        m.accuracy,
        m.correct,
        m.n,
        m.errors,
        if m.errors_by_kind.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                m.errors_by_kind
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    out.line("");
    out.line("costly errors");
    let c = &m.costly;
    out.table(
        &["", "COUNT", "OF", "RATE"],
        &[
            (
                "permanent failures retried (wasted allocations)",
                &c.permanent_retried,
            ),
            ("transient failures failed (lost work)", &c.transient_failed),
            (
                "resource failures retried without more resources",
                &c.resources_retried_without,
            ),
        ]
        .iter()
        .map(|(name, k)| {
            vec![
                format!("  {name}"),
                k.count.to_string(),
                k.of.to_string(),
                pct(k.rate),
            ]
        })
        .collect::<Vec<_>>(),
    );
    out.line("");
    let rows: Vec<Vec<String>> = Label::ALL
        .iter()
        .map(|l| {
            let p = &m.per_class[l.as_str()];
            vec![
                l.as_str().to_string(),
                format!("{:.3}", p.precision),
                format!("{:.3}", p.recall),
                format!("{:.3}", p.f1),
                p.support.to_string(),
            ]
        })
        .collect();
    out.table(&["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"], &rows);
    if m.resource_kind.n > 0 {
        out.line(format!(
            "right resource (memory vs time) for {}/{} retry_with_resources answers",
            m.resource_kind.correct, m.resource_kind.n
        ));
    }
    out.line("");
    out.line("confusion (rows: expected, columns: predicted)");
    let cols: Vec<&str> = Label::ALL
        .iter()
        .map(|l| l.as_str())
        .chain([ERROR])
        .collect();
    let mut headers = vec!["EXPECTED \\ PREDICTED"];
    headers.extend(cols.iter().copied());
    let rows: Vec<Vec<String>> = Label::ALL
        .iter()
        .map(|l| {
            let row = &m.confusion[l.as_str()];
            std::iter::once(l.as_str().to_string())
                .chain(
                    cols.iter()
                        .map(|c| row.get(*c).copied().unwrap_or(0).to_string()),
                )
                .collect()
        })
        .collect();
    out.table(&headers, &rows);
    out.line("");
    out.line(format!(
        "by difficulty: {}",
        m.by_difficulty
            .iter()
            .map(|(k, a)| format!("{k} {:.3} ({}/{})", a.accuracy, a.correct, a.n))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let rows: Vec<Vec<String>> = m
        .by_category
        .iter()
        .map(|(k, a)| {
            vec![
                k.clone(),
                format!("{:.3}", a.accuracy),
                format!("{}/{}", a.correct, a.n),
            ]
        })
        .collect();
    out.table(&["CATEGORY", "ACCURACY", "RIGHT"], &rows);
    let l = &m.latency_ms;
    out.line(format!(
        "latency per case: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max)
    ));
}

fn ms(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

fn print_wrong(out: &Out, cases: &[Fixture], predictions: &[Prediction], limit: usize) {
    let wrong: Vec<(&Fixture, &Prediction)> = cases
        .iter()
        .zip(predictions)
        .filter(|(_, p)| p.predicted.as_deref() != Some(p.expected.as_str()))
        .collect();
    if wrong.is_empty() || limit == 0 {
        return;
    }
    out.line("");
    out.line(format!(
        "wrong ({}{}):",
        wrong.len(),
        if wrong.len() > limit {
            format!(", first {limit}")
        } else {
            String::new()
        }
    ));
    let rows: Vec<Vec<String>> = wrong
        .iter()
        .take(limit)
        .map(|(f, p)| {
            vec![
                f.id.clone(),
                f.difficulty.clone(),
                p.expected.clone(),
                p.predicted.clone().unwrap_or_else(|| ERROR.into()),
                clip(&p.reason, 90),
            ]
        })
        .collect();
    out.table(
        &["ID", "DIFFICULTY", "EXPECTED", "PREDICTED", "REASON"],
        &rows,
    );
}

/// A recorded run, read back from its event.
struct RunRecord {
    seq: Seq,
    time_ms: u64,
    actor: String,
    classifier: String,
    classifier_version: String,
    model: Option<String>,
    prompt_digest: Option<String>,
    fixture_digest: String,
    fixture_files: Vec<String>,
    metrics: Value,
    predictions: Vec<Prediction>,
}

fn record_of(ev: &Event) -> Option<RunRecord> {
    let Body::EvaluationRecorded {
        classifier,
        classifier_version,
        model,
        prompt_digest,
        fixture_digest,
        fixture_files,
        metrics,
        predictions,
    } = &ev.body
    else {
        return None;
    };
    Some(RunRecord {
        seq: ev.seq,
        time_ms: ev.time_ms,
        actor: ev.actor.label(),
        classifier: classifier.clone(),
        classifier_version: classifier_version.clone(),
        model: model.clone(),
        prompt_digest: prompt_digest.clone(),
        fixture_digest: fixture_digest.clone(),
        fixture_files: fixture_files.clone(),
        metrics: serde_json::from_str(metrics).unwrap_or(Value::Null),
        predictions: predictions.clone(),
    })
}

fn no_ledger(cli: &Cli) -> CliError {
    CliError::bad_input(format!(
        "no ledger at {}; run `torc-ledger eval --fixtures FILE` first, or point --ledger at the ledger that holds the runs",
        cli.ledger.display()
    ))
}

fn history(cli: &Cli, out: &Out) -> CliResult {
    if !has_ledger(&cli.ledger) {
        return Err(no_ledger(cli));
    }
    let ledger = Ledger::open(&cli.ledger)?;
    let state = read_state(cli, &ledger)?;
    let mut runs = Vec::new();
    for &seq in &state.evaluations {
        if let Some(r) = ledger
            .events(seq, Some(seq), 1)?
            .first()
            .and_then(record_of)
        {
            runs.push(r);
        }
    }
    if out.json() {
        let items: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "run": r.seq,
                    "time": time_str(r.time_ms),
                    "actor": r.actor,
                    "classifier": r.classifier,
                    "classifier_version": r.classifier_version,
                    "model": r.model,
                    "prompt_digest": r.prompt_digest,
                    "fixture_digest": r.fixture_digest,
                    "fixture_files": r.fixture_files,
                    "n": r.metrics["n"],
                    "accuracy": r.metrics["accuracy"],
                    "errors": r.metrics["errors"],
                    "costly": r.metrics["costly"],
                    "latency_ms": r.metrics["latency_ms"],
                })
            })
            .collect();
        out.print_json(&json!({ "items": items }));
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        out.note("(no evaluation runs recorded; run `torc-ledger eval --fixtures FILE`)");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let m = &r.metrics;
            let costly = |k: &str| {
                format!(
                    "{}/{}",
                    m["costly"][k]["count"].as_u64().unwrap_or(0),
                    m["costly"][k]["of"].as_u64().unwrap_or(0)
                )
            };
            vec![
                r.seq.to_string(),
                time_str(r.time_ms),
                clip(&format!("{} {}", r.classifier, r.classifier_version), 40),
                r.model.clone().unwrap_or_else(|| "-".into()),
                r.prompt_digest
                    .as_ref()
                    .map(|d| d[..8.min(d.len())].to_string())
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "{} ({})",
                    &r.fixture_digest[..8.min(r.fixture_digest.len())],
                    m["n"]
                ),
                format!("{:.3}", m["accuracy"].as_f64().unwrap_or(0.0)),
                costly("permanent_retried"),
                costly("transient_failed"),
                m["errors"].to_string(),
            ]
        })
        .collect();
    out.table(
        &[
            "RUN",
            "TIME",
            "CLASSIFIER",
            "MODEL",
            "PROMPT",
            "FIXTURES (N)",
            "ACCURACY",
            "PERM→RETRY",
            "TRANS→FAIL",
            "ERRORS",
        ],
        &rows,
    );
    Ok(exit::OK)
}

fn load_run(cli: &Cli, ledger: &Ledger, seq: Seq) -> Result<RunRecord, CliError> {
    let evs = ledger.events(seq, Some(seq), 1)?;
    let Some(ev) = evs.first() else {
        return Err(CliError::bad_input(format!(
            "run {seq} does not exist (the ledger at {} has {} events); see `torc-ledger eval history`",
            cli.ledger.display(),
            ledger.last_seq()?
        )));
    };
    if let Some(at) = cli.at {
        if seq > at {
            return Err(CliError::bad_input(format!(
                "run {seq} was recorded after --at {at}"
            )));
        }
    }
    record_of(ev).ok_or_else(|| {
        CliError::bad_input(format!(
            "event {seq} is a {}, not an evaluation run; see `torc-ledger eval history`",
            ev.body.kind()
        ))
    })
}

fn compare(cli: &Cli, out: &Out, sa: Seq, sb: Seq) -> CliResult {
    if !has_ledger(&cli.ledger) {
        return Err(no_ledger(cli));
    }
    let ledger = Ledger::open(&cli.ledger)?;
    let a = load_run(cli, &ledger, sa)?;
    let b = load_run(cli, &ledger, sb)?;
    let get = |r: &RunRecord, path: &str| r.metrics.pointer(path).and_then(Value::as_f64);
    let mut metrics: Vec<(String, &str)> = vec![
        ("accuracy".into(), "/accuracy"),
        ("cases without a verdict".into(), "/errors"),
    ];
    let class_paths: Vec<(String, String)> = Label::ALL
        .iter()
        .flat_map(|l| {
            ["precision", "recall", "f1"]
                .into_iter()
                .map(move |k| (format!("{l} {k}"), format!("/per_class/{l}/{k}")))
        })
        .collect();
    let costly = [
        (
            "permanent failures retried (rate)",
            "/costly/permanent_retried/rate",
        ),
        (
            "transient failures failed (rate)",
            "/costly/transient_failed/rate",
        ),
        (
            "resource failures retried without (rate)",
            "/costly/resources_retried_without/rate",
        ),
        ("latency p50 ms", "/latency_ms/p50"),
        ("latency p90 ms", "/latency_ms/p90"),
    ];
    for (name, path) in costly {
        metrics.push((name.into(), path));
    }
    let mut deltas = Vec::new();
    let mut add = |name: &str, path: &str| {
        let raw = |r: &RunRecord| r.metrics.pointer(path).cloned().unwrap_or(Value::Null);
        let (ra, rb) = (raw(&a), raw(&b));
        let delta = match (ra.as_u64(), rb.as_u64()) {
            // Counts stay integers.
            (Some(x), Some(y)) => json!(y as i64 - x as i64),
            _ => match (get(&a, path), get(&b, path)) {
                (Some(x), Some(y)) => json!(y - x),
                _ => Value::Null,
            },
        };
        deltas.push(json!({ "metric": name, "a": ra, "b": rb, "delta": delta }));
    };
    for (name, path) in &metrics[..2] {
        add(name, path);
    }
    for (name, path) in &class_paths {
        add(name, path);
    }
    for (name, path) in &metrics[2..] {
        add(name, path);
    }

    let b_by_id: BTreeMap<&str, &Prediction> =
        b.predictions.iter().map(|p| (p.id.as_str(), p)).collect();
    let a_ids: std::collections::HashSet<&str> =
        a.predictions.iter().map(|p| p.id.as_str()).collect();
    let mut disagree = Vec::new();
    // Cases whose label differs between the two runs are not the same case: listed apart.
    let mut relabeled = Vec::new();
    for pa in &a.predictions {
        let Some(pb) = b_by_id.get(pa.id.as_str()) else {
            continue;
        };
        if pa.expected != pb.expected {
            relabeled
                .push(json!({"id": pa.id, "a_expected": pa.expected, "b_expected": pb.expected}));
            continue;
        }
        if pa.predicted != pb.predicted {
            disagree.push(json!({
                "id": pa.id,
                "expected": pa.expected,
                "a": pa.predicted,
                "b": pb.predicted,
                "a_right": pa.predicted.as_deref() == Some(pa.expected.as_str()),
                "b_right": pb.predicted.as_deref() == Some(pb.expected.as_str()),
                "a_reason": pa.reason,
                "b_reason": pb.reason,
            }));
        }
    }
    let common = b
        .predictions
        .iter()
        .filter(|p| a_ids.contains(p.id.as_str()))
        .count();
    let same_fixtures = a.fixture_digest == b.fixture_digest;
    let side = |r: &RunRecord| {
        json!({
            "run": r.seq,
            "classifier": r.classifier,
            "classifier_version": r.classifier_version,
            "model": r.model,
            "prompt_digest": r.prompt_digest,
            "fixture_digest": r.fixture_digest,
            "n": r.predictions.len(),
        })
    };
    if out.json() {
        out.print_json(&json!({
            "a": side(&a),
            "b": side(&b),
            "same_fixtures": same_fixtures,
            "common_cases": common,
            "metrics": deltas,
            "disagreements": disagree,
            "relabeled": relabeled,
        }));
        return Ok(exit::OK);
    }
    for (tag, r) in [("A", &a), ("B", &b)] {
        out.line(format!(
            "{tag}: run {} {} {}{}{}, {} case(s), fixtures {}, accuracy {:.3}",
            r.seq,
            r.classifier,
            r.classifier_version,
            r.model
                .as_ref()
                .map(|m| format!(" model {m}"))
                .unwrap_or_default(),
            r.prompt_digest
                .as_ref()
                .map(|d| format!(" prompt {}", &d[..12.min(d.len())]))
                .unwrap_or_default(),
            r.predictions.len(),
            &r.fixture_digest[..12.min(r.fixture_digest.len())],
            r.metrics["accuracy"].as_f64().unwrap_or(0.0)
        ));
    }
    if !same_fixtures {
        out.line(format!(
            "note: the runs saw different fixtures; metrics are not directly comparable, disagreements cover the {common} case(s) both saw"
        ));
    }
    out.line("");
    let f = |v: &Value| match v {
        Value::Number(n) if n.is_u64() => n.to_string(),
        v => v
            .as_f64()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "-".into()),
    };
    let rows: Vec<Vec<String>> = deltas
        .iter()
        .map(|d| {
            vec![
                d["metric"].as_str().unwrap_or("").to_string(),
                f(&d["a"]),
                f(&d["b"]),
                match &d["delta"] {
                    Value::Number(n) if n.is_i64() => format!("{:+}", n.as_i64().unwrap_or(0)),
                    v => v
                        .as_f64()
                        .map(|x| format!("{x:+.3}"))
                        .unwrap_or_else(|| "-".into()),
                },
            ]
        })
        .collect();
    out.table(&["METRIC", "A", "B", "B-A"], &rows);
    out.line("");
    if !relabeled.is_empty() {
        out.line(format!(
            "{} case(s) carry different labels in the two runs (not compared): {}",
            relabeled.len(),
            relabeled
                .iter()
                .map(|r| r["id"].as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if disagree.is_empty() {
        out.line(format!("A and B agree on all {common} common case(s)"));
        return Ok(exit::OK);
    }
    let a_only = disagree.iter().filter(|d| d["a_right"] == true).count();
    let b_only = disagree.iter().filter(|d| d["b_right"] == true).count();
    out.line(format!(
        "they disagree on {} of {common} case(s): A right on {a_only}, B right on {b_only}, neither on {}",
        disagree.len(),
        disagree.len().saturating_sub(a_only + b_only)
    ));
    let s = |v: &Value| v.as_str().unwrap_or(ERROR).to_string();
    let mark = |v: &Value, right: bool| format!("{}{}", s(v), if right { " ✓" } else { "" });
    let rows: Vec<Vec<String>> = disagree
        .iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["expected"]),
                mark(&d["a"], d["a_right"] == true),
                mark(&d["b"], d["b_right"] == true),
                clip(d["b_reason"].as_str().unwrap_or(""), 70),
            ]
        })
        .collect();
    out.table(&["ID", "EXPECTED", "A", "B", "B'S REASON"], &rows);
    Ok(exit::OK)
}
