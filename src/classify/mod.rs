//! Classifiers: from a failed job to a decision — retry (transient), fail (permanent), or retry
//! with more memory or time.
//!
//! Every classifier sits behind [`Classifier`], so `eval` (offline scoring) and the recovery loop
//! (real `pending_failed` jobs) call them the same way. They do no terminal I/O; the ones that
//! reach out (`agent:`, `http:`) bound every call with a timeout and turn every failure into a
//! [`ClassifyError`] for that case, never a panic.
//!
//! - [`rules::RulesClassifier`]: the built-in table of failure meanings (no I/O, microseconds).
//! - [`precedent::PrecedentClassifier`]: what happened to the same failure signature before.
//! - [`agent::AgentClassifier`]: a command that reads `{prompt, case}` on stdin and answers JSON.
//! - [`http::HttpClassifier`]: an OpenAI-compatible chat-completions endpoint.

pub mod agent;
pub mod http;
pub mod precedent;
pub mod rules;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The decision a classifier proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Transient: the same job will likely succeed.
    Retry,
    /// Permanent: retrying will not help.
    Fail,
    /// It needs more memory or more time (see [`Adjust`]).
    RetryWithResources,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Retry, Label::Fail, Label::RetryWithResources];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Retry => "retry",
            Label::Fail => "fail",
            Label::RetryWithResources => "retry_with_resources",
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "retry" => Some(Label::Retry),
            "fail" => Some(Label::Fail),
            "retry_with_resources" => Some(Label::RetryWithResources),
            _ => None,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much more of which resource a `retry_with_resources` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Adjust {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_factor: Option<f64>,
}

impl Adjust {
    pub fn memory(f: f64) -> Adjust {
        Adjust {
            memory_factor: Some(f),
            runtime_factor: None,
        }
    }
    pub fn runtime(f: f64) -> Adjust {
        Adjust {
            memory_factor: None,
            runtime_factor: Some(f),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.memory_factor.is_none() && self.runtime_factor.is_none()
    }
}

/// One failed job, as a classifier sees it. No label and no category: a classifier decides from
/// what the job left behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureCase {
    pub id: String,
    pub command: String,
    /// Exit code; 128+n for signal n; 152 for a job killed at its runtime limit.
    pub return_code: i64,
    /// The last lines of the job's stderr.
    pub stderr_tail: String,
    /// How long the attempt ran, when known.
    pub exec_time_s: Option<f64>,
    /// The job's runtime limit, when known.
    pub runtime_limit_s: Option<u64>,
    /// The attempt's peak memory, when known.
    pub peak_memory_bytes: Option<u64>,
    /// The job's memory limit, when known.
    pub memory_limit_bytes: Option<u64>,
}

/// A classifier's answer for one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub action: Label,
    /// With `retry_with_resources`: which resource, by how much.
    pub adjust: Option<Adjust>,
    /// Why, for people (and the ledger's decision record).
    pub reason: String,
    /// 0..1 when the classifier says how sure it is.
    pub confidence: Option<f64>,
}

/// Why a classifier gave no verdict for a case. In `eval` it counts as an error for that case
/// (wrong, whatever the label), never as a crash.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClassifyError {
    /// The classifier abstains: it has nothing to go on (precedent without a precedent).
    #[error("no precedent: {0}")]
    NoPrecedent(String),
    #[error("no answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The endpoint or command could not be reached, or kept failing (after retries).
    #[error("{0}")]
    Unavailable(String),
    /// An answer came but it is not the JSON asked for.
    #[error("answer not understood: {0}")]
    BadAnswer(String),
    /// The model declined to answer.
    #[error("the model refused: {0}")]
    Refused(String),
}

impl ClassifyError {
    /// A short name for reports (`no_precedent`, `timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ClassifyError::NoPrecedent(_) => "no_precedent",
            ClassifyError::Timeout(_) => "timeout",
            ClassifyError::Unavailable(_) => "unavailable",
            ClassifyError::BadAnswer(_) => "bad_answer",
            ClassifyError::Refused(_) => "refused",
        }
    }
}

