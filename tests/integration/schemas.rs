//! The JSON Schemas in `schemas/` against what the code really reads and writes: the export of
//! real runs, the labeled failure fixtures, the example specs, and the source files that define
//! the event kinds (src/event/mod.rs) and the spec's fields (src/spec/raw.rs).
//!
//! No JSON Schema crate is a dependency, so [`Validator`] is a small checker for the keywords
//! these schemas use. It panics on any keyword it does not implement, so no part of a schema can
//! pass by being skipped. Patterns are compiled with the `regex` crate; the schemas keep to the
//! syntax it shares with ECMA-262.

use crate::common::{stderr, Sandbox};
use regex::Regex;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

const SCHEMAS: &[&str] = &[
    "workflow-spec.schema.json",
    "event.schema.json",
    "fixture.schema.json",
];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let p = repo_path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// `v` with `key` of the object at JSON pointer `parent` set to `value`, or removed for `None`.
fn edited(v: &Value, parent: &str, key: &str, value: Option<Value>) -> Value {
    let mut v = v.clone();
    let obj = v
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent:?}"));
    match value {
        Some(x) => obj.insert(key.to_string(), x),
        None => obj.remove(key),
    };
    v
}

// ---------------------------------------------------------------------------------------------
// The checker

/// Keywords that only annotate: they never make an instance invalid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
];

/// Keywords [`Validator::check`] implements.
const ASSERTIONS: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "items",
    "minItems",
    "maxItems",
    "pattern",
    "minLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "oneOf",
    "$ref",
];

struct Validator {
    name: String,
    root: Value,
    regexes: RefCell<HashMap<String, Regex>>,
}

impl Validator {
    fn new(name: &str, root: Value) -> Validator {
        Validator {
            name: name.to_string(),
            root,
            regexes: RefCell::new(HashMap::new()),
        }
    }

    fn load(file: &str) -> Validator {
        let root = serde_json::from_str(&read(&format!("schemas/{file}")))
            .unwrap_or_else(|e| panic!("schemas/{file} is not JSON: {e}"));
        Validator::new(file, root)
    }

    /// Every way `v` breaks the schema, as `path: problem`; empty when it is valid.
    fn errors(&self, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(&self.root, v, "", &mut errs);
        errs
    }

    fn assert_valid(&self, v: &Value, what: &str) {
        let errs = self.errors(v);
        assert!(
            errs.is_empty(),
            "{what} does not match {}:\n  {}\n{v}",
            self.name,
            errs.join("\n  ")
        );
    }

    fn assert_invalid(&self, v: &Value, what: &str) {
        assert!(
            !self.errors(v).is_empty(),
            "{what} should not match {} but does: {v}",
            self.name
        );
    }

    fn resolve(&self, reference: &str) -> &Value {
        reference
            .strip_prefix("#/$defs/")
            .and_then(|name| self.root["$defs"].get(name))
            .unwrap_or_else(|| {
                panic!(
                    "{}: $ref {reference:?} is not a #/$defs/NAME that exists",
                    self.name
                )
            })
    }

