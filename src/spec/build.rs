//! From the spec as written ([`RawSpec`]) to a validated, expanded [`WorkflowDef`].
//!
//! Order matters: variables are substituted first (Torc substitutes them into every string
//! before anything else looks at the spec), then unsupported fields are reported, then the
//! named things (files, resource groups, handlers, jobs) are checked, and dependencies are
//! resolved and checked for cycles last, once every name is known to be valid.

use super::raw::{RawFile, RawHandler, RawJob, RawResources, RawSpec, Scalar};
use super::SpecError;
use crate::model::{
    parse_duration, parse_memory, FailureHandler, FailureRule, JobDef, ResourceRequirements,
    WorkflowDef,
};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

pub(super) fn build(
    mut raw: RawSpec,
    submit_dir: &str,
) -> Result<(WorkflowDef, Vec<String>), SpecError> {
    if let Some(vars) = raw.variables.take() {
        substitute_variables(&mut raw, &vars);
    }
    let mut warnings = Vec::new();
    check_unsupported(&raw, &mut warnings)?;

    if raw.name.trim().is_empty() {
        return Err(invalid(
            "the workflow name is empty",
            "give the workflow a name (top-level `name`)",
        ));
    }
    if raw.jobs.is_empty() {
        return Err(invalid(
            "the spec has no jobs (`jobs` is empty)",
            "add at least one job with a name and a command",
        ));
    }
    let env = raw.env.take().unwrap_or_default();
    check_env_names(&env, "the top-level env")?;

    let files = check_files(raw.files.as_deref().unwrap_or_default())?;
    let resource_requirements =
        build_resources(raw.resource_requirements.as_deref().unwrap_or_default())?;
    let failure_handlers = build_handlers(
        raw.failure_handlers.as_deref().unwrap_or_default(),
        &mut warnings,
    )?;
    let jobs = build_jobs(
        &raw.jobs,
        &env,
        &files,
        &resource_requirements,
        &failure_handlers,
    )?;

    let def = WorkflowDef {
        name: raw.name,
        description: raw.description,
        use_pending_failed: raw.use_pending_failed.unwrap_or(false),
        env,
        submit_dir: submit_dir.to_string(),
        jobs,
        resource_requirements,
        failure_handlers,
    };
    Ok((def, warnings))
}

