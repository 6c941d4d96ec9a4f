//! Labeled failures in JSON Lines (`schemas/fixture.schema.json`): reading them with every bad
//! line reported by file and line number, writing them, and their digest.

use crate::classify::{Adjust, FailureCase, Label};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// One labeled failure: a case and its right decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub id: String,
    pub category: String,
    pub action: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjust: Option<Adjust>,
    pub difficulty: String,
    pub command: String,
    pub return_code: i64,
    pub stderr_tail: String,
    pub rationale: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_time_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_limit_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

impl Fixture {
    /// What a classifier gets: no label, no category, no rationale.
    pub fn case(&self) -> FailureCase {
        FailureCase {
            id: self.id.clone(),
            command: self.command.clone(),
            return_code: self.return_code,
            stderr_tail: self.stderr_tail.clone(),
            exec_time_s: self.exec_time_s,
            runtime_limit_s: self.runtime_limit_s,
            peak_memory_bytes: self.peak_memory_bytes,
            memory_limit_bytes: self.memory_limit_bytes,
        }
    }

    /// The format's rules beyond types: `adjust` with `retry_with_resources` and only then,
    /// factors above 1, a known difficulty, a non-empty id, category and source.
    pub fn check(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("\"id\" is empty".into());
        }
        if self.category.trim().is_empty() {
            return Err("\"category\" is empty".into());
        }
        if self.source.trim().is_empty() {
            return Err("\"source\" is empty".into());
        }
        if !["easy", "medium", "hard"].contains(&self.difficulty.as_str()) {
            return Err(format!(
                "\"difficulty\" is {:?}; use easy, medium or hard",
                self.difficulty
            ));
        }
        match (self.action, &self.adjust) {
            (Label::RetryWithResources, None) => {
                return Err("retry_with_resources needs \"adjust\": {\"memory_factor\": 2} or {\"runtime_factor\": 2}".into())
            }
            (Label::RetryWithResources, Some(a)) if a.is_empty() => {
                return Err("\"adjust\" is empty; give memory_factor or runtime_factor".into())
            }
            (Label::Retry | Label::Fail, Some(_)) => {
                return Err(format!(
                    "\"adjust\" only goes with retry_with_resources, not {}",
                    self.action
                ))
            }
            _ => {}
        }
        if let Some(a) = &self.adjust {
            for (k, f) in [
                ("memory_factor", a.memory_factor),
                ("runtime_factor", a.runtime_factor),
            ] {
                if f.is_some_and(|f| f.is_nan() || f <= 1.0) {
                    return Err(format!("\"{k}\" must be more than 1"));
                }
            }
        }
        Ok(())
    }
}

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadLine {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Fixtures read from files, and the lines that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub fixtures: Vec<Fixture>,
    pub bad: Vec<BadLine>,
    pub files: Vec<String>,
}

/// Parse JSON Lines text; `file` names it in messages. Blank lines are ignored. `seen` holds
/// the ids already read (ids must be unique across every file of one evaluation).
pub fn parse(text: &str, file: &str, seen: &mut HashSet<String>, out: &mut Loaded) {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| BadLine {
            file: file.to_string(),
            line: i + 1,
            message,
        };
        let fx: Fixture = match serde_json::from_str(line) {
            Ok(f) => f,
            Err(e) => {
                out.bad.push(bad(e.to_string()));
                continue;
            }
        };
        if let Err(m) = fx.check() {
            out.bad.push(bad(format!("case {:?}: {m}", fx.id)));
            continue;
        }
        if !seen.insert(fx.id.clone()) {
            out.bad.push(bad(format!(
                "case id {:?} was already used; ids must be unique",
                fx.id
            )));
            continue;
        }
        out.fixtures.push(fx);
    }
}

/// Read fixture files in order. An unreadable file is an error; bad lines are collected.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Loaded, String> {
    let mut out = Loaded::default();
    let mut seen = HashSet::new();
    for p in paths {
        let p = p.as_ref();
        let bytes = std::fs::read(p)
            .map_err(|e| format!("cannot read fixture file {}: {e}", p.display()))?;
        // A stray non-UTF-8 byte (a Latin-1 log line) is replaced, not a reason to refuse the
        // whole file; a byte-order mark is dropped.
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let name = p.display().to_string();
        parse(text, &name, &mut seen, &mut out);
        out.files.push(name);
    }
    Ok(out)
}

/// blake3 over the cases as evaluated (their canonical JSON, in order): two runs with the same
/// digest saw exactly the same cases and labels.
pub fn digest(fixtures: &[Fixture]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"torc-ledger fixtures v1\n");
    for f in fixtures {
        h.update(serde_json::to_string(f).unwrap_or_default().as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":"a1","category":"oom","action":"retry_with_resources","adjust":{"memory_factor":2},"difficulty":"easy","command":"x","return_code":137,"stderr_tail":"Killed","rationale":"r","source":"s"}"#;

    #[test]
    fn a_stray_non_utf8_byte_or_a_bom_does_not_refuse_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        bytes.extend_from_slice(GOOD.as_bytes());
        bytes.push(b'\n');
        let second = GOOD.replace("a1", "a2").replace("Killed", "Killed \u{1}");
        let second = second.replace("\u{1}", "");
        let mut line2 = second.into_bytes();
        // A Latin-1 byte inside the stderr tail.
        let at = line2.windows(6).position(|w| w == b"Killed").unwrap();
        line2.insert(at + 6, 0xe4);
        bytes.extend_from_slice(&line2);
        std::fs::write(&p, bytes).unwrap();
        let loaded = load(&[&p]).unwrap();
        assert_eq!(loaded.fixtures.len(), 2, "{:?}", loaded.bad);
        assert!(loaded.fixtures[1].stderr_tail.contains('\u{fffd}'));
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_number_and_skipped() {
        let text = [
            GOOD,
            "",
            "{not json",
            r#"{"id":"a2","category":"oom","action":"retry","adjust":{"memory_factor":2},"difficulty":"easy","command":"x","return_code":1,"stderr_tail":"","rationale":"r","source":"s"}"#,
            r#"{"id":"a3","category":"x","action":"maybe","difficulty":"easy","command":"x","return_code":1,"stderr_tail":"","rationale":"r","source":"s"}"#,
            GOOD,
            r#"{"id":"a4","category":"x","action":"fail","difficulty":"easy","command":"x","return_code":1,"stderr_tail":"","rationale":"r","source":"s","labels":[]}"#,
            r#"{"id":"a5","category":"x","action":"fail","difficulty":"extreme","command":"x","return_code":1,"stderr_tail":"","rationale":"r","source":"s"}"#,
        ]
        .join("\n");
        let mut out = Loaded::default();
        parse(&text, "f.jsonl", &mut HashSet::new(), &mut out);
        assert_eq!(out.fixtures.len(), 1);
        let lines: Vec<usize> = out.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
        assert!(out.bad[1]
            .message
            .contains("only goes with retry_with_resources"));
        assert!(out.bad[3].message.contains("already used"));
        assert!(out.bad[4].message.contains("labels"), "{}", out.bad[4]);
        assert!(out.bad[0].to_string().starts_with("f.jsonl:3: "));
    }

    #[test]
    fn the_digest_follows_the_cases() {
        let mut out = Loaded::default();
        parse(GOOD, "f", &mut HashSet::new(), &mut out);
        let d1 = digest(&out.fixtures);
        assert_eq!(d1, digest(&out.fixtures.clone()));
        out.fixtures[0].action = Label::Retry;
        assert_ne!(d1, digest(&out.fixtures));
    }
}