    fn regex(&self, pattern: &str) -> Regex {
        let mut cache = self.regexes.borrow_mut();
        let re = cache.entry(pattern.to_string()).or_insert_with(|| {
            Regex::new(pattern).unwrap_or_else(|e| panic!("{}: bad pattern: {e}", self.name))
        });
        re.clone()
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let here = if at.is_empty() { "/" } else { at };
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return errs.push(format!("{here}: not allowed here")),
            Value::Object(m) => m,
            other => panic!("{}: {other} is not a schema", self.name),
        };
        let mut nested = Vec::new();
        let mut fail = |msg: String| errs.push(format!("{here}: {msg}"));
        for (key, arg) in schema {
            match key.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "type" => {
                    let types: Vec<&str> = match arg {
                        Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                        t => vec![t.as_str().unwrap()],
                    };
                    if !types.iter().any(|t| has_type(v, t)) {
                        fail(format!("expected {}, found {}", types.join(" or "), short(v)));
                    }
                }
                "enum" if !arg.as_array().unwrap().contains(v) => {
                    fail(format!("{} is not one of {arg}", short(v)))
                }
                "const" if arg != v => fail(format!("{} is not {arg}", short(v))),
                "enum" | "const" => {}
                "required" => {
                    for r in arg.as_array().unwrap() {
                        let r = r.as_str().unwrap();
                        if v.as_object().is_some_and(|o| !o.contains_key(r)) {
                            fail(format!("missing required key {r:?}"));
                        }
                    }
                }
                "properties" => {
                    for (k, sub) in arg.as_object().unwrap() {
                        if let Some(x) = v.get(k).filter(|_| v.is_object()) {
                            self.check(sub, x, &format!("{at}/{k}"), &mut nested);
                        }
                    }
                }
                "additionalProperties" => {
                    let declared = schema.get("properties").and_then(Value::as_object);
                    for (k, x) in v.as_object().into_iter().flatten() {
                        if declared.is_some_and(|d| d.contains_key(k)) {
                            continue;
                        }
                        if arg == &Value::Bool(false) {
                            fail(format!("unknown key {k:?}"));
                        } else {
                            self.check(arg, x, &format!("{at}/{k}"), &mut nested);
                        }
                    }
                }
                "propertyNames" => {
                    for k in v.as_object().into_iter().flat_map(|o| o.keys()) {
                        self.check(arg, &json!(k), &format!("{at}/{k} (key)"), &mut nested);
                    }
                }
                "minProperties" => {
                    if v.as_object().is_some_and(|o| o.len() < arg.as_u64().unwrap() as usize) {
                        fail(format!("fewer than {arg} keys"));
                    }
                }
                "items" => {
                    for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                        self.check(arg, x, &format!("{at}/{i}"), &mut nested);
                    }
                }
                "minItems" | "maxItems" => {
                    if let Some(a) = v.as_array() {
                        let n = arg.as_u64().unwrap() as usize;
                        if (key == "minItems" && a.len() < n) || (key == "maxItems" && a.len() > n) {
                            fail(format!("{} items breaks {key} {n}", a.len()));
                        }
                    }
                }
                "pattern" => {
                    if let Some(s) = v.as_str() {
                        if !self.regex(arg.as_str().unwrap()).is_match(s) {
                            fail(format!("{s:?} does not match the pattern {arg}"));
                        }
                    }
                }
                "minLength" => {
                    if let Some(s) = v.as_str() {
                        if (s.chars().count() as u64) < arg.as_u64().unwrap() {
                            fail(format!("{s:?} is shorter than {arg}"));
                        }
                    }
                }
                "minimum" | "maximum" | "exclusiveMinimum" => {
                    if let Some(ord) = compare_numbers(v, arg) {
                        let ok = match key.as_str() {
                            "minimum" => ord != Ordering::Less,
                            "maximum" => ord != Ordering::Greater,
                            _ => ord == Ordering::Greater,
                        };
                        if !ok {
                            fail(format!("{v} breaks {key} {arg}"));
                        }
                    }
                }
                "oneOf" => {
                    let results: Vec<Vec<String>> = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|branch| {
                            let mut e = Vec::new();
                            self.check(branch, v, at, &mut e);
                            e
                        })
                        .collect();
                    let passing = results.iter().filter(|e| e.is_empty()).count();
                    if passing != 1 {
                        let closest = results
                            .iter()
                            .filter(|e| !e.is_empty())
                            .min_by_key(|e| e.len())
                            .map(|e| e.join("; "))
                            .unwrap_or_default();
                        fail(format!(
                            "matches {passing} of the {} oneOf branches, not 1 (closest miss: {closest})",
                            results.len()
                        ));
                    }
                }
                "$ref" => self.check(self.resolve(arg.as_str().unwrap()), v, at, &mut nested),
                other => panic!(
                    "{}: keyword {other:?} at {here} is not implemented by this test's checker; implement it before using it",
                    self.name
                ),
            }
        }
        errs.extend(nested);
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        // JSON Schema counts 2.0 as an integer.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// Integers exactly (u64 values above 2^53 are not exact as f64), other numbers as f64;
/// `None` when `v` is not a number.
fn compare_numbers(v: &Value, bound: &Value) -> Option<Ordering> {
    let int = |x: &Value| x.as_i64().map(i128::from).or(x.as_u64().map(i128::from));
    match (int(v), int(bound)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => v.as_f64()?.partial_cmp(&bound.as_f64().unwrap()),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// Every subschema of `schema` with its path, the root included.
fn subschemas<'a>(schema: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((at.clone(), schema));
    let Value::Object(m) = schema else { return };
    for key in ["properties", "$defs"] {
        for (k, sub) in m.get(key).and_then(Value::as_object).into_iter().flatten() {
            subschemas(sub, format!("{at}/{key}/{k}"), out);
        }
    }
    for key in ["additionalProperties", "items", "propertyNames"] {
        if let Some(sub) = m.get(key) {
            subschemas(sub, format!("{at}/{key}"), out);
        }
    }
    let branches = m.get("oneOf").and_then(Value::as_array);
    for (i, sub) in branches.into_iter().flatten().enumerate() {
        subschemas(sub, format!("{at}/oneOf/{i}"), out);
    }
}

#[test]
fn are_draft_2020_12_with_a_description_on_every_property() {
    for file in SCHEMAS {
        let v = Validator::load(file);
        assert_eq!(
            v.root["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}: $schema"
        );
        assert!(v.root["description"].is_string(), "{file}: description");
        let mut all = Vec::new();
        subschemas(&v.root, String::new(), &mut all);
        for (at, s) in &all {
            let Value::Object(m) = s else { continue };
            for key in m.keys() {
                assert!(
                    ANNOTATIONS.contains(&key.as_str()) || ASSERTIONS.contains(&key.as_str()),
                    "{file}{at}: keyword {key:?} is not implemented by the checker in this test"
                );
            }
            if let Some(r) = m.get("$ref") {
                v.resolve(r.as_str().unwrap());
            }
            if let Some(p) = m.get("pattern") {
                v.regex(p.as_str().unwrap());
            }
            let props = m.get("properties").and_then(Value::as_object);
            for (name, prop) in props.into_iter().flatten() {
                // `false` forbids the key there: nothing to describe.
                if !prop.is_boolean() {
                    assert!(
                        prop["description"].as_str().unwrap_or("").trim().len() >= 8,
                        "{file}{at}/properties/{name}: needs a description for people and agents"
                    );
                }
            }
        }
    }
}

#[test]
fn checker_fails_what_it_should() {
    let v = Validator::new(
        "inline",
        json!({
            "type": "object",
            "required": ["a"],
            "additionalProperties": false,
            "properties": {
                "a": {"type": "integer", "minimum": 1, "maximum": 9},
                "b": {"type": ["string", "null"], "pattern": "^x", "minLength": 2},
                "c": {"type": "array", "items": {"$ref": "#/$defs/e"}, "minItems": 1, "maxItems": 2},
                "d": {"oneOf": [{"const": 1}, {"enum": [2, 3]}]},
                "m": {"type": "object", "propertyNames": {"pattern": "^k"}, "minProperties": 1,
                      "additionalProperties": {"type": "boolean"}},
                "f": {"type": "number", "exclusiveMinimum": 1},
                "u": {"type": "integer", "maximum": 18446744073709551614u64},
                "z": false
            },
            "$defs": {"e": {"enum": ["p", "q"]}}
        }),
    );
    let good = json!({"a": 3, "b": "xy", "c": ["p"], "d": 2, "m": {"k1": true}, "f": 1.5});
    v.assert_valid(&good, "a valid instance");
    v.assert_valid(&json!({"a": 9.0, "b": null}), "9.0 as an integer, and null");
    for (key, value) in [
        ("a", None),
        ("a", Some(json!(0))),
        ("a", Some(json!(10))),
        ("a", Some(json!(1.5))),
        ("a", Some(json!("1"))),
        ("extra", Some(json!(1))),
        ("b", Some(json!("yx"))),
        ("b", Some(json!("x"))),
        ("c", Some(json!([]))),
        ("c", Some(json!(["p", "p", "p"]))),
        ("c", Some(json!(["r"]))),
        ("d", Some(json!(4))),
        ("m", Some(json!({}))),
        ("m", Some(json!({"j": true}))),
        ("m", Some(json!({"k": 1}))),
        ("f", Some(json!(1))),
        ("u", Some(json!(u64::MAX))),
        ("z", Some(json!(null))),
    ] {
        let what = format!("{key} = {value:?}");
        v.assert_invalid(&edited(&good, "", key, value), &what);
    }
    v.assert_invalid(&json!([]), "an array");
}

// ---------------------------------------------------------------------------------------------
// event.schema.json against the export of real runs

fn expect_code(out: &Output, codes: &[i32], what: &str) {
    let code = out.status.code().unwrap_or(-1);
    assert!(
        codes.contains(&code),
        "{what}: exit {code}, expected one of {codes:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// A workflow whose handler retries with a recovery script, runs out of retries, meets an exit
/// code no rule lists, and cancels a downstream job: the events the demo does not produce.
const HANDLERS_SPEC: &str = r#"
name: handlers
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [3], recovery_script: "echo repairing", max_retries: 1}
jobs:
  - {name: flaky, command: "exit 3", failure_handler: h}
  - {name: other, command: "exit 4", failure_handler: h}
  - {name: after, command: "echo after", depends_on: [flaky]}
"#;

/// `torc-ledger ARGS` where ARGS is `words` split at spaces, then `last` (which may hold spaces).
fn run(sb: &Sandbox, words: &str, last: &[&str]) -> Output {
    let mut args: Vec<&str> = words.split_whitespace().collect();
    args.extend_from_slice(last);
    sb.run(&args)
}

/// `export` after: the demo run, a dry run, its apply (a retry with more memory and time), a
/// fail with an idempotency key, its undo, a reset-status, a second run, and a run of
/// [`HANDLERS_SPEC`]. Computed once for the tests that read it.
fn real_export() -> &'static [Value] {
    static LINES: OnceLock<Vec<Value>> = OnceLock::new();
    LINES.get_or_init(|| {
        let sb = Sandbox::new();
        sb.write("demo.yaml", &read("examples/demo.yaml"));
        sb.write("handlers.yaml", HANDLERS_SPEC);
        expect_code(&run(&sb, "run demo.yaml", &[]), &[4], "run demo.yaml");

        let dry = "-f json classify 1 --job 2 --action retry --memory 1g --runtime PT2M --dry-run";
        let out = run(
            &sb,
            &format!("{dry} --reason"),
            &["NCCL error on a flaky node"],
        );
        expect_code(&out, &[0], "dry run");
        let proposal: Value = serde_json::from_slice(&out.stdout).unwrap();
        let apply = format!("proposals apply {}", proposal["proposal_id"]);
        expect_code(&run(&sb, &apply, &[]), &[0], "proposals apply");

        let fail = "-f json classify 1 --job 3 --action fail --idempotency-key fail-validate-1";
        let out = run(&sb, &format!("{fail} --reason"), &["KeyError in our code"]);
        expect_code(&out, &[0], "classify fail");
        let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
        let undo = format!("undo {}", decision["seqs"][0]);
        expect_code(&run(&sb, &undo, &[]), &[0], "undo");

        let reset = "workflows reset-status 1 --failed-only";
        expect_code(&run(&sb, reset, &[]), &[0], "reset-status");
        expect_code(&run(&sb, "workflows run 1", &[]), &[0, 3, 4], "second run");
        expect_code(
            &run(&sb, "run handlers.yaml", &[]),
            &[3],
            "run handlers.yaml",
        );

        let out = run(&sb, "export", &[]);
        expect_code(&out, &[0], "export");
        let text = String::from_utf8(out.stdout).unwrap();
        let parse = |l: &str| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}"))
        };
        text.lines().map(parse).collect()
    })
}

