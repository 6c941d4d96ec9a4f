use super::*;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/spec_files")
        .join(name)
}

fn yaml(text: &str) -> Result<ParsedSpec, SpecError> {
    parse_spec_str(text, SpecFormat::Yaml, "/submit")
}

fn json(text: &str) -> Result<ParsedSpec, SpecError> {
    parse_spec_str(text, SpecFormat::Json, "/submit")
}

/// The error message of a YAML spec that must be refused.
fn yaml_err(text: &str) -> String {
    match yaml(text) {
        Ok(p) => panic!("spec should be refused, got {:?}", p.def),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "message {message:?} should contain {part:?}"
        );
    }
}

fn job<'a>(def: &'a WorkflowDef, name: &str) -> &'a crate::model::JobDef {
    def.jobs.iter().find(|j| j.name == name).unwrap()
}

fn dep_names(def: &WorkflowDef, name: &str) -> Vec<String> {
    job(def, name)
        .depends_on
        .iter()
        .map(|&i| def.jobs[i as usize].name.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The diamond

#[test]
fn diamond_yaml_and_json_give_the_same_def() {
    let y = parse_spec_file(&fixture("diamond.yaml"), "/work/dir").unwrap();
    let j = parse_spec_file(&fixture("diamond.json"), "/work/dir").unwrap();
    assert_eq!(y.def, j.def);
    assert!(y.warnings.is_empty() && j.warnings.is_empty());
    assert_ne!(y.digest, j.digest);
    assert_eq!(y.digest.len(), 64);
    let raw = std::fs::read(fixture("diamond.yaml")).unwrap();
    assert_eq!(y.digest, blake3::hash(&raw).to_hex().to_string());

    let def = &y.def;
    assert_eq!(def.name, "diamond_workflow");
    assert_eq!(def.submit_dir, "/work/dir");
    assert!(!def.use_pending_failed);
    assert_eq!(dep_names(def, "preprocess"), Vec::<String>::new());
    assert_eq!(dep_names(def, "work1"), ["preprocess"]);
    assert_eq!(dep_names(def, "work2"), ["preprocess"]);
    assert_eq!(dep_names(def, "postprocess"), ["work1", "work2"]);
    assert_eq!(job(def, "postprocess").depends_on, [1, 2]);
    assert_eq!(
        job(def, "work1").command,
        "cat f1.txt > f3.txt",
        "${{files.*}} references become paths"
    );
    let small = &def.resource_requirements[0];
    assert_eq!((small.memory_bytes, small.runtime_seconds), (1 << 30, 300));
    assert_eq!(def.resources_of(job(def, "work1")).name, "small");
}

#[test]
fn diamond_commands_run_under_bash() {
    let def = parse_spec_file(&fixture("diamond.yaml"), "/x").unwrap().def;
    let dir = tempfile::tempdir().unwrap();
    // Jobs are listed in an order that respects the dependencies.
    for j in &def.jobs {
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(&j.command)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "{} failed", j.name);
    }
    let out = std::fs::read_to_string(dir.path().join("f5.txt")).unwrap();
    assert_eq!(out, "data1\ndata2\n");
}

#[test]
fn format_is_sniffed_without_extension() {
    let dir = tempfile::tempdir().unwrap();
    let as_json = dir.path().join("spec");
    std::fs::copy(fixture("diamond.json"), &as_json).unwrap();
    let as_yaml = dir.path().join("spec.txt");
    std::fs::copy(fixture("diamond.yaml"), &as_yaml).unwrap();
    assert_eq!(
        parse_spec_file(&as_json, "/s").unwrap().def,
        parse_spec_file(&as_yaml, "/s").unwrap().def
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let err = parse_spec_file(Path::new("/nonexistent/wf.yaml"), "/s").unwrap_err();
    assert!(matches!(err, SpecError::Read { .. }));
    assert_contains(
        &err.to_string(),
        &["/nonexistent/wf.yaml", "check the path"],
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures of invalid specs

#[test]
fn typo_key_names_key_job_and_line() {
    let err = parse_spec_file(&fixture("invalid_typo_key.yaml"), "/s").unwrap_err();
    assert!(
        matches!(err, SpecError::UnknownField { line: Some(7), .. }),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[
            "unknown field \"comand\"",
            "in job \"second\"",
            "line 7, column 5",
            "expected one of name, command",
            "did you mean \"command\"?",
        ],
    );
}

#[test]
fn cycle_fixture_prints_the_cycle_in_order() {
    let err = parse_spec_file(&fixture("invalid_cycle.yaml"), "/s").unwrap_err();
    assert_contains(&err.to_string(), &["dependency cycle: a -> b -> c -> a"]);
}

#[test]
fn bad_memory_fixture_names_value_and_group() {
    let err = parse_spec_file(&fixture("invalid_bad_memory.yaml"), "/s").unwrap_err();
    assert_contains(&err.to_string(), &["\"big\"", "\"2gb\"", "memory"]);
}

#[test]
fn unknown_dep_fixture_names_job_dep_and_suggestion() {
    let err = parse_spec_file(&fixture("invalid_unknown_dep.yaml"), "/s").unwrap_err();
    assert_contains(
        &err.to_string(),
        &[
            "job \"work\"",
            "\"pre-process\"",
            "did you mean \"preprocess\"?",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Syntax and structure

#[test]
fn yaml_syntax_error_has_line() {
    let msg = yaml_err("name: w\njobs:\n  - name: a\n    command: x\n   bad: : :\n");
    assert_contains(
        &msg,
        &["invalid YAML workflow spec at line 5", "correct the spec"],
    );
    assert!(!msg.contains('\n'), "one paragraph: {msg}");
}

#[test]
fn json_syntax_error_has_line() {
    let err = json("{\"name\": \"w\",\n \"jobs\": [\n  {\"name\": \"a\" \"command\": \"x\"}]}")
        .unwrap_err();
    assert_contains(&err.to_string(), &["invalid JSON workflow spec at line 3"]);
}

#[test]
fn json_typo_key_names_job_and_line() {
    let text = "{\"name\": \"w\",\n \"jobs\": [\n  {\"name\": \"a\", \"command\": \"x\"},\n  {\"name\": \"b\",\n   \"comand\": \"x\"}]}";
    let msg = json(text).unwrap_err().to_string();
    assert_contains(
        &msg,
        &[
            "unknown field \"comand\" in job \"b\" (line 5",
            "did you mean \"command\"?",
        ],
    );
}

#[test]
fn unknown_keys_elsewhere() {
    let msg = yaml_err("name: w\njobs:\n  - {name: a, command: x}\njbos: []\n");
    assert_contains(
        &msg,
        &[
            "unknown field \"jbos\" at the top level (line 4, column 1)",
            "did you mean \"jobs\"?",
        ],
    );

    let msg = yaml_err("name: w\nresource_requirements:\n  - name: big\n    memroy: 2g\njobs:\n  - {name: a, command: x}\n");
    assert_contains(
        &msg,
        &[
            "\"memroy\" in resource group \"big\" (line 4",
            "did you mean \"memory\"?",
        ],
    );

    let msg = yaml_err("name: w\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_code: [1]\njobs:\n  - {name: a, command: x}\n");
    assert_contains(
        &msg,
        &[
            "\"exit_code\" in a rule of failure handler \"h\" (line 5",
            "did you mean \"exit_codes\"?",
        ],
    );

    let msg =
        yaml_err("name: w\nfiles:\n  - {name: f, pth: x}\njobs:\n  - {name: a, command: x}\n");
    assert_contains(&msg, &["\"pth\" in file \"f\" (line 3"]);
}

#[test]
fn wrong_type_names_the_job_and_line() {
    let msg =
        yaml_err("name: w\njobs:\n  - name: a\n    command: x\n  - name: b\n    command: [1]\n");
    assert_contains(&msg, &["line 6", "(in job \"b\")"]);
}

#[test]
fn missing_and_empty_required_fields() {
    assert_contains(
        &yaml_err("jobs:\n  - {name: a, command: x}\n"),
        &["missing field `name`"],
    );
    assert_contains(&yaml_err("name: w\n"), &["missing field `jobs`"]);
    assert_contains(&yaml_err("name: w\njobs: []\n"), &["no jobs"]);
    assert_contains(
        &yaml_err("name: ''\njobs:\n  - {name: a, command: x}\n"),
        &["workflow name is empty"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x}\n  - {name: b}\n"),
        &["missing field `command`", "job \"b\"", "line 4"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x}\n  - {name: ' ', command: x}\n"),
        &["job #2", "empty name"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: '  '}\n"),
        &["job \"a\" has an empty command"],
    );
}

#[test]
fn duplicates_are_refused() {
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x}\n  - {name: b, command: x}\n  - {name: a, command: y}\n"),
        &["job name \"a\" is used twice", "entries 1 and 3"],
    );
    assert_contains(
        &yaml_err("name: w\nresource_requirements:\n  - {name: r}\n  - {name: r}\njobs:\n  - {name: a, command: x}\n"),
        &["resource group name \"r\" is used twice"],
    );
    assert_contains(
        &yaml_err("name: w\nfailure_handlers:\n  - {name: h, rules: []}\n  - {name: h, rules: []}\njobs:\n  - {name: a, command: x}\n"),
        &["failure handler name \"h\" is used twice"],
    );
    assert_contains(
        &yaml_err("name: w\nfiles:\n  - {name: f, path: a}\n  - {name: f, path: b}\njobs:\n  - {name: a, command: x}\n"),
        &["file name \"f\" is used twice"],
    );
}

// ---------------------------------------------------------------------------------------------
// Dependencies

#[test]
fn self_dependency_is_refused() {
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, depends_on: [a]}\n"),
        &["job \"a\" depends on itself"],
    );
}

#[test]
fn regex_dependencies_match_whole_names() {
    let text = "name: w\njobs:\n  - {name: work_1, command: x}\n  - {name: work_2, command: x}\n  - {name: work_summary, command: x}\n  - {name: collect, command: x, depends_on_regexes: ['work_\\d+']}\n  - {name: all, command: x, depends_on_regexes: ['work.*', 'coll.*']}\n";
    let def = yaml(text).unwrap().def;
    assert_eq!(dep_names(&def, "collect"), ["work_1", "work_2"]);
    assert_eq!(
        dep_names(&def, "all"),
        ["work_1", "work_2", "work_summary", "collect"]
    );
}

#[test]
fn bad_regexes_are_refused() {
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, depends_on_regexes: ['(']}\n"),
        &["job \"a\"", "\"(\"", "is not a valid regex"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x}\n  - {name: b, command: x, depends_on_regexes: ['z.*']}\n"),
        &["job \"b\"", "\"z.*\"", "matches no other job"],
    );
    // Anchored: `a` does not match `ab`.
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: ab, command: x}\n  - {name: b, command: x, depends_on_regexes: ['a']}\n"),
        &["matches no other job"],
    );
}

