//! Reading a Torc 1.0.0 workflow spec (YAML or JSON) into a validated [`WorkflowDef`].
//!
//! Field names and semantics follow Torc's `WorkflowSpec` so an existing spec can be submitted
//! unchanged. Everything is checked before anything is recorded: a spec either becomes a
//! complete `WorkflowDef` or a [`SpecError`] that names the problem, where it is, and what to do.
//!
//! What the spec means here:
//! - `variables`: `{name}` is replaced by the value in every string (names, commands, env
//!   values, paths, references), as Torc does before reading the rest.
//! - `${files.input.X}` / `${files.output.X}` in a command become file X's `path`; together with
//!   `input_files` / `output_files` they make each reader of X wait for every writer of X.
//! - `depends_on_regexes` match whole job names.
//! - A job's `env` is the workflow `env` overlaid with the job's own (as Torc stores it).
//! - Torc fields with no effect here (Slurm, monitoring, RO-Crate, ...) parse and produce a
//!   warning in [`ParsedSpec::warnings`]; fields whose absence of effect would change which
//!   jobs run or in what order (parameters, user data, invocation scripts, ...) are refused.

mod build;
mod locate;
mod raw;

#[cfg(test)]
mod tests;

pub use locate::Section;

use crate::model::{ResourceError, WorkflowDef};
use std::fmt;
use std::path::Path;

/// A spec that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSpec {
    pub def: WorkflowDef,
    /// One sentence per Torc field that was accepted but has no effect here.
    pub warnings: Vec<String>,
    /// blake3 of the raw spec bytes, hex.
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Yaml,
    Json,
}

impl fmt::Display for SpecFormat {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            SpecFormat::Yaml => "YAML",
            SpecFormat::Json => "JSON",
        })
    }
}

/// Why a spec was refused. `Display` is a one-paragraph message for the user: the problem,
/// where it is, and the next step.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "cannot read workflow spec {path}: {source}; check the path and that the file is readable"
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Syntax errors and values of the wrong type, as the YAML or JSON reader reports them.
    #[error("{}", parse_message(*format, message, entry.as_deref(), *line, *column))]
    Parse {
        format: SpecFormat,
        message: String,
        /// The entry the position falls in, e.g. `job "b"`.
        entry: Option<String>,
        line: Option<u64>,
        column: Option<u64>,
    },

    /// A key that Torc 1.0.0 does not have either (usually a typo).
    #[error("{}", unknown_field_message(key, *section, entry.as_deref(), *line, *column, suggestion.as_deref()))]
    UnknownField {
        key: String,
        section: Section,
        entry: Option<String>,
        line: Option<u64>,
        column: Option<u64>,
        suggestion: Option<String>,
    },

    /// A Torc field that torc-ledger does not implement and cannot safely ignore.
    #[error("{} uses {field:?}, which torc-ledger does not support: {reason}", entry.as_deref().unwrap_or("the spec"))]
    Unsupported {
        field: String,
        /// e.g. `job "b"`; `None` for a top-level field.
        entry: Option<String>,
        reason: String,
    },

    /// A value that is present but not acceptable (empty name, negative priority, ...).
    #[error("{problem}; {fix}")]
    Invalid { problem: String, fix: String },

    #[error("{kind} name {name:?} is used twice ({kind} entries {first} and {second}, counting from 1); give each {kind} its own name")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: usize,
        second: usize,
    },

    #[error("job {job:?} depends on {dependency:?}, which is not a job in this spec{}; fix the name in depends_on or add the job", did_you_mean(suggestion.as_deref()))]
    UnknownDependency {
        job: String,
        dependency: String,
        suggestion: Option<String>,
    },

    #[error("job {job:?}: depends_on_regexes entry {regex:?} {problem}; fix the pattern (it must match whole job names) or remove it")]
    DependencyRegex {
        job: String,
        regex: String,
        problem: String,
    },

    #[error("job {job:?} depends on itself; remove {job:?} from its depends_on")]
    SelfDependency { job: String },

    /// A job names a resource group or failure handler the spec does not define.
    #[error("job {job:?} uses {list} entry {name:?}, which the spec does not define{}; add it to {list} or fix the name", did_you_mean(suggestion.as_deref()))]
    UnknownReference {
        job: String,
        /// `resource_requirements` or `failure_handlers`.
        list: &'static str,
        name: String,
        suggestion: Option<String>,
    },

    #[error("job {job:?} refers to file {file:?} ({how}), which is not declared in files{}; add it to files (with its path) or fix the name", did_you_mean(suggestion.as_deref()))]
    UnknownFile {
        job: String,
        file: String,
        how: String,
        suggestion: Option<String>,
    },

    /// Job names around the cycle, the first repeated at the end; `a -> b` means a waits for b.
    #[error("dependency cycle: {} (\"x -> y\" means x waits for y){}; remove one of these dependencies", jobs.join(" -> "), file_note(file_links))]
    Cycle {
        jobs: Vec<String>,
        /// Links of the cycle that come from files rather than depends_on, explained.
        file_links: Vec<String>,
    },

    /// A memory or runtime string that does not parse.
    #[error("resource group {group:?}: {source}; fix it in resource_requirements")]
    Resource {
        group: String,
        source: ResourceError,
    },
}

