//! `precedent`: decide a failure the way the same failure turned out before.
//!
//! A failure's **signature** is its normalised stderr tail (the last non-empty lines, with
//! numbers, hex, paths, hosts and timestamps masked), its exit code and its normalised command.
//! Precedents come from the ledger's own history — decided failures whose outcome is known
//! ([`outcomes`]: a retry that then succeeded was transient; a retry that failed the same way
//! again was probably permanent) — and from labeled fixtures (`eval --train FILE`).
//!
//! Lookup: the same signature (command, exit code, tail) first; then the same exit code and
//! tail under any command. The majority label among those precedents wins (the most recent on a
//! tie). **With no precedent it abstains** with [`ClassifyError::NoPrecedent`], which `eval`
//! counts as an error for that case: precedent says only what it has seen.

use super::{normalise, Adjust, Classifier, ClassifyError, FailureCase, Label, Verdict};
use crate::model::{Action, JobId, Seq, WorkflowId};
use crate::state::State;
use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;

/// How many trailing non-empty lines of stderr make the signature.
const SIGNATURE_LINES: usize = 12;

/// A failure and how it turned out.
#[derive(Debug, Clone, PartialEq)]
pub struct Precedent {
    pub case: FailureCase,
    pub label: Label,
    pub adjust: Option<Adjust>,
    /// Where it was learned (a fixture id, an event).
    pub source: String,
}

fn masks() -> &'static [(Regex, &'static str)] {
    static M: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    M.get_or_init(|| {
        [
            // Timestamps and dates before numbers, so they mask as one token.
            (
                r"\d{4}-\d{2}-\d{2}([t ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?(z|[+-]\d{2}:?\d{2})?)?",
                "<time>",
            ),
            (r"\b\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?\b", "<time>"),
            (r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b", "<ip>"),
            (r"\b0x[0-9a-f]+\b", "<hex>"),
            (r"\b[0-9a-f]{8,}\b", "<hex>"),
            (r"(~|\.{1,2})?(/[^\s/'\x22:,;()\[\]]+)+/?", "<path>"),
            (
                r"\b[a-z0-9-]+(\.[a-z0-9-]+)+\.(org|com|net|edu|gov|io|internal|local|lan|cluster|svc)\b",
                "<host>",
            ),
            (r"\d+(\.\d+)?", "<n>"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).expect("a valid mask"), to))
        .collect()
    })
}

/// One line with its volatile parts masked.
pub fn mask(line: &str) -> String {
    let mut s = normalise(line);
    for (re, to) in masks() {
        if re.is_match(&s) {
            s = re.replace_all(&s, *to).into_owned();
        }
    }
    s
}