#[test]
fn cycles_through_files_are_explained() {
    let text = "name: w\nfiles:\n  - {name: f, path: f.txt}\n  - {name: g, path: g.txt}\njobs:\n  - {name: a, command: 'cat ${files.input.g} > ${files.output.f}'}\n  - {name: b, command: 'cat ${files.input.f} > ${files.output.g}'}\n";
    assert_contains(
        &yaml_err(text),
        &[
            "dependency cycle: a -> b -> a",
            "\"a\" reads file \"g\", which \"b\" writes",
        ],
    );
}

#[test]
fn unknown_references_are_refused() {
    assert_contains(
        &yaml_err("name: w\nresource_requirements:\n  - {name: small}\njobs:\n  - {name: a, command: x, resource_requirements: smal}\n"),
        &["job \"a\"", "resource_requirements entry \"smal\"", "did you mean \"small\"?"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, failure_handler: retry}\n"),
        &["job \"a\"", "failure_handlers entry \"retry\""],
    );
}

// ---------------------------------------------------------------------------------------------
// Files

#[test]
fn file_edges_inputs_and_producers() {
    let text = "name: w\nfiles:\n  - {name: raw, path: /data/raw.csv}\n  - {name: out, path: out.txt}\njobs:\n  - {name: p1, command: 'cp ${files.input.raw} ${files.output.out}'}\n  - {name: p2, command: 'echo more >> out.txt', output_files: [out]}\n  - {name: use, command: 'wc -l out.txt', input_files: [out]}\n";
    let def = yaml(text).unwrap().def;
    // `raw` has no producer: it is an external input.
    assert!(job(&def, "p1").depends_on.is_empty());
    assert_eq!(job(&def, "p1").command, "cp /data/raw.csv out.txt");
    // Two producers of the same file: the reader waits for both.
    assert_eq!(dep_names(&def, "use"), ["p1", "p2"]);
}

