//! `demo`: the bundled example, driven step by step through the real commands, each shown as
//! the command line that does it.

use super::{exit, Cli, CliError, CliResult};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bundled example workflow (also at examples/demo.yaml).
pub const DEMO_SPEC: &str = include_str!("../../examples/demo.yaml");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory to run the demo in (created; must be empty or absent).
    /// Default: a new directory under the system temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

struct Step<'a> {
    exe: PathBuf,
    dir: &'a Path,
}

impl Step<'_> {
    /// Show and run `torc-ledger ARGS` in the demo directory; returns (exit code, stdout).
    fn run(&self, args: &[&str], show: bool) -> Result<(i32, String), CliError> {
        if show {
            println!("\n$ torc-ledger {}", shell_words(args));
        }
        let out = Command::new(&self.exe)
            .args(args)
            .current_dir(self.dir)
            .env("TORC_LEDGER_DIR", self.dir.join("torc_ledger"))
            .output()
            .map_err(|e| CliError::internal(format!("cannot run {}: {e}", self.exe.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if show {
            print!("{stdout}");
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let code = out.status.code().unwrap_or(-1);
        if show && code != 0 {
            println!("(exit code {code})");
        }
        Ok((code, stdout))
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value, CliError> {
        let mut a = vec!["-f", "json"];
        a.extend_from_slice(args);
        let (code, out) = self.run(&a, true)?;
        if code != exit::OK {
            return Err(CliError::internal(format!(
                "demo step `torc-ledger {}` failed with exit code {code}",
                a.join(" ")
            )));
        }
        serde_json::from_str(&out).map_err(|e| CliError::internal(format!("demo: {e}")))
    }
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') || a.contains('"') || a.contains('|') {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn heading(s: &str) {
    println!("\n── {s} ──");
}

pub fn demo(_cli: &Cli, a: &DemoArgs) -> CliResult {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("torc-ledger-demo-{}", std::process::id())),
    };
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::bad_input(format!(
            "{} is not empty; give --dir a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::bad_input(format!("cannot create {}: {e}", dir.display())))?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    std::fs::write(dir.join("demo.yaml"), DEMO_SPEC)
        .map_err(|e| CliError::internal(format!("cannot write the demo spec: {e}")))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::internal(format!("cannot find this program: {e}")))?;
    let s = Step { exe, dir: &dir };

    println!("torc-ledger demo in {}", dir.display());
    println!("The workflow (demo.yaml): fetch → train → report, fetch → validate → publish.");
    println!("fetch fails once with exit 75 (a failure handler retries it); train fails once with");
    println!("an NCCL error no rule explains; validate has a bug. use_pending_failed: true.");

    heading("1. Run it: unexplained failures park in pending_failed, their dependents wait");
    s.run(&["run", "demo.yaml"], true)?;
    s.run(&["jobs", "list", "1"], true)?;

    heading("2. Look at a parked job: its attempts and the tail of its stderr");
    s.run(&["jobs", "get", "2"], true)?;

    heading("3. Dry run: a proposal is recorded, nothing changes");
    let p = s.json(&[
        "classify",
        "1",
        "--job",
        "2",
        "--action",
        "retry",
        "--reason",
        "NCCL network error on the IB fabric: transient",
        "--dry-run",
    ])?;
    let proposal = p["proposal_id"].as_u64().unwrap_or(0).to_string();
    s.run(&["proposals", "list", "1"], true)?;

    heading("4. Apply exactly that proposal");
    s.run(&["proposals", "apply", &proposal], true)?;

    heading("5. Fail the permanent one: its dependent is canceled by that decision");
    let f = s.json(&[
        "classify",
        "1",
        "--job",
        "3",
        "--action",
        "fail",
        "--reason",
        "KeyError in validate.py: a code bug, retrying will not help",
    ])?;
    let fail_seq = f["seqs"][0].as_u64().unwrap_or(0).to_string();
    s.run(&["jobs", "list", "1"], true)?;

    heading("6. Undo that decision: validate is parked again and publish waits again");
    s.run(&["undo", &fail_seq, "--dry-run"], true)?;
    let u = s.json(&["undo", &fail_seq])?;
    let undo_seq = u["seqs"][0].as_u64().unwrap_or(0).to_string();
    s.run(&["jobs", "list", "1"], true)?;

    heading("7. Undo the undo (redo): the fail stands again");
    s.run(&["undo", &undo_seq], true)?;

    heading("8. Run again: the retried job completes and its dependent runs");
    s.run(&["workflows", "run", "1"], true)?;

    heading("9. The ledger: who did what, and why");
    s.run(&["log", "-n", "25"], true)?;
    s.run(&["status", "1", "--at", &proposal], true)?;

    heading("10. Replay the whole log: same digest as the live state, hash chain intact");
    let (code, _) = s.run(&["replay", "--verify"], true)?;

    println!(
        "\nExplore it yourself (`cargo install --path .` puts torc-ledger on your PATH):\n  cd {}\n  torc-ledger log\n  torc-ledger show {fail_seq}\n  torc-ledger jobs get 2 -f json\n  torc-ledger mcp config --agent claude",
        dir.display()
    );
    Ok(if code == exit::OK { exit::OK } else { code })
}