/// A classifier. Implementations are `Send + Sync`: `eval` calls one from several threads.
pub trait Classifier: Send + Sync {
    /// What to call it in reports and events (`rules`, `agent:./ask.sh`, `http:URL`).
    fn name(&self) -> String;
    /// Changes when its behaviour changes (the rules table's version, a prompt's digest, ...).
    fn version(&self) -> String;
    /// The model behind it, when one is.
    fn model(&self) -> Option<String> {
        None
    }
    fn classify(&self, case: &FailureCase) -> Result<Verdict, ClassifyError>;
}

/// The default prompt for `agent:` and `http:` classifiers (versioned file in `prompts/`).
pub const DEFAULT_PROMPT: &str = include_str!("../../prompts/classify_v1.md");
/// Its name, for reports.
pub const DEFAULT_PROMPT_NAME: &str = "prompts/classify_v1.md";

/// blake3 of a prompt's bytes, hex: what an evaluation records as the prompt's identity.
pub fn prompt_digest(prompt: &str) -> String {
    blake3::hash(prompt.as_bytes()).to_hex().to_string()
}

/// Lowercase, and every run of whitespace (newlines included) folded into one space: the form
/// the rules and signatures match against, so case and layout never matter.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if ch.is_ascii() {
            out.push(ch.to_ascii_lowercase());
        } else {
            out.extend(ch.to_lowercase());
        }
    }
    out
}

/// Read a classifier's answer: a JSON object `{action, reason, memory_factor?, runtime_factor?,
/// confidence?}` (`adjust: {...}` is accepted too). Tolerates a Markdown code fence or prose
/// around the object; anything else is [`ClassifyError::BadAnswer`], and an answer that says it
/// refuses is [`ClassifyError::Refused`].
pub fn parse_answer(text: &str) -> Result<Verdict, ClassifyError> {
    let trimmed = text.trim();
    let v: Value = match serde_json::from_str(trimmed) {
        Ok(v) => v,
        Err(first) => {
            // Prose around the answer (reasoning, notes, even with braces of their own): the
            // last JSON object in the text that has an "action" key, else the outermost {...}.
            let without_thinking = match (trimmed.find("<think>"), trimmed.rfind("</think>")) {
                (Some(a), Some(b)) if a < b => format!("{}{}", &trimmed[..a], &trimmed[b + 8..]),
                _ => trimmed.to_string(),
            };
            let t = without_thinking.as_str();
            let mut found: Option<Value> = None;
            for (i, _) in t.match_indices('{') {
                let mut stream = serde_json::Deserializer::from_str(&t[i..]).into_iter::<Value>();
                if let Some(Ok(v)) = stream.next() {
                    if v.get("action").is_some() {
                        found = Some(v);
                    }
                }
            }
            let obj = found.or_else(|| match (t.find('{'), t.rfind('}')) {
                (Some(a), Some(b)) if a < b => serde_json::from_str::<Value>(&t[a..=b]).ok(),
                _ => None,
            });
            match obj {
                Some(v) => v,
                None if looks_like_refusal(trimmed) => {
                    return Err(ClassifyError::Refused(clip(trimmed, 200)))
                }
                None => {
                    return Err(ClassifyError::BadAnswer(format!(
                        "not JSON ({first}): {}",
                        clip(trimmed, 200)
                    )))
                }
            }
        }
    };
    let Some(obj) = v.as_object() else {
        return Err(ClassifyError::BadAnswer(format!(
            "expected a JSON object, got {}",
            clip(&v.to_string(), 200)
        )));
    };
    if let Some(r) = obj.get("refusal").and_then(Value::as_str) {
        if !r.trim().is_empty() {
            return Err(ClassifyError::Refused(clip(r, 200)));
        }
    }
    let action = match obj.get("action") {
        Some(Value::String(s)) => Label::parse(s).ok_or_else(|| {
            ClassifyError::BadAnswer(format!(
                "unknown action {s:?}; expected retry, fail or retry_with_resources"
            ))
        })?,
        Some(other) => {
            return Err(ClassifyError::BadAnswer(format!(
                "\"action\" must be a string, got {other}"
            )))
        }
        None => {
            return Err(ClassifyError::BadAnswer(format!(
                "no \"action\" in {}",
                clip(&v.to_string(), 200)
            )))
        }
    };
    let factor = |key: &str| -> Result<Option<f64>, ClassifyError> {
        let raw = obj
            .get(key)
            .or_else(|| obj.get("adjust").and_then(|a| a.get(key)));
        match raw {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
                _ => Err(ClassifyError::BadAnswer(format!("{key} must be positive"))),
            },
            Some(Value::String(s)) => s
                .trim()
                .trim_end_matches(['x', 'X'])
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Some)
                .ok_or_else(|| ClassifyError::BadAnswer(format!("{key} {s:?} is not a number"))),
            Some(other) => Err(ClassifyError::BadAnswer(format!(
                "{key} must be a number, got {other}"
            ))),
        }
    };
    let adjust = Adjust {
        memory_factor: factor("memory_factor")?,
        runtime_factor: factor("runtime_factor")?,
    };
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    let confidence = obj
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c));
    Ok(Verdict {
        action,
        adjust: (action == Label::RetryWithResources && !adjust.is_empty()).then_some(adjust),
        reason,
        confidence,
    })
}