/// The masked tail: the last [`SIGNATURE_LINES`] non-empty lines.
pub fn tail_signature(stderr_tail: &str) -> String {
    let lines: Vec<&str> = stderr_tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let from = lines.len().saturating_sub(SIGNATURE_LINES);
    lines[from..]
        .iter()
        .map(|l| mask(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(exact, loose)` signature keys: with and without the command.
pub fn signature(case: &FailureCase) -> (String, String) {
    let tail = tail_signature(&case.stderr_tail);
    let loose = format!("{}\n{}", case.return_code, tail);
    let exact = format!("{}\n{}", mask(&case.command), loose);
    (
        blake3::hash(exact.as_bytes()).to_hex()[..32].to_string(),
        blake3::hash(loose.as_bytes()).to_hex()[..32].to_string(),
    )
}

#[derive(Debug, Default)]
pub struct PrecedentClassifier {
    precedents: Vec<Precedent>,
    exact: HashMap<String, Vec<usize>>,
    loose: HashMap<String, Vec<usize>>,
}

impl PrecedentClassifier {
    pub fn new() -> PrecedentClassifier {
        PrecedentClassifier::default()
    }

    pub fn learn(&mut self, p: Precedent) {
        let (exact, loose) = signature(&p.case);
        let i = self.precedents.len();
        self.precedents.push(p);
        self.exact.entry(exact).or_default().push(i);
        self.loose.entry(loose).or_default().push(i);
    }

    pub fn len(&self) -> usize {
        self.precedents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.precedents.is_empty()
    }

    fn decide(&self, found: &[usize], how: &str, confidence: f64) -> Verdict {
        let mut count: HashMap<Label, (usize, usize)> = HashMap::new();
        for &i in found {
            let e = count.entry(self.precedents[i].label).or_insert((0, i));
            e.0 += 1;
            e.1 = i;
        }
        // Most votes, then the most recent.
        let (&label, &(votes, last)) = count
            .iter()
            .max_by_key(|(_, (n, last))| (*n, *last))
            .expect("at least one precedent");
        let p = &self.precedents[last];
        Verdict {
            action: label,
            adjust: if label == Label::RetryWithResources {
                p.adjust
            } else {
                None
            },
            reason: format!(
                "precedent: {how} as {} ({votes} of {} precedent(s) say {label})",
                p.source,
                found.len()
            ),
            confidence: Some(confidence * votes as f64 / found.len() as f64),
        }
    }
}

impl Classifier for PrecedentClassifier {
    fn name(&self) -> String {
        "precedent".into()
    }

    fn version(&self) -> String {
        "1".into()
    }

    fn classify(&self, case: &FailureCase) -> Result<Verdict, ClassifyError> {
        let (exact, loose) = signature(case);
        if let Some(found) = self.exact.get(&exact) {
            return Ok(self.decide(found, "the same failure of the same command", 0.95));
        }
        if let Some(found) = self.loose.get(&loose) {
            return Ok(self.decide(found, "the same failure (another command)", 0.8));
        }
        Err(ClassifyError::NoPrecedent(format!(
            "no earlier failure has this signature (exit code {}; {} precedent(s) known)",
            case.return_code,
            self.precedents.len()
        )))
    }
}

/// A decided failure whose outcome the ledger knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub workflow_id: WorkflowId,
    pub job_id: JobId,
    /// The applied classification.
    pub decision_seq: Seq,
    /// The failure that was decided (its attempt's exit, resources and stderr tail).
    pub case: FailureCase,
    pub label: Label,
    pub adjust: Option<Adjust>,
    pub rationale: String,
}

/// A decided failure left out of [`outcomes`], and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub job_id: JobId,
    pub decision_seq: Seq,
    pub why: String,
}

/// The ledger's decided failures whose outcome is known, oldest first:
///
/// - `retry` and the next attempt exited 0 → **retry** (transient); with a memory or runtime
///   override → **retry_with_resources** with the factor the override applied;
/// - plain `retry` and the next attempt failed with the same exit code and the same stderr
///   signature → **fail** (probably permanent);
/// - anything else is skipped with the reason: `fail` decisions (never rerun), undone decisions,
///   retries not run yet, retries that failed differently or still failed with more resources,
///   and failures whose stderr log can no longer be read (`read_tail` returns `None`).
pub fn outcomes(
    state: &State,
    workflow: Option<WorkflowId>,
    read_tail: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Outcome>, Vec<Skipped>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for c in state.classifications.values() {
        if workflow.is_some_and(|w| c.workflow_id != w) {
            continue;
        }
        for it in &c.items {
            let seq = c.seq;
            let skip = |why: String| Skipped {
                job_id: it.job_id,
                decision_seq: seq,
                why,
            };
            if c.undone_by.is_some() {
                skipped.push(skip("the decision was undone".into()));
                continue;
            }
            if it.action == Action::Fail {
                skipped.push(skip(
                    "failed by the decision: never rerun, so its outcome is unknown".into(),
                ));
                continue;
            }
            let Some(job) = state.job(it.job_id) else {
                continue;
            };
            let Some(wf) = state.workflow(job.workflow_id) else {
                continue;
            };
            let Some(failed) = job
                .attempts
                .iter()
                .rev()
                .find(|a| a.finished_seq.is_some_and(|f| f < seq))
            else {
                skipped.push(skip("no finished attempt before the decision".into()));
                continue;
            };
            // The attempt the decision caused (an interrupted one says nothing).
            let Some(next) = job
                .attempts
                .iter()
                .find(|a| a.started_seq > seq && !a.interrupted)
            else {
                skipped.push(skip("the retry has not run yet".into()));
                continue;
            };
            let (Some(failed_exit), Some(next_exit)) = (&failed.exit, &next.exit) else {
                skipped.push(skip("the retry has not finished".into()));
                continue;
            };
            // Resources in force for the failed attempt: the spec's group, then the overrides
            // of earlier retry decisions on this job that still stand.
            let def = &wf.def.jobs[job.index as usize];
            let base = wf.def.resources_of(def);
            let (mut memory, mut runtime) = (base.memory_bytes, base.runtime_seconds);
            for d in job.decisions.iter().filter(|&&d| d < seq) {
                let Some(earlier) = state.classifications.get(d) else {
                    continue;
                };
                if earlier.undone_by.is_some() {
                    continue;
                }
                if let Some(e) = earlier.items.iter().find(|i| i.job_id == job.id) {
                    memory = e.memory_bytes.unwrap_or(memory);
                    runtime = e.runtime_seconds.unwrap_or(runtime);
                }
            }
            let Some(tail) = read_tail(&failed.stderr_path) else {
                skipped.push(skip(format!(
                    "its stderr log {} can no longer be read",
                    failed.stderr_path
                )));
                continue;
            };
            let case = FailureCase {
                id: format!("wf{}-j{}-a{}", wf.id, job.id, failed.attempt_id),
                command: def.command.clone(),
                return_code: failed_exit.return_code,
                stderr_tail: tail,
                exec_time_s: Some(failed_exit.duration_ms as f64 / 1000.0),
                runtime_limit_s: Some(runtime),
                peak_memory_bytes: failed_exit.peak_memory_bytes,
                memory_limit_bytes: Some(memory),
            };
            let factor = |new: Option<u64>, old: u64| {
                new.filter(|_| old > 0)
                    .map(|n| (n as f64 / old as f64 * 100.0).round() / 100.0)
                    .filter(|f| *f > 1.0)
            };
            let adjust = Adjust {
                memory_factor: factor(it.memory_bytes, memory),
                runtime_factor: factor(it.runtime_seconds, runtime),
            };
            let resources = it.memory_bytes.is_some() || it.runtime_seconds.is_some();
            let ok = next_exit.succeeded();
            let (label, adjust, rationale) = if ok && resources {
                if adjust.is_empty() {
                    skipped.push(skip(
                        "retried with no more memory or time than before, and succeeded".into(),
                    ));
                    continue;
                }
                (
                    Label::RetryWithResources,
                    Some(adjust),
                    format!(
                        "decision {seq} retried it with more resources and attempt {} succeeded",
                        next.attempt_id
                    ),
                )
            } else if ok {
                (
                    Label::Retry,
                    None,
                    format!(
                        "decision {seq} retried it and attempt {} succeeded: transient",
                        next.attempt_id
                    ),
                )
            } else if resources {
                skipped.push(skip(format!(
                    "retried with more resources and attempt {} failed again: not known whether more would do",
                    next.attempt_id
                )));
                continue;
            } else {
                let same = next_exit.return_code == failed_exit.return_code
                    && read_tail(&next.stderr_path)
                        .is_some_and(|t| tail_signature(&t) == tail_signature(&case.stderr_tail));
                if !same {
                    skipped.push(skip(format!(
                        "retried and attempt {} failed differently (exit {}): outcome unclear",
                        next.attempt_id, next_exit.return_code
                    )));
                    continue;
                }
                // A later attempt that succeeded shows the failure was transient after all:
                // labelling this link "fail" would contradict the next one.
                if let Some(later) = job.attempts.iter().find(|a| {
                    a.started_seq > next.started_seq
                        && !a.interrupted
                        && a.exit.as_ref().is_some_and(|e| e.succeeded())
                }) {
                    skipped.push(skip(format!(
                        "failed the same way on attempt {}, but attempt {} succeeded later: transient, not permanent",
                        next.attempt_id, later.attempt_id
                    )));
                    continue;
                }
                (
                    Label::Fail,
                    None,
                    format!(
                        "decision {seq} retried it and attempt {} failed the same way (exit {}): probably permanent",
                        next.attempt_id, next_exit.return_code
                    ),
                )
            };
            found.push(Outcome {
                workflow_id: wf.id,
                job_id: job.id,
                decision_seq: seq,
                case,
                label,
                adjust,
                rationale,
            });
        }
    }
    (found, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(cmd: &str, rc: i64, tail: &str) -> FailureCase {
        FailureCase {
            id: "x".into(),
            command: cmd.into(),
            return_code: rc,
            stderr_tail: tail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn masking_keeps_the_shape_of_a_failure() {
        assert_eq!(
            mask("2024-03-19T10:44:51 ERROR connect to 10.0.3.17:443 failed after 30 s at /home/ana/x.py line 12 (0x7f6a1b2c)"),
            "<time> error connect to <ip> failed after <n> s at <path> line <n> (<hex>)"
        );
        assert_eq!(
            mask("Could not resolve host: files.pythonhosted.org"),
            "could not resolve host: <host>"
        );
        let a = case(
            "python a.py --seed 1",
            1,
            "step 10\nKeyError: 'x' at /data/run1/f.py:12",
        );
        let b = case(
            "python a.py --seed 2",
            1,
            "step 99\nKeyError: 'x' at /data/run7/f.py:40",
        );
        assert_eq!(signature(&a), signature(&b));
        let c = case(
            "python a.py --seed 2",
            1,
            "step 99\nKeyError: 'y' at /data/run7/f.py:40",
        );
        assert_ne!(signature(&a).1, signature(&c).1);
    }

    #[test]
    fn learns_and_abstains() {
        let mut p = PrecedentClassifier::new();
        let nope = p.classify(&case("a", 1, "boom")).unwrap_err();
        assert!(matches!(nope, ClassifyError::NoPrecedent(_)));
        for (i, label) in [Label::Retry, Label::Retry, Label::Fail]
            .into_iter()
            .enumerate()
        {
            p.learn(Precedent {
                case: case(
                    "python fetch.py",
                    1,
                    &format!("ConnectionResetError at 10.0.0.{i}"),
                ),
                label,
                adjust: None,
                source: format!("fixture f{i}"),
            });
        }
        let v = p
            .classify(&case(
                "python fetch.py",
                1,
                "ConnectionResetError at 10.1.1.1",
            ))
            .unwrap();
        assert_eq!(v.action, Label::Retry);
        assert!(v.reason.contains("2 of 3"), "{}", v.reason);
        // Another command, same failure: the looser match.
        let v = p
            .classify(&case(
                "bash other.sh",
                1,
                "ConnectionResetError at 10.1.1.1",
            ))
            .unwrap();
        assert!(v.reason.contains("another command"));
        // Another exit code is another failure.
        assert!(p
            .classify(&case(
                "python fetch.py",
                2,
                "ConnectionResetError at 10.1.1.1"
            ))
            .is_err());
    }
}