fn invalid(problem: impl Into<String>, fix: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        problem: problem.into(),
        fix: fix.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Variables

/// Replace `{name}` by the variable's value in every string of the spec (Torc's `variables`).
/// Keys (env names) are left alone. Unknown `{...}` stay as they are: commands are shell text
/// and braces there usually belong to the shell.
fn substitute_variables(raw: &mut RawSpec, vars: &BTreeMap<String, Scalar>) {
    let sub = |s: &mut String| *s = substitute(s, vars);
    let sub_all = |v: &mut Option<Vec<String>>| v.iter_mut().flatten().for_each(sub);
    let sub_env = |m: &mut Option<BTreeMap<String, String>>| {
        m.iter_mut().flat_map(|m| m.values_mut()).for_each(sub)
    };

    sub(&mut raw.name);
    raw.description.iter_mut().for_each(sub);
    sub_env(&mut raw.env);
    for file in raw.files.iter_mut().flatten() {
        sub(&mut file.name);
        sub(&mut file.path);
    }
    for rr in raw.resource_requirements.iter_mut().flatten() {
        sub(&mut rr.name);
        rr.memory.iter_mut().for_each(sub);
        rr.runtime.iter_mut().for_each(sub);
    }
    for handler in raw.failure_handlers.iter_mut().flatten() {
        sub(&mut handler.name);
        for rule in &mut handler.rules {
            rule.recovery_script.iter_mut().for_each(sub);
        }
    }
    for job in &mut raw.jobs {
        sub(&mut job.name);
        sub(&mut job.command);
        sub_all(&mut job.depends_on);
        sub_all(&mut job.depends_on_regexes);
        job.resource_requirements.iter_mut().for_each(sub);
        job.failure_handler.iter_mut().for_each(sub);
        sub_env(&mut job.env);
        sub_all(&mut job.input_files);
        sub_all(&mut job.output_files);
    }
}

/// One left-to-right pass, so a value that itself contains `{other}` is not expanded again.
fn substitute(s: &str, vars: &BTreeMap<String, Scalar>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| vars.get(&after[..close]).map(|value| (close, value)))
        {
            Some((close, value)) => {
                out.push_str(&value.0);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Fields Torc has and torc-ledger does not act on

/// Warn about fields whose absence of effect cannot change which jobs run or in what order;
/// refuse the ones that would.
fn check_unsupported(raw: &RawSpec, warnings: &mut Vec<String>) -> Result<(), SpecError> {
    let refuse = |entry: Option<String>, field: &str, reason: &str| SpecError::Unsupported {
        field: field.to_string(),
        entry,
        reason: reason.to_string(),
    };
    const PARAMETERS: &str =
        "parameters/parameter expansion is not supported yet; expand the jobs before submitting";

    for (present, field) in [
        (raw.parameters.is_some(), "parameters"),
        (raw.parameters_file.is_some(), "parameters_file"),
    ] {
        if present {
            return Err(refuse(None, field, PARAMETERS));
        }
    }
    if raw.dynamic_jobs.is_some() {
        return Err(refuse(
            None,
            "dynamic_jobs",
            "jobs cannot add jobs while the workflow runs here; list every job in the spec and remove dynamic_jobs",
        ));
    }

    const SLURM: &str = "every job runs on this machine, not through Slurm";
    const COMPUTE_NODES: &str = "it tunes Torc compute nodes, which torc-ledger does not use";
    const EXECUTION: &str = "jobs run directly on this machine with torc-ledger's own execution, output-capture and termination settings";
    const RO_CRATE: &str = "no RO-Crate provenance is written (the ledger keeps its own history)";
    const ACCESS: &str = "there is no server and no access control; whoever can read the ledger directory can read the workflow";
    const ACTIONS: &str = "no action runs (no run_commands, no schedule_nodes); put setup commands in a job that the others depend on";
    // Jobs that read or write user data are refused below, so when this warning is kept no job
    // uses it.
    const USER_DATA: &str = "no job uses it and it is not stored";
    let top_warnings = [
        (raw.slurm_schedulers.is_some(), "slurm_schedulers", SLURM),
        (raw.slurm_defaults.is_some(), "slurm_defaults", SLURM),
        (
            raw.resource_monitor.is_some(),
            "resource_monitor",
            "no CPU or memory sampling is done",
        ),
        (
            raw.execution_config.is_some(),
            "execution_config",
            EXECUTION,
        ),
        (
            raw.compute_node_expiration_buffer_seconds.is_some(),
            "compute_node_expiration_buffer_seconds",
            COMPUTE_NODES,
        ),
        (
            raw.compute_node_wait_for_new_jobs_seconds.is_some(),
            "compute_node_wait_for_new_jobs_seconds",
            COMPUTE_NODES,
        ),
        (
            raw.compute_node_ignore_workflow_completion.is_some(),
            "compute_node_ignore_workflow_completion",
            COMPUTE_NODES,
        ),
        (
            raw.compute_node_wait_for_healthy_database_minutes.is_some(),
            "compute_node_wait_for_healthy_database_minutes",
            COMPUTE_NODES,
        ),
        (raw.enable_ro_crate.is_some(), "enable_ro_crate", RO_CRATE),
        (raw.metadata.is_some(), "metadata", "it is not stored"),
        (raw.access_groups.is_some(), "access_groups", ACCESS),
        (raw.actions.is_some(), "actions", ACTIONS),
        (raw.user_data.is_some(), "user_data", USER_DATA),
    ];
    for (present, field, what_happens) in top_warnings {
        if present {
            warnings.push(format!("{field:?} is ignored: {what_happens}"));
        }
    }

    for (i, file) in raw.files.iter().flatten().enumerate() {
        let entry = label("file", &file.name, i);
        check_file_fields(file, &entry, warnings)
            .map_err(|(field, reason)| refuse(Some(entry.clone()), field, reason))?;
    }

    for (i, job) in raw.jobs.iter().enumerate() {
        let entry = || label("job", &job.name, i);
        if let Some((field, reason)) = refused_job_field(job) {
            return Err(refuse(Some(entry()), field, reason));
        }
        for (present, field, what_happens) in [
            (
                job.scheduler.is_some(),
                "scheduler",
                "the job runs on this machine, not through a Slurm scheduler",
            ),
            (
                job.labels.is_some(),
                "labels",
                "there is a single local runner, so there is nothing to route",
            ),
            (
                job.stdio.is_some(),
                "stdio",
                "output is captured the default way",
            ),
            (
                job.supports_termination.is_some(),
                "supports_termination",
                "it is deprecated and Torc 1.0.0 ignores it too",
            ),
        ] {
            if present {
                warnings.push(format!("{}: {field:?} is ignored: {what_happens}", entry()));
            }
        }
    }
    Ok(())
}

fn check_file_fields(
    file: &RawFile,
    entry: &str,
    warnings: &mut Vec<String>,
) -> Result<(), (&'static str, &'static str)> {
    for (present, field) in [
        (file.parameters.is_some(), "parameters"),
        (file.parameter_mode.is_some(), "parameter_mode"),
        (file.use_parameters.is_some(), "use_parameters"),
    ] {
        if present {
            return Err((field, "parameters/parameter expansion is not supported yet; expand the files before submitting"));
        }
    }
    for (present, field) in [
        (file.identifier.is_some(), "identifier"),
        (file.st_mtime.is_some(), "st_mtime"),
    ] {
        if present {
            warnings.push(format!(
                "{entry}: {field:?} is ignored: it only feeds RO-Crate provenance, which is not written"
            ));
        }
    }
    Ok(())
}

/// The first job field whose absence of effect would change what runs or when.
fn refused_job_field(job: &RawJob) -> Option<(&'static str, &'static str)> {
    const PARAMETERS: &str =
        "parameters/parameter expansion is not supported yet; expand the jobs before submitting";
    const USER_DATA: &str = "user-data dependencies are not supported; express the dependency with depends_on or with files";
    const FILE_REGEXES: &str =
        "file regexes are not supported; list the file names in input_files/output_files";
    const WRAPPER: &str = "ignoring it would run the command without its wrapper; put the wrapper in the command itself (e.g. `command: bash wrapper.sh real-command`)";
    [
        (
            job.invocation_script.is_some(),
            "invocation_script",
            WRAPPER,
        ),
        (job.input_user_data.is_some(), "input_user_data", USER_DATA),
        (
            job.output_user_data.is_some(),
            "output_user_data",
            USER_DATA,
        ),
        (
            job.input_user_data_regexes.is_some(),
            "input_user_data_regexes",
            USER_DATA,
        ),
        (
            job.output_user_data_regexes.is_some(),
            "output_user_data_regexes",
            USER_DATA,
        ),
        (
            job.input_file_regexes.is_some(),
            "input_file_regexes",
            FILE_REGEXES,
        ),
        (
            job.output_file_regexes.is_some(),
            "output_file_regexes",
            FILE_REGEXES,
        ),
        (job.parameters.is_some(), "parameters", PARAMETERS),
        (job.parameter_mode.is_some(), "parameter_mode", PARAMETERS),
        (job.use_parameters.is_some(), "use_parameters", PARAMETERS),
        (job.parameters_file.is_some(), "parameters_file", PARAMETERS),
        (
            job.use_parameters_file.is_some(),
            "use_parameters_file",
            PARAMETERS,
        ),
    ]
    .into_iter()
    .find(|(present, _, _)| *present)
    .map(|(_, field, reason)| (field, reason))
}

/// `job "name"`, or `job #3` when the name is blank (the error is then about the blank name).
fn label(noun: &str, name: &str, index: usize) -> String {
    if name.trim().is_empty() {
        format!("{noun} #{} (counting from 1)", index + 1)
    } else {
        format!("{noun} {name:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// Named things

/// First and second occurrence (1-based) of a name already seen.
fn check_unique<'a>(
    kind: &'static str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<&'a str, usize>, SpecError> {
    let mut seen = HashMap::new();
    for (i, name) in names.into_iter().enumerate() {
        if let Some(first) = seen.insert(name, i) {
            return Err(SpecError::Duplicate {
                kind,
                name: name.to_string(),
                first: first + 1,
                second: i + 1,
            });
        }
    }
    Ok(seen)
}

fn check_env_names(env: &BTreeMap<String, String>, whose: &str) -> Result<(), SpecError> {
    static NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
    match env.keys().find(|k| !NAME.is_match(k)) {
        Some(bad) => Err(invalid(
            format!("{whose} has an invalid variable name {bad:?}"),
            "environment variable names are letters, digits and underscores, not starting with a digit",
        )),
        None => Ok(()),
    }
}

/// File name → path.
fn check_files(files: &[RawFile]) -> Result<HashMap<String, String>, SpecError> {
    for (i, f) in files.iter().enumerate() {
        if f.name.trim().is_empty() {
            return Err(invalid(
                format!("file #{} (counting from 1) has an empty name", i + 1),
                "give every entry of files a name",
            ));
        }
        if f.path.trim().is_empty() {
            return Err(invalid(
                format!("file {:?} has an empty path", f.name),
                "give it the path the jobs read or write",
            ));
        }
    }
    check_unique("file", files.iter().map(|f| f.name.as_str()))?;
    Ok(files
        .iter()
        .map(|f| (f.name.clone(), f.path.clone()))
        .collect())
}

fn build_resources(groups: &[RawResources]) -> Result<Vec<ResourceRequirements>, SpecError> {
    for (i, r) in groups.iter().enumerate() {
        if r.name.trim().is_empty() {
            return Err(invalid(
                format!(
                    "resource_requirements entry #{} (counting from 1) has an empty name",
                    i + 1
                ),
                "give every resource group a name",
            ));
        }
    }
    check_unique("resource group", groups.iter().map(|r| r.name.as_str()))?;
    groups.iter().map(build_resource).collect()
}

fn build_resource(r: &RawResources) -> Result<ResourceRequirements, SpecError> {
    let count =
        |field: &str, value: Option<i64>, default: i64, min: i64| -> Result<u64, SpecError> {
            let v = value.unwrap_or(default);
            if v < min {
                return Err(invalid(
                    format!("resource group {:?}: {field} is {v}", r.name),
                    format!("{field} must be at least {min}; fix it in resource_requirements"),
                ));
            }
            Ok(v as u64)
        };
    let num_cpus = count("num_cpus", r.num_cpus, 1, 1)?;
    let num_gpus = count("num_gpus", r.num_gpus, 0, 0)?;
    let num_nodes = count("num_nodes", r.num_nodes, 1, 1)?;
    let memory = r.memory.clone().unwrap_or_else(|| "1m".to_string());
    let resource_error = |source| SpecError::Resource {
        group: r.name.clone(),
        source,
    };
    let memory_bytes = parse_memory(&memory).map_err(resource_error)?;
    let runtime = r.runtime.clone().unwrap_or_else(|| "PT1H".to_string());
    let runtime_seconds = parse_duration(&runtime).map_err(resource_error)?;
    Ok(ResourceRequirements {
        name: r.name.clone(),
        num_cpus,
        num_gpus,
        num_nodes,
        memory,
        memory_bytes,
        runtime,
        runtime_seconds,
    })
}

fn build_handlers(
    handlers: &[RawHandler],
    warnings: &mut Vec<String>,
) -> Result<Vec<FailureHandler>, SpecError> {
    for (i, h) in handlers.iter().enumerate() {
        if h.name.trim().is_empty() {
            return Err(invalid(
                format!(
                    "failure_handlers entry #{} (counting from 1) has an empty name",
                    i + 1
                ),
                "give every failure handler a name",
            ));
        }
    }
    check_unique("failure handler", handlers.iter().map(|h| h.name.as_str()))?;
    let mut out = Vec::with_capacity(handlers.len());
    for h in handlers {
        if h.rules.is_empty() {
            warnings.push(format!(
                "failure handler {:?} has no rules, so it never retries",
                h.name
            ));
        }
        let mut rules = Vec::with_capacity(h.rules.len());
        for (i, rule) in h.rules.iter().enumerate() {
            let max_retries = rule.max_retries.unwrap_or(3);
            let max_retries = u32::try_from(max_retries).map_err(|_| {
                invalid(
                    format!(
                        "failure handler {:?}, rule #{}: max_retries is {max_retries}",
                        h.name,
                        i + 1
                    ),
                    "max_retries must be a whole number from 0 up",
                )
            })?;
            let exit_codes = rule.exit_codes.clone().unwrap_or_default();
            let match_all_exit_codes = rule.match_all_exit_codes.unwrap_or(false);
            if exit_codes.is_empty() && !match_all_exit_codes {
                warnings.push(format!(
                    "failure handler {:?}, rule #{}: no exit_codes and match_all_exit_codes is false, so the rule never matches",
                    h.name,
                    i + 1
                ));
            }
            rules.push(FailureRule {
                exit_codes,
                match_all_exit_codes,
                recovery_script: rule.recovery_script.clone(),
                max_retries,
            });
        }
        out.push(FailureHandler {
            name: h.name.clone(),
            rules,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Jobs and dependencies

/// `${files.input.NAME}`, `${files.output.NAME}` and the user-data forms, plus malformed
/// variants (`${files.in.x}`), which are caught rather than left for the shell to trip on.
static WORKFLOW_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{(files|user_data)\.([^}]*)\}").unwrap());

/// What a job reads and writes, by file name.
#[derive(Default)]
struct FileUse {
    inputs: BTreeSet<String>,
    outputs: BTreeSet<String>,
}

fn build_jobs(
    jobs: &[RawJob],
    workflow_env: &BTreeMap<String, String>,
    files: &HashMap<String, String>,
    resources: &[ResourceRequirements],
    handlers: &[FailureHandler],
) -> Result<Vec<JobDef>, SpecError> {
    for (i, job) in jobs.iter().enumerate() {
        if job.name.trim().is_empty() {
            return Err(invalid(
                format!("job #{} (counting from 1) has an empty name", i + 1),
                "give every job a unique name",
            ));
        }
    }
    let index = check_unique("job", jobs.iter().map(|j| j.name.as_str()))?;

    let mut defs = Vec::with_capacity(jobs.len());
    let mut uses = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (def, file_use) = build_job(job, workflow_env, files, resources, handlers)?;
        defs.push(def);
        uses.push(file_use);
    }

    // Which jobs write each file: a reader waits for every one of them.
    let mut producers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, u) in uses.iter().enumerate() {
        for f in &u.outputs {
            producers.entry(f.as_str()).or_default().push(j);
        }
    }

    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); jobs.len()];
    // Edges that exist only because of a file, to explain them if they close a cycle.
    let mut via_file: HashMap<(usize, usize), String> = HashMap::new();
    for (j, job) in jobs.iter().enumerate() {
        for dep in job.depends_on.iter().flatten() {
            let Some(&d) = index.get(dep.as_str()) else {
                return Err(SpecError::UnknownDependency {
                    job: job.name.clone(),
                    dependency: dep.clone(),
                    suggestion: closest(dep, names.iter().copied().filter(|n| *n != job.name)),
                });
            };
            if d == j {
                return Err(SpecError::SelfDependency {
                    job: job.name.clone(),
                });
            }
            deps[j].insert(d);
        }
        for pattern in job.depends_on_regexes.iter().flatten() {
            let regex_error = |problem: String| SpecError::DependencyRegex {
                job: job.name.clone(),
                regex: pattern.clone(),
                problem,
            };
            let compile = |source: &str| {
                Regex::new(source).map_err(|e| {
                    regex_error(format!(
                        "is not a valid regex ({})",
                        one_line(&e.to_string())
                    ))
                })
            };
            // Compiled as written first, so a syntax error points into the user's text; then
            // anchored, because Torc matches whole names (`work` does not pick `work_summary`).
            compile(pattern)?;
            let anchored = compile(&format!("^(?:{pattern})$"))?;
            // A pattern such as `work.*` may also match the job that carries it; that match
            // is dropped rather than reported as a self-dependency.
            let matched: Vec<usize> = (0..jobs.len())
                .filter(|&d| d != j && anchored.is_match(names[d]))
                .collect();
            if matched.is_empty() {
                return Err(regex_error("matches no other job".to_string()));
            }
            deps[j].extend(matched);
        }
        for f in &uses[j].inputs {
            for &p in producers.get(f.as_str()).into_iter().flatten() {
                // A job that reads and writes the same file does not wait for itself.
                if p != j && deps[j].insert(p) {
                    via_file.insert((j, p), f.clone());
                }
            }
        }
    }

    let deps: Vec<Vec<usize>> = deps.into_iter().map(|d| d.into_iter().collect()).collect();
    if let Some(cycle) = find_cycle(&deps) {
        let notes: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| {
                via_file.get(&(w[0], w[1])).map(|f| {
                    format!(
                        "{:?} reads file {f:?}, which {:?} writes",
                        names[w[0]], names[w[1]]
                    )
                })
            })
            .collect();
        return Err(SpecError::Cycle {
            jobs: cycle.iter().map(|&j| names[j].to_string()).collect(),
            file_links: notes,
        });
    }

    for (def, d) in defs.iter_mut().zip(deps) {
        def.depends_on = d.into_iter().map(|i| i as u32).collect();
    }
    Ok(defs)
}

/// One job, without its dependencies (they need every job's file use first).
fn build_job(
    job: &RawJob,
    workflow_env: &BTreeMap<String, String>,
    files: &HashMap<String, String>,
    resources: &[ResourceRequirements],
    handlers: &[FailureHandler],
) -> Result<(JobDef, FileUse), SpecError> {
    let name = &job.name;
    if job.command.trim().is_empty() {
        return Err(invalid(
            format!("job {name:?} has an empty command"),
            "give it the shell command to run",
        ));
    }
    let priority = job.priority.unwrap_or(0);
    if priority < 0 {
        return Err(invalid(
            format!("job {name:?} has priority {priority}"),
            "priority must be 0 or more (higher runs first)",
        ));
    }
    if let Some(rr) = &job.resource_requirements {
        if !resources.iter().any(|r| &r.name == rr) {
            return Err(SpecError::UnknownReference {
                job: name.clone(),
                list: "resource_requirements",
                name: rr.clone(),
                suggestion: closest(rr, resources.iter().map(|r| r.name.as_str())),
            });
        }
    }
    if let Some(h) = &job.failure_handler {
        if !handlers.iter().any(|x| &x.name == h) {
            return Err(SpecError::UnknownReference {
                job: name.clone(),
                list: "failure_handlers",
                name: h.clone(),
                suggestion: closest(h, handlers.iter().map(|x| x.name.as_str())),
            });
        }
    }
    let job_env = job.env.clone().unwrap_or_default();
    check_env_names(&job_env, &format!("job {name:?}'s env"))?;
    // Torc stores the effective environment on the job: workflow env, job values winning.
    let mut env = workflow_env.clone();
    env.extend(job_env);

    let unknown_file = |file: &str, how: &str| SpecError::UnknownFile {
        job: name.clone(),
        file: file.to_string(),
        how: how.to_string(),
        suggestion: closest(file, files.keys().map(String::as_str)),
    };
    let mut file_use = FileUse::default();
    for (list, set, how) in [
        (
            &job.input_files,
            &mut file_use.inputs,
            "listed in input_files",
        ),
        (
            &job.output_files,
            &mut file_use.outputs,
            "listed in output_files",
        ),
    ] {
        for f in list.iter().flatten() {
            if !files.contains_key(f) {
                return Err(unknown_file(f, how));
            }
            set.insert(f.clone());
        }
    }
    for caps in WORKFLOW_REF.captures_iter(&job.command) {
        let whole = &caps[0];
        let (direction, file) = caps[2].split_once('.').unwrap_or((&caps[2], ""));
        if &caps[1] == "user_data" {
            return Err(SpecError::Unsupported {
                field: whole.to_string(),
                entry: Some(format!("job {name:?}")),
                reason: "user-data dependencies are not supported; express the dependency with depends_on or with files".into(),
            });
        }
        let set = match direction {
            "input" => &mut file_use.inputs,
            "output" => &mut file_use.outputs,
            _ => {
                return Err(invalid(
                    format!("job {name:?} has a malformed file reference {whole} in its command"),
                    "write ${files.input.NAME} or ${files.output.NAME}",
                ))
            }
        };
        if !files.contains_key(file) {
            return Err(unknown_file(file, &format!("as {whole} in the command")));
        }
        set.insert(file.to_string());
    }
    let command = WORKFLOW_REF
        .replace_all(&job.command, |caps: &regex::Captures| {
            let file = caps[2].split_once('.').map(|(_, f)| f).unwrap_or_default();
            files[file].clone()
        })
        .into_owned();

    let def = JobDef {
        name: name.clone(),
        command,
        depends_on: Vec::new(),
        resource_requirements: job.resource_requirements.clone(),
        failure_handler: job.failure_handler.clone(),
        // Torc's effective default is true (its reference table says false; the code wins).
        cancel_on_blocking_job_failure: job.cancel_on_blocking_job_failure.unwrap_or(true),
        env,
        priority,
    };
    Ok((def, file_use))
}

/// A cycle in "waits for" edges, as job indexes with the first repeated at the end. Iterative
/// depth-first search (long chains must not overflow the stack); deterministic because the
/// roots and the edges are visited in index order.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; deps.len()];
    for root in 0..deps.len() {
        if state[root] != NEW {
            continue;
        }
        state[root] = ON_PATH;
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match state[dep] {
                    NEW => {
                        state[dep] = ON_PATH;
                        path.push((dep, 0));
                    }
                    ON_PATH => {
                        let start = path.iter().position(|&(n, _)| n == dep)?;
                        let mut cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = DONE;
                path.pop();
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// The candidate a typo most likely meant: same name ignoring case, or within a small edit
/// distance (one edit per three characters, at least one).
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(word) {
                0
            } else {
                edit_distance(word, c)
            };
            (d, c)
        })
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c.to_string())
}

/// Edits (insert, delete, substitute, swap two neighbours) to turn `a` into `b`; a swap counts
/// once because `jbos` for `jobs` is a typical typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The regex crate's errors are drawings over several lines; keep the sentence.
fn one_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| message.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_only_defined_names() {
        let vars: BTreeMap<String, Scalar> = [
            ("n".to_string(), Scalar("4".into())),
            ("x".to_string(), Scalar("{n}".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            substitute("run {n} ${HOME} {x} {", &vars),
            "run 4 ${HOME} {n} {"
        );
    }

    #[test]
    fn closest_names() {
        assert_eq!(
            closest("comand", ["name", "command"]).as_deref(),
            Some("command")
        );
        assert_eq!(closest("Prep", ["prep", "post"]).as_deref(), Some("prep"));
        assert_eq!(closest("jbos", ["name", "jobs"]).as_deref(), Some("jobs"));
        assert_eq!(closest("zzz", ["prep"]), None);
    }

    #[test]
    fn cycle_in_order() {
        // 0 waits for 1, 1 for 2, 2 for 0; 3 is separate.
        let deps = vec![vec![1], vec![2], vec![0], vec![]];
        assert_eq!(find_cycle(&deps), Some(vec![0, 1, 2, 0]));
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
    }
}
