//! One process: `bash -c COMMAND` in its own process group, stdio to files, waited with
//! `wait4` so that the kernel tells us its peak memory.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct ProcessSpec {
    pub command: String,
    pub cwd: PathBuf,
    /// Added to the inherited environment, in order (later wins).
    pub env: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Open the log files for appending instead of truncating them.
    pub append: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    /// Exit code, or 128+n when killed by signal n.
    pub return_code: i64,
    pub signal: Option<i32>,
    /// Peak resident memory of the process and the children it waited for, if the OS told.
    pub peak_memory_bytes: Option<u64>,
}

fn open_log(path: &PathBuf, append: bool) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
}

/// Start the process; returns its pid, which is also its process group id.
pub fn spawn(spec: &ProcessSpec) -> std::io::Result<i32> {
    let stdout = open_log(&spec.stdout, spec.append)?;
    let stderr = open_log(&spec.stderr, spec.append)?;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    // Own process group: Ctrl-C at the terminal reaches the runner, which stops jobs cleanly,
    // and a timeout kills the whole job (bash and whatever it started).
    cmd.process_group(0);
    let child = cmd.spawn()?;
    Ok(child.id() as i32)
}

/// Wait for the process to end (blocking).
pub fn wait(pid: i32) -> std::io::Result<ProcessExit> {
    let mut status: libc::c_int = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let (return_code, signal) = if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig as i64, Some(sig))
    } else {
        (libc::WEXITSTATUS(status) as i64, None)
    };
    // Linux reports ru_maxrss in KiB. The kernel charges a new process with its parent's peak
    // until it execs (vfork/fork share or copy our memory), so a value at or below our own peak
    // says nothing about the job: report it as unknown rather than a wrong number.
    let own_peak = {
        let mut me: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct we own.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut me) };
        me.ru_maxrss
    };
    let peak = (usage.ru_maxrss > own_peak).then(|| usage.ru_maxrss as u64 * 1024);
    Ok(ProcessExit {
        return_code,
        signal,
        peak_memory_bytes: peak,
    })
}

/// Send a signal to a whole process group.
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid addresses the group; errors (already gone) are fine.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}