fn looks_like_refusal(text: &str) -> bool {
    let t = normalise(text);
    [
        "i can't",
        "i cannot",
        "i can not",
        "i won't",
        "i'm unable",
        "i am unable",
        "i'm sorry",
        "i am sorry",
        "as an ai",
    ]
    .iter()
    .any(|p| t.starts_with(p) || t.contains(&format!(". {p}")))
}

/// The first `n` characters of `s`, on one line.
pub(crate) fn clip(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= n {
        one
    } else {
        let mut t: String = one.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// The JSON a prompt-driven classifier is given for one case (no label, no category).
pub fn case_json(case: &FailureCase) -> Value {
    serde_json::json!({
        "id": case.id,
        "command": case.command,
        "return_code": case.return_code,
        "stderr_tail": case.stderr_tail,
        "exec_time_s": case.exec_time_s,
        "runtime_limit_s": case.runtime_limit_s,
        "peak_memory_bytes": case.peak_memory_bytes,
        "memory_limit_bytes": case.memory_limit_bytes,
    })
}

/// Options for building a classifier from its `--classifier` name.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--model` (http: the model field; agent: passed as `TORC_LEDGER_MODEL`).
    pub model: Option<String>,
    /// The system prompt / instructions (the default prompt unless `--prompt FILE`).
    pub prompt: String,
    /// Per-case timeout for agent and http.
    pub timeout: Duration,
    /// The environment variable holding the HTTP API key.
    pub api_key_env: String,
    /// HTTP retries on 429/5xx/connection errors, and the first backoff (doubled each time).
    pub http_retries: u32,
    pub http_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            model: None,
            prompt: DEFAULT_PROMPT.to_string(),
            timeout: Duration::from_secs(120),
            api_key_env: "OPENAI_API_KEY".into(),
            http_retries: 4,
            http_backoff: Duration::from_millis(500),
        }
    }
}

