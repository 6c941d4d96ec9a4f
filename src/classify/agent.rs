//! `agent:<command>`: any program as a classifier. For each case the command runs under
//! `bash -c`, reads `{"prompt": ..., "case": {...}}` on stdin and prints its answer as JSON on
//! stdout (see [`super::parse_answer`]). A non-zero exit, an answer that is not the JSON asked
//! for, or no answer within the timeout is an error for that case; the command is killed (its
//! whole process group) when it runs out of time.
//!
//! The command also gets `TORC_LEDGER_MODEL` (from `--model`) and `TORC_LEDGER_CASE_ID`.

use super::{case_json, parse_answer, Classifier, ClassifyError, FailureCase, Options, Verdict};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct AgentClassifier {
    command: String,
    prompt: String,
    model: Option<String>,
    timeout: Duration,
}

impl AgentClassifier {
    pub fn new(command: &str, opts: &Options) -> AgentClassifier {
        AgentClassifier {
            command: command.trim().to_string(),
            prompt: opts.prompt.clone(),
            model: opts.model.clone(),
            timeout: opts.timeout,
        }
    }
}

impl Classifier for AgentClassifier {
    fn name(&self) -> String {
        format!("agent:{}", self.command)
    }

    /// The protocol's version; the prompt is identified by its digest, recorded apart.
    fn version(&self) -> String {
        "1".into()
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn classify(&self, case: &FailureCase) -> Result<Verdict, ClassifyError> {
        let input = serde_json::json!({"prompt": self.prompt, "case": case_json(case)}).to_string();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("TORC_LEDGER_CASE_ID", &case.id)
            .process_group(0);
        if let Some(m) = &self.model {
            cmd.env("TORC_LEDGER_MODEL", m);
        }
        let mut child = cmd.spawn().map_err(|e| {
            ClassifyError::Unavailable(format!("cannot start `bash -c {}`: {e}", self.command))
        })?;
        let pgid = child.id() as i32;
        // Feed stdin and drain stdout/stderr on threads, so a command that does not read its
        // input, or writes a lot, can never block us past the timeout.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        // Keep the first bytes up to a cap, but drain to the end: a chatty agent must never die
        // of a closed pipe. Results come back on channels, so a descendant that keeps a pipe
        // open cannot hold us past the deadline.
        type Shared = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;
        fn drain(
            mut r: impl Read + Send + 'static,
            cap: usize,
        ) -> (Shared, std::sync::mpsc::Receiver<()>) {
            let kept: Shared = Default::default();
            let (tx, rx) = std::sync::mpsc::channel();
            let buf = kept.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut k = buf.lock().unwrap();
                            let room = cap.saturating_sub(k.len());
                            k.extend_from_slice(&chunk[..n.min(room)]);
                        }
                    }
                }
                let _ = tx.send(());
            });
            (kept, rx)
        }
        // What was read by the time the pipe closed, or by `wait` (a lingering descendant may
        // hold the pipe open for ever).
        fn collect(d: &(Shared, std::sync::mpsc::Receiver<()>), wait: Duration) -> Vec<u8> {
            let _ = d.1.recv_timeout(wait);
            std::mem::take(&mut *d.0.lock().unwrap())
        }
        let reader = drain(child.stdout.take().expect("piped stdout"), 1 << 20);
        let err_reader = drain(child.stderr.take().expect("piped stderr"), 64 << 10);
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(ClassifyError::Unavailable(format!(
                        "waiting for the agent: {e}"
                    )))
                }
            }
        };
        let Some(status) = status else {
            // SAFETY: signalling the process group we created for this child.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            let _ = feeder.join();
            return Err(ClassifyError::Timeout(self.timeout));
        };
        // The command is done; anything it left behind in its group should not outlive it.
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        drop(feeder);
        // The agent has exited: what is still in the pipes arrives at once.
        let grace = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_millis(500));
        let stdout = collect(&reader, grace);
        let stderr = collect(&err_reader, Duration::from_millis(100));
        if !status.success() {
            let code = status
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "a signal".into());
            let why = String::from_utf8_lossy(&stderr);
            return Err(ClassifyError::Unavailable(format!(
                "the agent command ended with {code}{}",
                if why.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", super::clip(why.trim(), 300))
                }
            )));
        }
        parse_answer(&String::from_utf8_lossy(&stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Label;

    fn agent(cmd: &str, timeout_ms: u64) -> AgentClassifier {
        AgentClassifier::new(
            cmd,
            &Options {
                timeout: Duration::from_millis(timeout_ms),
                model: Some("m1".into()),
                ..Options::default()
            },
        )
    }

    fn case() -> FailureCase {
        FailureCase {
            id: "c1".into(),
            command: "python train.py".into(),
            return_code: 137,
            stderr_tail: "Killed".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_agent_reads_the_case_on_stdin_and_answers_json() {
        // The script answers from what it read: proof that prompt and case arrive on stdin.
        let script = r#"input=$(cat); case "$input" in *'"return_code":137'*'Killed'*) echo "{\"action\":\"retry_with_resources\",\"memory_factor\":2,\"reason\":\"model $TORC_LEDGER_MODEL case $TORC_LEDGER_CASE_ID\"}";; *) echo '{"action":"fail"}';; esac"#;
        let v = agent(script, 10_000).classify(&case()).unwrap();
        assert_eq!(v.action, Label::RetryWithResources);
        assert_eq!(v.reason, "model m1 case c1");
        let v = agent(
            r#"grep -q '"prompt":"You classify' && echo '{"action":"retry"}'"#,
            10_000,
        )
        .classify(&case())
        .unwrap();
        assert_eq!(v.action, Label::Retry);
    }

    #[test]
    fn a_chatty_agent_is_drained_and_a_lingering_child_does_not_hold_the_case() {
        // 200 KiB of log on stderr, then a valid answer: not killed by a full or closed pipe.
        let v = agent(
            r#"cat >/dev/null; for i in $(seq 1 4000); do echo "loading shard $i of the model weights......" >&2; done; echo '{"action":"fail"}'"#,
            20_000,
        )
        .classify(&case())
        .unwrap();
        assert_eq!(v.action, Label::Fail);
        // A descendant in its own session keeps stdout open long after the agent answered.
        let started = Instant::now();
        let v = agent(
            r#"cat >/dev/null; setsid sleep 30 & sleep 0.2; echo '{"action":"retry"}'"#,
            2_000,
        )
        .classify(&case())
        .unwrap();
        assert_eq!(v.action, Label::Retry);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn failures_of_the_agent_are_errors_for_the_case() {
        let e = agent("echo oops >&2; exit 3", 10_000)
            .classify(&case())
            .unwrap_err();
        assert!(
            matches!(&e, ClassifyError::Unavailable(m) if m.contains("exit code 3") && m.contains("oops")),
            "{e}"
        );
        let e = agent("echo not json", 10_000)
            .classify(&case())
            .unwrap_err();
        assert!(matches!(e, ClassifyError::BadAnswer(_)), "{e}");
        let e = agent("sleep 30; echo '{\"action\":\"retry\"}'", 300)
            .classify(&case())
            .unwrap_err();
        assert!(matches!(e, ClassifyError::Timeout(_)), "{e}");
    }
}