#[test]
fn undeclared_files_are_refused() {
    assert_contains(
        &yaml_err("name: w\nfiles:\n  - {name: f1, path: a}\njobs:\n  - {name: a, command: 'cat ${files.input.f2}'}\n"),
        &["job \"a\"", "file \"f2\"", "${files.input.f2}", "did you mean \"f1\"?"],
    );
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, output_files: [out]}\n"),
        &["job \"a\"", "file \"out\"", "output_files"],
    );
    assert_contains(
        &yaml_err("name: w\nfiles:\n  - {name: f, path: a}\njobs:\n  - {name: a, command: 'cat ${files.in.f}'}\n"),
        &["malformed file reference ${files.in.f}"],
    );
}

// ---------------------------------------------------------------------------------------------
// Values

#[test]
fn bad_runtime_names_value_and_group() {
    assert_contains(
        &yaml_err("name: w\nresource_requirements:\n  - {name: slow, runtime: 2h}\njobs:\n  - {name: a, command: x}\n"),
        &["resource group \"slow\"", "\"2h\"", "runtime"],
    );
}

#[test]
fn numeric_limits() {
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, priority: -1}\n"),
        &["job \"a\" has priority -1", "0 or more"],
    );
    assert_contains(
        &yaml_err("name: w\nresource_requirements:\n  - {name: r, num_cpus: 0}\njobs:\n  - {name: a, command: x}\n"),
        &["resource group \"r\": num_cpus is 0"],
    );
    assert_contains(
        &yaml_err("name: w\nresource_requirements:\n  - {name: r, num_nodes: 0}\njobs:\n  - {name: a, command: x}\n"),
        &["resource group \"r\": num_nodes is 0"],
    );
    assert_contains(
        &yaml_err("name: w\nfailure_handlers:\n  - {name: h, rules: [{match_all_exit_codes: true, max_retries: -2}]}\njobs:\n  - {name: a, command: x}\n"),
        &["failure handler \"h\", rule #1: max_retries is -2"],
    );
}