/// Which classifier a `--classifier` value names. `precedent` needs history, so it is built by
/// the caller ([`precedent::PrecedentClassifier`]); this returns `Ok(None)` for it.
pub fn build(spec: &str, opts: &Options) -> Result<Option<Box<dyn Classifier>>, String> {
    let spec = spec.trim();
    if spec == "rules" {
        return Ok(Some(Box::new(rules::RulesClassifier::new())));
    }
    if spec == "precedent" {
        return Ok(None);
    }
    if let Some(cmd) = spec.strip_prefix("agent:") {
        if cmd.trim().is_empty() {
            return Err("agent: needs a command, e.g. --classifier 'agent:./classify.sh'".into());
        }
        return Ok(Some(Box::new(agent::AgentClassifier::new(cmd, opts))));
    }
    if let Some(url) = spec.strip_prefix("http:") {
        return http::HttpClassifier::new(url, opts)
            .map(|c| Some(Box::new(c) as Box<dyn Classifier>));
    }
    Err(format!(
        "unknown classifier {spec:?}; use rules, precedent, agent:<command> or http:<url>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_folds_case_and_whitespace() {
        assert_eq!(
            normalise("  Out Of\tMemory\n\n  KILLED  "),
            "out of memory killed"
        );
        assert_eq!(normalise("Keine BERECHTIGUNG"), "keine berechtigung");
        assert_eq!(
            normalise("セグメンテーション違反"),
            "セグメンテーション違反"
        );
    }

    #[test]
    fn reasoning_and_notes_with_braces_around_the_answer_are_tolerated() {
        let v =
            parse_answer("<think>The log shows {rank: 3}.</think>\n{\"action\":\"fail\"}").unwrap();
        assert_eq!(v.action, Label::Fail);
        let v = parse_answer("{\"action\":\"retry\"}\nNote: the {rank} placeholder is unused.")
            .unwrap();
        assert_eq!(v.action, Label::Retry);
        assert!(parse_answer("I think {rank: 3} but cannot say.").is_err());
    }

    #[test]
    fn answers_are_read_leniently_but_never_guessed() {
        let v = parse_answer(
            r#"{"action": "retry_with_resources", "memory_factor": 2, "reason": "OOM"}"#,
        )
        .unwrap();
        assert_eq!(v.action, Label::RetryWithResources);
        assert_eq!(v.adjust, Some(Adjust::memory(2.0)));
        let v = parse_answer(
            "Here you go:\n```json\n{\"action\": \"fail\", \"reason\": \"KeyError\"}\n```",
        )
        .unwrap();
        assert_eq!((v.action, v.reason.as_str()), (Label::Fail, "KeyError"));
        let v =
            parse_answer(r#"{"action":"retry-with-resources","adjust":{"runtime_factor":"1.5x"}}"#)
                .unwrap();
        assert_eq!(v.adjust, Some(Adjust::runtime(1.5)));
        // Adjustments only travel with retry_with_resources.
        let v = parse_answer(r#"{"action":"retry","memory_factor":2}"#).unwrap();
        assert_eq!(v.adjust, None);

        for bad in [
            "",
            "retry",
            "[1,2]",
            r#"{"reason": "no action"}"#,
            r#"{"action": "maybe"}"#,
            r#"{"action": 3}"#,
            r#"{"action": "retry_with_resources", "memory_factor": -2}"#,
        ] {
            assert!(
                matches!(parse_answer(bad), Err(ClassifyError::BadAnswer(_))),
                "{bad:?} -> {:?}",
                parse_answer(bad)
            );
        }
        assert!(matches!(
            parse_answer("I'm sorry, I can't help with that."),
            Err(ClassifyError::Refused(_))
        ));
        assert!(matches!(
            parse_answer(r#"{"refusal": "not allowed"}"#),
            Err(ClassifyError::Refused(_))
        ));
    }

    #[test]
    fn build_names_the_classifiers() {
        let o = Options::default();
        assert_eq!(build("rules", &o).unwrap().unwrap().name(), "rules");
        assert!(build("precedent", &o).unwrap().is_none());
        assert_eq!(
            build("agent:./x.sh", &o).unwrap().unwrap().name(),
            "agent:./x.sh"
        );
        assert!(build("agent:", &o).is_err());
        assert!(matches!(build("magic", &o), Err(e) if e.contains("unknown classifier")));
    }
}