#[test]
fn event_matches_every_exported_line() {
    let schema = Validator::load("event.schema.json");
    let lines = real_export();
    assert!(lines.len() > 50, "a short export: {} lines", lines.len());
    let mut prev_hash = "0".repeat(64);
    for (i, line) in lines.iter().enumerate() {
        schema.assert_valid(line, &format!("export line {}", i + 1));
        // What the schema's descriptions promise beyond structure.
        let body = line["body"].as_object().unwrap();
        assert_eq!(body.len(), 1, "body has one key: {line}");
        assert_eq!(
            line["kind"].as_str(),
            body.keys().next().map(String::as_str),
            "kind names the body's variant: {line}"
        );
        assert_eq!(line["seq"], json!(i + 1), "seq counts from 1 without gaps");
        assert_eq!(
            line["prev_hash"],
            json!(prev_hash),
            "hash chain at line {}",
            i + 1
        );
        prev_hash = line["hash"].as_str().unwrap().to_string();
    }
    let key = lines.iter().find(|l| {
        l["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("fail-validate-1#"))
    });
    assert!(
        key.is_some(),
        "the idempotency key is exported, tied to its command's digest"
    );

    // The event schema can fail too.
    let changed = lines
        .iter()
        .find(|l| l["kind"] == "status_changed")
        .unwrap();
    let body = "/body/status_changed";
    for (bad, what) in [
        (
            edited(changed, body, "note", Some(json!("x"))),
            "an unknown body field",
        ),
        (
            edited(changed, body, "to", Some(json!("done"))),
            "an unknown status",
        ),
        (
            edited(changed, body, "why", Some(json!("because"))),
            "an unknown why",
        ),
        (
            edited(changed, "", "kind", Some(json!("status_changes"))),
            "an unknown kind",
        ),
        (
            edited(changed, "", "hash", Some(json!("ABC"))),
            "a malformed hash",
        ),
        (
            edited(changed, "", "actor", Some(json!("nobody"))),
            "an unknown actor",
        ),
        (
            edited(changed, "", "cause", None),
            "a missing envelope field",
        ),
    ] {
        schema.assert_invalid(&bad, what);
    }
}

/// The `=> "..."` strings of `fn kind` in src/event/mod.rs: one per `Body` variant, since the
/// match is exhaustive.
fn kinds_in_source() -> BTreeSet<String> {
    let src = read("src/event/mod.rs");
    let start = src.find("fn kind(").expect("fn kind in src/event/mod.rs");
    let open = start + src[start..].find('{').unwrap();
    let mut depth = 0;
    let mut end = src.len();
    for (i, c) in src[open..].char_indices() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if depth == 0 {
            end = open + i;
            break;
        }
    }
    let arm = Regex::new(r#"=>\s*"([^"]+)""#).unwrap();
    let kinds: BTreeSet<String> = arm
        .captures_iter(&src[open..end])
        .map(|c| c[1].to_string())
        .collect();
    assert!(
        kinds.len() >= 10,
        "read too few kinds from fn kind: {kinds:?}"
    );
    kinds
}

#[test]
fn event_kinds_match_the_source_and_real_runs() {
    let schema = Validator::load("event.schema.json");
    let enumerated: BTreeSet<String> = schema.root["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let in_source = kinds_in_source();
    let produced: BTreeSet<String> = real_export()
        .iter()
        .map(|l| l["kind"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = in_source.union(&produced).cloned().collect();
    assert_eq!(
        enumerated, expected,
        "the `kind` enum of schemas/event.schema.json must list every Body variant (Body::kind in src/event/mod.rs) and every kind a run produces; add the variant's $defs entry and oneOf branch too"
    );

    // `body` has one branch per kind, each an object with that one key.
    let branches: BTreeSet<String> = schema.root["properties"]["body"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let def = schema.resolve(b["$ref"].as_str().expect("body branches are $refs"));
            let keys = def["required"].as_array().unwrap();
            assert_eq!(keys.len(), 1, "a body branch requires its one key: {def}");
            assert_eq!(def["additionalProperties"], false, "{def}");
            keys[0].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(branches, enumerated, "body oneOf branches vs kind enum");

    let unexercised: Vec<&String> = in_source.difference(&produced).collect();
    if !unexercised.is_empty() {
        eprintln!("note: no run in this test produces {unexercised:?}; their schema is unchecked");
    }
}

// ---------------------------------------------------------------------------------------------
// fixture.schema.json against the labeled failures

#[test]
fn fixture_matches_the_labeled_failures() {
    let schema = Validator::load("fixture.schema.json");
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/dev.jsonl");
    for path in [
        PathBuf::from(shared),
        repo_path("fixtures/failures/dev.jsonl"),
        repo_path("fixtures/failures/heldout.jsonl"),
    ] {
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("note: {} is absent here; not checked", path.display());
            continue;
        };
        let mut ids = BTreeSet::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = format!("{}:{}", path.display(), i + 1);
            let case: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
            schema.assert_valid(&case, &at);
            let id = case["id"].as_str().unwrap().to_string();
            assert!(
                ids.insert(id),
                "{at}: id {} is used twice in the file",
                case["id"]
            );
        }
        assert!(!ids.is_empty(), "{} has no cases", path.display());
        eprintln!("checked {} cases of {}", ids.len(), path.display());
    }

    // The schema can fail on the rules of the format.
    let base = json!({
        "id": "x1", "category": "oom", "action": "retry_with_resources",
        "adjust": {"memory_factor": 2}, "difficulty": "easy", "command": "python train.py",
        "return_code": 137, "stderr_tail": "Killed", "rationale": "the kernel OOM killer",
        "source": "constructed from known format"
    });
    schema.assert_valid(&base, "a retry_with_resources case");
    schema.assert_valid(
        &edited(
            &edited(&base, "", "adjust", None),
            "",
            "action",
            Some(json!("fail")),
        ),
        "a fail case",
    );
    for (key, value, what) in [
        ("action", Some(json!("retry")), "adjust with retry"),
        ("adjust", None, "retry_with_resources without adjust"),
        (
            "adjust",
            Some(json!({"cpu_factor": 2})),
            "an unknown adjust key",
        ),
        (
            "adjust",
            Some(json!({"memory_factor": 1})),
            "a factor that adds nothing",
        ),
        ("adjust", Some(json!({})), "an empty adjust"),
        ("action", Some(json!("skip")), "an unknown action"),
        (
            "difficulty",
            Some(json!("extreme")),
            "an unknown difficulty",
        ),
        ("source", None, "a missing source"),
        ("labels", Some(json!([])), "an unknown key"),
        ("return_code", Some(json!("137")), "a string return code"),
    ] {
        schema.assert_invalid(&edited(&base, "", key, value), what);
    }
}

// ---------------------------------------------------------------------------------------------
// workflow-spec.schema.json against specs, the parser's fields and the binary

fn yaml_to_json(rel: &str) -> Value {
    serde_saphyr::from_str::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn workflow_spec_matches_the_example_specs() {
    let schema = Validator::load("workflow-spec.schema.json");
    let demo = yaml_to_json("examples/demo.yaml");
    schema.assert_valid(&demo, "examples/demo.yaml");
    let diamond = serde_json::from_str(&read("tests/spec_files/diamond.json")).unwrap();
    schema.assert_valid(&diamond, "tests/spec_files/diamond.json");
    let diamond_yaml = yaml_to_json("tests/spec_files/diamond.yaml");
    schema.assert_valid(&diamond_yaml, "tests/spec_files/diamond.yaml");
    let mixed = "fixtures/workflows/mixed_failures.yaml";
    if repo_path(mixed).exists() {
        schema.assert_valid(&yaml_to_json(mixed), mixed);
    }
    // Invalid specs a schema can see (the cycle and unknown-dependency fixtures need the
    // parser: a schema cannot follow names).
    for file in ["invalid_typo_key.yaml", "invalid_bad_memory.yaml"] {
        let spec = yaml_to_json(&format!("tests/spec_files/{file}"));
        schema.assert_invalid(&spec, file);
    }
    for (parent, key, value, what) in [
        (
            "",
            "jbos",
            Some(demo["jobs"].clone()),
            "an unknown top-level key",
        ),
        (
            "/jobs/0",
            "comand",
            Some(json!("echo")),
            "an unknown job key",
        ),
        (
            "",
            "parameters",
            Some(json!({"i": "1:3"})),
            "a refused field",
        ),
        ("", "name", None, "a missing name"),
        ("", "jobs", Some(json!([])), "an empty jobs list"),
        ("", "env", Some(json!({"1BAD": "x"})), "an invalid env name"),
        (
            "/jobs/0",
            "priority",
            Some(json!(-1)),
            "a negative priority",
        ),
        (
            "/resource_requirements/0",
            "runtime",
            Some(json!("30 minutes")),
            "a bad runtime",
        ),
        (
            "/resource_requirements/0",
            "num_cpus",
            Some(json!(0)),
            "zero CPUs",
        ),
        (
            "/failure_handlers/0/rules/0",
            "exit_codes",
            Some(json!(75)),
            "a bare exit code",
        ),
    ] {
        schema.assert_invalid(&edited(&demo, parent, key, value), what);
    }
}

#[test]
fn workflow_spec_patterns_agree_with_the_parsers() {
    let schema = Validator::load("workflow-spec.schema.json");
    let rr = &schema.root["$defs"]["resource_requirements"]["properties"];
    let memory = schema.regex(rr["memory"]["pattern"].as_str().unwrap());
    let runtime = schema.regex(rr["runtime"]["pattern"].as_str().unwrap());
    for s in [
        "512m", "2G", "1024", "1t", "0", " 4g ", "", "g", "2gb", "-1m", "1.5g", "abc", "1 g", "4 ",
    ] {
        assert_eq!(
            memory.is_match(s),
            torc_ledger::model::parse_memory(s).is_ok(),
            "memory {s:?}: the schema's pattern and parse_memory disagree"
        );
    }
    for s in [
        "PT30M",
        "PT2H",
        "P1DT2H",
        "P2W",
        "P0DT1M",
        "PT1.5S",
        "pt30m",
        " PT1H ",
        "P1Y2M3W4DT5H6M7S",
        "P1.D",
        "PT.5S",
        "P0D",
        "",
        "P",
        "PT",
        "30M",
        "PT30",
        "PTM",
        "PT1H2X",
        "P1H",
        "PT1M1H",
        "P1DT",
        "P.D",
        "P1D1Y",
        "1h",
        "P1.",
        "PT1..5S",
        "P1W1W",
    ] {
        assert_eq!(
            runtime.is_match(s),
            torc_ledger::model::parse_duration(s).is_ok(),
            "runtime {s:?}: the schema's pattern and parse_duration disagree"
        );
    }
    // `{name}` is substituted before these are parsed, so the schema lets such values through.
    assert!(memory.is_match("{mem}") && runtime.is_match("{limit}"));
}

/// The fields of `struct NAME` in src/spec/raw.rs by their serde names, in three groups: those
/// with an effect (or accepted silently), those under "Understood, ignored with a warning" and
/// those under "Understood, refused".
#[derive(Debug, Default)]
struct RawFields {
    accepted: Vec<String>,
    warned: Vec<String>,
    refused: Vec<String>,
}

fn raw_fields(src: &str, name: &str) -> RawFields {
    let start = src
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in src/spec/raw.rs"));
    let field = Regex::new(r"^pub (\w+):").unwrap();
    let rename = Regex::new(r#"rename = "([^"]+)""#).unwrap();
    let mut out = RawFields::default();
    let mut group = 0;
    let mut renamed = None;
    for line in src[start..].lines().skip(1).map(str::trim) {
        if line == "}" {
            break;
        }
        if line.starts_with("//") && !line.starts_with("///") {
            if line.contains("Understood, ignored") {
                group = 1;
            } else if line.contains("Understood, refused") {
                group = 2;
            }
        } else if let Some(c) = rename.captures(line) {
            renamed = Some(c[1].to_string());
        } else if let Some(c) = field.captures(line) {
            let serde_name = renamed.take().unwrap_or_else(|| c[1].to_string());
            [&mut out.accepted, &mut out.warned, &mut out.refused][group].push(serde_name);
        }
    }
    assert!(!out.accepted.is_empty(), "no fields read for {name}");
    out
}

/// Each raw.rs struct and the spec schema's object for it ("" is the root).
const SECTIONS: &[(&str, &str)] = &[
    ("RawSpec", ""),
    ("RawJob", "job"),
    ("RawFile", "file"),
    ("RawResources", "resource_requirements"),
    ("RawHandler", "failure_handler"),
    ("RawRule", "failure_rule"),
];

fn section<'a>(schema: &'a Value, def: &str) -> &'a serde_json::Map<String, Value> {
    let obj = if def.is_empty() {
        schema
    } else {
        &schema["$defs"][def]
    };
    obj["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {def:?}"))
}

/// Accepted with a warning (`Some(true)`), silently (`Some(false)`), or not ignored (`None`),
/// as the property's description says.
fn ignored_with_warning(prop: &Value) -> Option<bool> {
    let d = prop["description"].as_str().unwrap_or("");
    let marked = d.to_lowercase().starts_with("accepted, ignored here");
    marked.then(|| !d.contains("no warning"))
}

#[test]
fn workflow_spec_lists_exactly_the_fields_the_parser_accepts() {
    let schema = Validator::load("workflow-spec.schema.json");
    let src = read("src/spec/raw.rs");
    for (strukt, def) in SECTIONS {
        let fields = raw_fields(&src, strukt);
        let obj = if def.is_empty() {
            &schema.root
        } else {
            &schema.root["$defs"][def]
        };
        assert_eq!(
            obj["additionalProperties"], false,
            "{strukt} denies unknown fields"
        );
        let props = section(&schema.root, def);
        let in_schema: BTreeSet<&String> = props.keys().collect();
        let accepted: BTreeSet<&String> = fields.accepted.iter().chain(&fields.warned).collect();
        assert_eq!(
            in_schema, accepted,
            "{strukt}: the schema's properties vs the fields raw.rs accepts (it refuses {:?})",
            fields.refused
        );
        for name in &fields.warned {
            assert_eq!(
                ignored_with_warning(&props[name]),
                Some(true),
                "{strukt}.{name} is accepted with a warning: its description starts with \"Accepted, ignored here\""
            );
        }
        for name in &fields.accepted {
            assert_ne!(
                ignored_with_warning(&props[name]),
                Some(true),
                "{strukt}.{name}: raw.rs does not warn about it; its description must not say so"
            );
        }
    }
}

/// A spec with every property the schema lists, valid for the schema and for the parser.
fn kitchen_sink() -> Value {
    json!({
        "name": "kitchen_sink",
        "description": "every field the spec schema lists",
        "user": "alice",
        "project": "schemas",
        "use_pending_failed": true,
        "env": {"SHARED": "1"},
        "variables": {"mem": "2g", "n": 4, "flag": true},
        "files": [{"name": "f1", "path": "f1.txt", "identifier": "f1-id", "st_mtime": 1.7e9}],
        "resource_requirements": [{
            "name": "big", "num_cpus": 2, "num_gpus": 0, "num_nodes": 1,
            "memory": "{mem}", "runtime": "P0DT1H30M"
        }],
        "failure_handlers": [{"name": "h", "rules": [{
            "exit_codes": [75], "match_all_exit_codes": false,
            "recovery_script": "echo repair", "max_retries": 2
        }]}],
        "jobs": [
            {"name": "prep", "command": "echo {n} > ${files.output.f1}"},
            {
                "name": "work", "command": "cat f1.txt", "depends_on": ["prep"],
                "depends_on_regexes": ["pre.*"], "resource_requirements": "big",
                "failure_handler": "h", "cancel_on_blocking_job_failure": false,
                "env": {"ONLY_HERE": "x"}, "priority": 2, "input_files": ["f1"],
                "output_files": [], "scheduler": "slurm_a", "labels": ["gpu"],
                "stdio": {"mode": "combined"}, "supports_termination": false
            }
        ],
        "slurm_schedulers": [{"name": "slurm_a", "account": "acct"}],
        "slurm_defaults": {"qos": "normal"},
        "resource_monitor": {"enabled": false},
        "execution_config": {"mode": "direct"},
        "compute_node_expiration_buffer_seconds": 60,
        "compute_node_wait_for_new_jobs_seconds": 0,
        "compute_node_ignore_workflow_completion": false,
        "compute_node_wait_for_healthy_database_minutes": 5,
        "enable_ro_crate": false,
        "metadata": {"owner": "team"},
        "access_groups": ["team"],
        "actions": [],
        "user_data": []
    })
}

#[test]
fn workflow_spec_fields_are_accepted_or_refused_by_the_binary_as_described() {
    let schema = Validator::load("workflow-spec.schema.json");
    let spec = kitchen_sink();
    schema.assert_valid(&spec, "the kitchen-sink spec");
    // It uses every property, so the binary below vouches for each of them.
    let samples: BTreeMap<&str, &str> = [
        ("", ""),
        ("job", "/jobs/1"),
        ("file", "/files/0"),
        ("resource_requirements", "/resource_requirements/0"),
        ("failure_handler", "/failure_handlers/0"),
        ("failure_rule", "/failure_handlers/0/rules/0"),
    ]
    .into_iter()
    .collect();
    for (def, at) in &samples {
        for name in section(&schema.root, def).keys() {
            let sample = spec.pointer(at).unwrap();
            assert!(
                sample.get(name).is_some(),
                "the kitchen-sink spec lacks {def}.{name}"
            );
        }
    }

    let sb = Sandbox::new();
    sb.write("sink.json", &spec.to_string());
    let out = sb.run(&["workflows", "create", "sink.json"]);
    expect_code(&out, &[0], "workflows create sink.json");
    let warnings = stderr(&out);
    for def in samples.keys() {
        for (name, prop) in section(&schema.root, def) {
            if ignored_with_warning(prop) == Some(true) {
                assert!(
                    warnings.contains(&format!("{name:?} is ignored")),
                    "no warning for {def}.{name}, which the schema says is ignored with one:\n{warnings}"
                );
            }
        }
    }

    // Fields raw.rs refuses are left out of the schema, and the binary refuses them.
    let src = read("src/spec/raw.rs");
    let mut n = 0;
    for (strukt, def) in SECTIONS {
        for field in raw_fields(&src, strukt).refused {
            let at = match *def {
                "" => "",
                "job" => "/jobs/1",
                "file" => "/files/0",
                other => panic!("{other}: refused fields were not expected here"),
            };
            let bad = edited(&spec, at, &field, Some(json!("x")));
            schema.assert_invalid(&bad, &format!("a spec with refused {strukt}.{field}"));
            n += 1;
            let file = format!("refused_{n}.json");
            sb.write(&file, &bad.to_string());
            let out = sb.run(&["workflows", "create", &file]);
            expect_code(&out, &[2], &format!("refused {strukt}.{field}"));
            let says = format!("{field:?}, which torc-ledger does not support");
            assert!(
                stderr(&out).contains(&says),
                "{strukt}.{field}: {}",
                stderr(&out)
            );
        }
    }
    assert!(n >= 10, "read only {n} refused fields from src/spec/raw.rs");
}