#[test]
fn defaults() {
    let text = "name: w\nresource_requirements:\n  - {name: r}\nfailure_handlers:\n  - name: h\n    rules:\n      - {exit_codes: [75]}\n      - {match_all_exit_codes: true, max_retries: 1, recovery_script: ./fix.sh}\njobs:\n  - {name: a, command: x, resource_requirements: r, failure_handler: h}\n  - {name: b, command: x, cancel_on_blocking_job_failure: false, priority: 5}\n";
    let parsed = yaml(text).unwrap();
    let def = &parsed.def;
    let a = job(def, "a");
    let b = job(def, "b");
    assert!(
        a.cancel_on_blocking_job_failure,
        "Torc's effective default is true"
    );
    assert!(!b.cancel_on_blocking_job_failure);
    assert_eq!((a.priority, b.priority), (0, 5));
    let r = &def.resource_requirements[0];
    assert_eq!(
        (
            r.num_cpus,
            r.num_gpus,
            r.num_nodes,
            r.memory.as_str(),
            r.runtime.as_str()
        ),
        (1, 0, 1, "1m", "PT1H")
    );
    assert_eq!((r.memory_bytes, r.runtime_seconds), (1 << 20, 3600));
    let h = &def.failure_handlers[0];
    assert_eq!(h.rules[0].exit_codes, [75]);
    assert_eq!(h.rules[0].max_retries, 3);
    assert!(!h.rules[0].match_all_exit_codes);
    assert_eq!(h.rules[1].recovery_script.as_deref(), Some("./fix.sh"));
    assert_eq!(def.handler_of(a).unwrap().name, "h");
    assert!(def.handler_of(b).is_none());
    assert_eq!(def.resources_of(b).name, "default");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
}

#[test]
fn env_is_merged_and_checked() {
    let text = "name: w\nuse_pending_failed: true\nenv: {A: '1', B: '2'}\njobs:\n  - {name: a, command: x, env: {B: job, C: '3'}}\n";
    let def = yaml(text).unwrap().def;
    assert!(def.use_pending_failed);
    assert_eq!(def.env.get("B").map(String::as_str), Some("2"));
    let env: Vec<(&str, &str)> = job(&def, "a")
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "job"), ("C", "3")]);
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: x, env: {1BAD: x}}\n"),
        &["job \"a\"'s env", "\"1BAD\""],
    );
}

#[test]
fn variables_are_substituted_everywhere() {
    let text = r#"
name: sweep_{tag}
variables:
  tag: v2
  n: 4
  data: /scratch/data
env:
  ROOT: "{data}"
files:
  - {name: input, path: "{data}/in_{tag}.csv"}
resource_requirements:
  - {name: big, memory: "{n}g"}
jobs:
  - name: prep_{tag}
    command: "split -n {n} ${files.input.input} && echo ${HOME} {undefined}"
    resource_requirements: big
  - name: train
    command: train --threads {n}
    depends_on: ["prep_{tag}"]
    env: {RUN: "run_{tag}"}
"#;
    let def = yaml(text).unwrap().def;
    assert_eq!(def.name, "sweep_v2");
    assert_eq!(def.env["ROOT"], "/scratch/data");
    let prep = job(&def, "prep_v2");
    assert_eq!(
        prep.command,
        "split -n 4 /scratch/data/in_v2.csv && echo ${HOME} {undefined}"
    );
    assert_eq!(job(&def, "train").command, "train --threads 4");
    assert_eq!(dep_names(&def, "train"), ["prep_v2"]);
    assert_eq!(job(&def, "train").env["RUN"], "run_v2");
    assert_eq!(def.resource_requirements[0].memory_bytes, 4 << 30);
}