fn parse_message(
    format: SpecFormat,
    message: &str,
    entry: Option<&str>,
    line: Option<u64>,
    column: Option<u64>,
) -> String {
    let mut out = format!("invalid {format} workflow spec");
    if let Some(at) = at(line, column) {
        out.push_str(&format!(" at {at}"));
    }
    if let Some(entry) = entry {
        out.push_str(&format!(" (in {entry})"));
    }
    out.push_str(&format!(
        ": {message}; correct the spec and submit it again"
    ));
    out
}

fn unknown_field_message(
    key: &str,
    section: Section,
    entry: Option<&str>,
    line: Option<u64>,
    column: Option<u64>,
    suggestion: Option<&str>,
) -> String {
    let place = match (section, entry) {
        (Section::Top, _) => "at the top level".to_string(),
        (Section::Rule, Some(entry)) => format!("in a rule of {entry}"),
        (_, Some(entry)) => format!("in {entry}"),
        (section, None) => format!("in {section}"),
    };
    let mut out = format!("unknown field {key:?} {place}");
    if let Some(at) = at(line, column) {
        out.push_str(&format!(" ({at})"));
    }
    out.push_str(&format!(
        ": expected one of {}",
        section.accepted().join(", ")
    ));
    if let Some(s) = suggestion {
        out.push_str(&format!("; did you mean {s:?}?"));
    }
    out
}

fn at(line: Option<u64>, column: Option<u64>) -> Option<String> {
    match (line, column) {
        (Some(l), Some(c)) => Some(format!("line {l}, column {c}")),
        (Some(l), None) => Some(format!("line {l}")),
        _ => None,
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

fn file_note(links: &[String]) -> String {
    if links.is_empty() {
        String::new()
    } else {
        format!(" [through files: {}]", links.join("; "))
    }
}

/// Read a spec file. The format comes from the extension (`.json`; `.yaml`/`.yml`); for any
/// other name, text starting with `{` is read as JSON and anything else as YAML.
pub fn parse_spec_file(path: &Path, submit_dir: &str) -> Result<ParsedSpec, SpecError> {
    let read_error = |source| SpecError::Read {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        ))
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match extension.as_deref() {
        Some("json") => SpecFormat::Json,
        Some("yaml" | "yml") => SpecFormat::Yaml,
        _ if text.trim_start().starts_with('{') => SpecFormat::Json,
        _ => SpecFormat::Yaml,
    };
    parse_spec_str(&text, format, submit_dir)
}

/// Parse and validate spec text. `submit_dir` becomes [`WorkflowDef::submit_dir`].
pub fn parse_spec_str(
    text: &str,
    format: SpecFormat,
    submit_dir: &str,
) -> Result<ParsedSpec, SpecError> {
    let raw: raw::RawSpec = match format {
        SpecFormat::Yaml => serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| locate::yaml_error(text, &e))?,
        SpecFormat::Json => {
            // serde reads a struct from an array too (fields by position), which turns `[...]`
            // into a baffling "expected a string" error; say what the top level must be.
            let first = text.trim_start().chars().next();
            if first.is_some_and(|c| c != '{') {
                return Err(SpecError::Parse {
                    format,
                    message: "the top level must be an object with at least \"name\" and \"jobs\""
                        .into(),
                    entry: None,
                    line: None,
                    column: None,
                });
            }
            serde_json::from_str(text).map_err(|e| locate::json_error(text, &e))?
        }
    };
    let (def, warnings) = build::build(raw, submit_dir)?;
    Ok(ParsedSpec {
        def,
        warnings,
        digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
    })
}

/// serde-saphyr's default budget stops at 250,000 nodes, about 25,000 jobs, and a spec that
/// lists its jobs one by one can be larger. Only the size limits are raised; the alias and
/// anchor limits that stop "billion laughs" documents keep their defaults.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}