// ---------------------------------------------------------------------------------------------
// Torc fields without effect here

#[test]
fn ignored_torc_fields_warn() {
    let text = "name: w\nproject: p\nuser: me\nslurm_schedulers:\n  - {name: s, account: acct}\nresource_monitor: {enabled: true}\ncompute_node_wait_for_new_jobs_seconds: 60\nactions:\n  - {trigger_type: on_workflow_start, action_type: run_commands, commands: [mkdir -p out]}\njobs:\n  - {name: a, command: x, scheduler: s, supports_termination: true}\n";
    let parsed = yaml(text).unwrap();
    let all = parsed.warnings.join("\n");
    assert_eq!(parsed.warnings.len(), 6, "{all}");
    assert_contains(
        &all,
        &[
            "\"slurm_schedulers\" is ignored: every job runs on this machine",
            "\"resource_monitor\" is ignored",
            "\"compute_node_wait_for_new_jobs_seconds\" is ignored",
            "\"actions\" is ignored",
            "job \"a\": \"scheduler\" is ignored",
            "job \"a\": \"supports_termination\" is ignored",
        ],
    );
}

#[test]
fn torc_fields_that_would_change_the_jobs_are_refused() {
    let cases = [
        (
            "parameters: {i: '1:3'}\n",
            "",
            "the spec uses \"parameters\"",
            "expand the jobs before submitting",
        ),
        (
            "dynamic_jobs: {max_jobs: 10}\n",
            "",
            "the spec uses \"dynamic_jobs\"",
            "list every job",
        ),
        (
            "",
            ", parameters: {i: '1:3'}",
            "job \"a\" uses \"parameters\"",
            "expand the jobs",
        ),
        (
            "",
            ", invocation_script: wrap.sh",
            "job \"a\" uses \"invocation_script\"",
            "wrapper",
        ),
        (
            "",
            ", input_user_data: [d]",
            "job \"a\" uses \"input_user_data\"",
            "depends_on",
        ),
        (
            "",
            ", input_file_regexes: ['f.*']",
            "job \"a\" uses \"input_file_regexes\"",
            "input_files",
        ),
        (
            "",
            ", command2: y",
            "unknown field \"command2\" in job \"a\"",
            "line 3",
        ),
    ];
    for (top, job_extra, who, what) in cases {
        let text = format!("name: w\n{top}jobs:\n  - {{name: a, command: x{job_extra}}}\n");
        assert_contains(&yaml_err(&text), &[who, what]);
    }
    assert_contains(
        &yaml_err("name: w\njobs:\n  - {name: a, command: 'cat ${user_data.input.d}'}\n"),
        &["job \"a\" uses \"${user_data.input.d}\""],
    );
}

#[test]
fn user_data_without_users_only_warns() {
    let parsed = yaml(
        "name: w\nuser_data:\n  - {name: d, data: {x: 1}}\njobs:\n  - {name: a, command: x}\n",
    )
    .unwrap();
    assert_contains(&parsed.warnings.join("\n"), &["\"user_data\" is ignored"]);
}

#[test]
fn json_top_level_must_be_an_object() {
    assert_contains(
        &json("[1]").unwrap_err().to_string(),
        &["invalid JSON workflow spec", "top level must be an object"],
    );
}

#[test]
fn large_specs_fit_the_yaml_budget() {
    // 40,000 jobs in a chain: beyond serde-saphyr's default node budget, and deep enough that a
    // recursive cycle search would overflow the stack.
    let mut text = String::from("name: big\njobs:\n  - {name: j0, command: 'true'}\n");
    for i in 1..40_000 {
        text.push_str(&format!(
            "  - {{name: j{i}, command: 'true', depends_on: [j{}], resource_requirements: r}}\n",
            i - 1
        ));
    }
    text.push_str("resource_requirements:\n  - {name: r, num_cpus: 1}\n");
    let def = yaml(&text).unwrap().def;
    assert_eq!(def.jobs.len(), 40_000);
    assert_eq!(def.jobs[39_999].depends_on, [39_998]);
}
