//! The built-in classifier: a table of what failures *mean*, ordered by precedence.
//!
//! The stderr tail is normalised (lowercase, whitespace folded, so case and line breaks never
//! matter) and every phrase of every rule is looked for in one pass (Aho-Corasick for the plain
//! phrases, one `RegexSet` for the `re:` ones). Then the rules are tried top to bottom and the
//! first that holds decides. The order is the knowledge: a failure log often holds several
//! errors, and which one is the *cause* is what decides.
//!
//! 1. Stalls and cut transfers first: a hung or truncated download explains the time limit or
//!    the "corrupt" archive that follows it.
//! 2. Transient-looking errors that the job inflicts on itself (thread or file limits it
//!    exceeds, a host name that is an unset variable, impossible allocations, leaks, a disk it
//!    filled itself): they recur on every retry.
//! 3. Corrupt inputs and impossible scheduler requests.
//! 4. Out of time, out of memory: a retry with more of that resource.
//! 5. Infrastructure that breaks a healthy job (node failure, preemption, GPU faults, a shared
//!    filesystem glitch, a lost MPI daemon, an unreachable license server, server-side database
//!    conflicts): these outrank the code error they cause further down the log.
//! 6. Permanent causes: the job's own code, its inputs, permissions, credentials, configuration,
//!    dependencies, images, a deliberate cancellation. These outrank the communication errors
//!    that other ranks report after one rank died on a bug.
//! 7. Transient communication: collectives, network, DNS hiccups, busy services.
//! 8. Weak evidence: exit codes alone, an uncaught exception of an unknown type.
//! 9. Nothing matched: **retry** (see [`UNKNOWN`]).
//!
//! Phrases are written for the meaning of a kind of failure (the vocabulary that Slurm, LSF,
//! Kubernetes, the kernel, CUDA/NCCL, MPI, Python, the JVM, R, Julia and common tools use for
//! it), never copied from one log.

use super::{normalise, Adjust, Classifier, ClassifyError, FailureCase, Label, Verdict};
use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};
use std::sync::OnceLock;

/// Bumped whenever the table changes meaning; recorded with every evaluation.
pub const VERSION: &str = "1";

/// What a case offers a rule's `check`.
pub struct Facts<'a> {
    pub case: &'a FailureCase,
    /// The normalised stderr tail.
    pub text: &'a str,
}

/// One rule: when it holds, it decides.
pub struct Rule {
    pub name: &'static str,
    /// The kind of failure (the corpus's category vocabulary).
    pub category: &'static str,
    pub label: Label,
    pub adjust: Option<Adjust>,
    /// What it means, for people (part of the verdict's reason).
    pub meaning: &'static str,
    /// Evidence: any of these phrases (normalised; `re:` marks a regex) ...
    pub any: &'static [&'static str],
    /// ... or any of these exit codes. With neither list, the rule needs only `check`.
    pub codes: &'static [i64],
    /// ... and, when not empty, one of these phrases as well ...
    pub with: &'static [&'static str],
    /// ... and none of these ...
    pub unless: &'static [&'static str],
    /// ... and this holds.
    pub check: Option<fn(&Facts) -> bool>,
    pub confidence: f64,
}

const R: Rule = Rule {
    name: "",
    category: "",
    label: Label::Fail,
    adjust: None,
    meaning: "",
    any: &[],
    codes: &[],
    with: &[],
    unless: &[],
    check: None,
    confidence: 0.9,
};

const MEMORY: Option<Adjust> = Some(Adjust {
    memory_factor: Some(2.0),
    runtime_factor: None,
});
const RUNTIME: Option<Adjust> = Some(Adjust {
    memory_factor: None,
    runtime_factor: Some(2.0),
});

/// What the classifier says when no rule holds: **retry**, with low confidence. An unknown
/// failure retried once costs one allocation ("wasted allocation") and, if it fails the same way
/// again, the ledger records that and precedent recognises it from then on; an unknown failure
/// failed loses the work and cancels its dependents ("lost work"), which is the costlier error.
pub const UNKNOWN: (Label, &str) = (
    Label::Retry,
    "no rule recognises this failure; an unknown failure is retried once (a needless retry costs one allocation, a wrong fail loses the work and its dependents)",
);

/// Out-of-memory vocabulary, shared by the OOM rule and the leak check.
const OOM_PHRASES: &[&str] = &[
    "oom-kill",
    "oom_kill",
    "oom killer",
    "oom-killer",
    "oomkilled",
    "out of memory",
    "out_of_memory",
    "outofmemory",
    "memoryerror",
    "bad_alloc",
    "cannot allocate memory",
    "cannot allocate vector of size",
    "unable to allocate",
    "failed to allocate memory",
    "memory allocation failed",
    "alloc_failed",
    "exceeded memory limit",
    "exceeded job memory limit",
    "exceeding memory limits",
    "memory limit exceeded",
    "memory usage limit",
    "term_memlimit",
    "java heap space",
    "gc overhead limit exceeded",
    "memory budget",
    "is killed by signal: killed",
    "h_vmem",
    "re:job killed: (p?mem|vmem) \\S+ exceeded limit",
    "re:exceeded (its |the )?memory",
    "re:killed .{0,40}for exceeding .{0,20}memory",
    "oom when allocating",
    "oom error",
    "oom detected",
];

/// The rules, in order of precedence. The first that holds decides.
pub static RULES: &[Rule] = &[
    // ---- 1. Stalls and cut transfers ---------------------------------------------------------
    Rule {
        name: "stalled_transfer",
        category: "network",
        label: Label::Retry,
        meaning: "the job had stopped making progress (a transfer at zero throughput) before it was stopped: a hung connection, not a job that needs more time",
        any: &[
            "re:\\(0 (bytes|b)/s\\).{0,200}\\(0 (bytes|b)/s\\)",
            "re:\\b0 (bytes|b)/s\\b.{0,200}\\b0 (bytes|b)/s\\b.{0,200}\\b0 (bytes|b)/s\\b",
            "transfer stalled",
            "download stalled",
            "connection stalled",
            "no data received for",
            "operation too slow",
        ],
        ..R
    },
    Rule {
        name: "transfer_cut",
        category: "network",
        label: Label::Retry,
        meaning: "a download or stream was cut off mid-transfer (early EOF, incomplete read); a retry fetches it again, so what broke downstream (a corrupt archive, a parse error) goes away",
        any: &[
            "incompleteread",
            "connection broken",
            "bytes of body are still expected",
            "early eof",
            "unexpected eof",
            "unexpected_eof",
            "eof occurred in violation of protocol",
            "unexpected disconnect",
            "tls packet with unexpected length",
            "premature end of",
            "transfer closed with",
            "partial file",
            "chunkedencodingerror",
            "response ended prematurely",
        ],
        unless: &["syntaxerror"],
        ..R
    },
    Rule {
        name: "server_error_response",
        category: "external-service",
        label: Label::Retry,
        meaning: "a remote service answered with a server error (5xx), a gateway error or a rate limit (429); the request is valid and succeeds once the service recovers",
        any: &[
            "re:(\\b(http|status|status_code|error|code)|->)[ :=]{0,3}(50[0-4]|429)\\b",
            "re:\\b(50[0-4]|429) (server error|client error|internal server error|bad gateway|service unavailable|gateway time-?out|too many requests)",
            "bad gateway",
            "service unavailable",
            "service temporarily unavailable",
            "gateway time-out",
            "gateway timeout",
            "too many requests",
            "toomanyrequests",
            "serviceunavailable",
            "internalservererror",
            "badgateway",
            "gatewaytimeout",
            "rate limit",
            "rate-limit",
            "ratelimit",
            "throttl",
            "slowdown",
            "slow down",
            "requestlimitexceeded",
            "server is overloaded",
            "internal server error",
        ],
        ..R
    },
    // ---- 2. Self-inflicted look-alikes (recur on every retry) --------------------------------
    Rule {
        name: "thread_limit",
        category: "config",
        meaning: "the job starts more threads or processes than the per-user limit (RLIMIT_NPROC) allows; \"resource temporarily unavailable\" here is self-inflicted and recurs until thread counts are set",
        any: &[
            "rlimit_nproc",
            "pthread_create failed",
            "can't start new thread",
            "cannot start new thread",
            "re:fork: (retry: )?resource temporarily unavailable",
            "unable to create new native thread",
            "thread creation failed",
        ],
        ..R
    },
    Rule {
        name: "file_descriptor_limit",
        category: "code-bug",
        meaning: "the job keeps more files open than its limit (EMFILE); it fails at the same point every time until the code closes files or the limit is raised",
        any: &["too many open files", "emfile", "errno 24"],
        ..R
    },
    Rule {
        name: "unset_host",
        category: "config",
        meaning: "the host to connect to is an unset variable (literally none/null/undefined) or a name that does not exist; DNS will not start resolving it",
        any: &[
            "re:host='?(none|null|nil|undefined|\\$\\{?[a-z_]+\\}?)'?[,:) ]",
            "re:failed to resolve '(none|null|nil|undefined)'",
            "re:could not resolve host:? (none|null|undefined)\\b",
            "name or service not known",
            "nodename nor servname provided",
            "no address associated with hostname",
            "eai_noname",
            "nxdomain",
        ],
        unless: &["temporary failure in name resolution", "eai_again"],
        ..R
    },
    Rule {
        name: "fixed_capacity",
        category: "config",
        meaning: "a compile-time or fixed on-chip capacity was exceeded (a \"permanent\" error); more host or device memory cannot help, the shapes or kernel must change",
        any: &[
            "compile permanent error",
            "permanent error",
            "memory space vmem",
            "vmem capacity",
            "exceeds the maximum shared memory",
            "too many resources requested for launch",
            "uses too much shared data",
        ],
        ..R
    },
    Rule {
        name: "impossible_allocation",
        category: "config",
        meaning: "the job asks for an amount of memory no node has (terabytes, or many times its limit); doubling memory cannot help, the parameters or algorithm must change",
        any: OOM_PHRASES,
        check: Some(impossible_allocation),
        ..R
    },
    Rule {
        name: "memory_leak",
        category: "code-bug",
        meaning: "memory grew steadily step after step until it ran out: a leak, so a bigger limit only delays the same failure",
        any: OOM_PHRASES,
        check: Some(memory_keeps_growing),
        ..R
    },
    Rule {
        name: "evicted_own_disk_use",
        category: "disk",
        meaning: "the pod was evicted for node disk pressure that it caused itself (its own use is most of the threshold); it will be evicted again until it writes to a volume",
        any: &["low on resource: ephemeral-storage", "ephemeral local storage usage exceeds"],
        check: Some(eviction_self_inflicted),
        ..R
    },
    Rule {
        name: "evicted_own_memory_use",
        category: "oom",
        label: Label::RetryWithResources,
        adjust: MEMORY,
        meaning: "the pod was evicted for node memory pressure that it caused itself; give it a larger memory request",
        any: &["low on resource: memory"],
        check: Some(eviction_self_inflicted),
        ..R
    },
    Rule {
        name: "evicted_by_neighbours",
        category: "scheduler",
        label: Label::Retry,
        meaning: "the pod was evicted because the node ran short of a resource that other workloads used up; it will run elsewhere",
        any: &["low on resource", "reason: evicted", "pod was evicted", "the node had condition"],
        ..R
    },
    Rule {
        name: "disk_full",
        category: "disk",
        meaning: "the filesystem or quota is full (ENOSPC, EDQUOT); retrying writes into the same full disk until space is freed or the output moves",
        any: &[
            "no space left on device",
            "disk quota exceeded",
            "quota exceeded",
            "enospc",
            "edquot",
            "errno 28",
            "not enough space on the disk",
            "kein platz mehr auf dem gerät",
            "デバイスに空き領域がありません",
        ],
        ..R
    },
    // ---- 3. Corrupt inputs, impossible requests --------------------------------------------------
    Rule {
        name: "corrupt_input",
        category: "data",
        meaning: "an input file is truncated or corrupt (missing EOF marker, bad archive directory, invalid block header); rereading it fails the same way until it is regenerated",
        any: &[
            "failed finding central directory",
            "not a zip file",
            "badzipfile",
            "truncated file",
            "file is truncated",
            "is probably truncated",
            "eof marker is absent",
            "no eof marker",
            "invalid bgzf header",
            "is corrupt",
            "file is corrupted",
            "corrupted file",
            "corrupt input",
            "corrupt archive",
            "corrupt gzip",
            "checksum mismatch",
            "crc check failed",
            "bad magic number",
            "invalid header",
            "unexpected end of file",
            "unexpected end of archive",
            "premature eof",
            "file signature not found",
            "invalid load key",
            "unpicklingerror",
        ],
        ..R
    },
    Rule {
        name: "impossible_request",
        category: "scheduler",
        meaning: "the scheduler rejected the request itself (an invalid account, partition or QOS, or a node configuration that does not exist); it is refused the same way until the request changes",
        any: &[
            "requested node configuration is not available",
            "memory specification can not be satisfied",
            "memory specification cannot be satisfied",
            "invalid account",
            "invalid partition",
            "invalid qos",
            "invalid generic resource",
            "invalid gres",
            "job violates accounting/qos policy",
            "qosmaxwalldurationperjoblimit",
            "more processors requested than permitted",
            "node count specification invalid",
            "requested time limit is invalid",
            "unable to allocate resources: invalid",
            "exceeds the maximum",
            "exceeds partition",
            "insufficient quota to match these resources",
            "not authorized to submit",
            "user not authorized",
        ],
        unless: &["temporarily unable", "resource temporarily unavailable"],
        ..R
    },
    // ---- 4. Out of time, out of memory ----------------------------------------------------------
    Rule {
        name: "time_limit",
        category: "timeout",
        label: Label::RetryWithResources,
        adjust: RUNTIME,
        meaning: "the job was stopped at its time limit while still working; give it more time",
        any: &[
            "due to time limit",
            "term_runlimit",
            "run time limit",
            "exceeded runlimit",
            "walltime exceeded",
            "exceeded walltime",
            "walltime limit",
            "job killed: walltime",
            "wall time limit",
            "time limit exceeded",
            "exceeded its time limit",
            "job exceeded time",
            "cputime limit exceeded",
            "cpu time limit exceeded",
            "deadlineexceeded",
            "activedeadlineseconds",
            "exceeded hard wallclock",
            "h_rt",
            "killed at its runtime limit",
            "re:\\b(state|status|reason)[=: ]{1,3}timeout\\b",
            "re:\\bsigxcpu\\b",
        ],
        codes: &[152],
        ..R
    },
    Rule {
        name: "killed_at_runtime_limit",
        category: "timeout",
        label: Label::RetryWithResources,
        adjust: RUNTIME,
        meaning: "the job was killed after running for (almost) its whole runtime limit; give it more time",
        check: Some(killed_at_runtime_limit),
        ..R
    },
    Rule {
        name: "out_of_memory",
        category: "oom",
        label: Label::RetryWithResources,
        adjust: MEMORY,
        meaning: "the job ran out of memory (OOM killer, allocation failure, memory limit); give it more",
        any: OOM_PHRASES,
        ..R
    },
    Rule {
        name: "peak_over_limit",
        category: "oom",
        label: Label::RetryWithResources,
        adjust: MEMORY,
        meaning: "its recorded peak memory is over its memory limit; give it more",
        check: Some(peak_over_limit),
        ..R
    },
    // ---- 5. Infrastructure that breaks a healthy job --------------------------------------------
    Rule {
        name: "node_lost",
        category: "hardware",
        label: Label::Retry,
        meaning: "a node of the allocation failed, was lost or was taken back (node failure, preemption, spot reclaim, shutdown); the work itself is innocent",
        any: &[
            "node failure",
            "node_fail",
            "due to preemption",
            "preempted",
            "preemption",
            "lost node",
            "node died",
            "nodediederror",
            "has been marked dead",
            "missed too many heartbeats",
            "*lost* node",
            "exited unrelated to the running tasks",
            "node shutdown",
            "node is shutting down",
            "node was shut down",
            "spot instance",
            "instance was reclaimed",
            "spot interruption",
            "instance-action",
            "host is down",
            "nodemanager is lost",
            "kill task failed",
            "node not responding",
            "re:node \\S+ (is )?not responding",
            "requeued",
            "lost executor .{0,80}heartbeat",
            "heartbeat timed out",
        ],
        ..R
    },
    Rule {
        name: "gpu_hardware",
        category: "hardware",
        label: Label::Retry,
        meaning: "the GPU or its link failed on this node (Xid, fallen off the bus, ECC/NVLink errors, a driver/library mismatch after an upgrade); on a healthy node the same job runs",
        any: &[
            "re:\\bxid\\b",
            "fallen off the bus",
            "gpu is lost",
            "uncorrectable ecc",
            "ecc error",
            "nvlink error",
            "driver/library version mismatch",
            "unable to determine the device handle",
            "failed to initialize nvml",
            "cuda error: unknown error",
            "cudaerrorunknown",
            "gpu has fallen",
            "unrecoverable error on the gpu",
            "hardware error",
            "machine check",
            "mce:",
            "cuda-capable device(s) is/are busy or unavailable",
            "all cuda-capable devices are busy or unavailable",
        ],
        ..R
    },
    Rule {
        name: "filesystem_glitch",
        category: "filesystem",
        label: Label::Retry,
        meaning: "a shared or network filesystem glitched (stale NFS handle, I/O error, evicted Lustre client, a FUSE mount that went away); the files are fine on a fresh attempt",
        any: &[
            "stale file handle",
            "stale nfs file handle",
            "estale",
            "errno 116",
            "input/output error",
            "errno 5]",
            "re:\\beio\\b",
            "transport endpoint is not connected",
            "transport endpoint shutdown",
            "errno 107",
            "errno 108",
            "re:nfs: server \\S+ not responding",
            "lustreerror",
            "ldlm_",
            "was evicted by",
            "ein-/ausgabefehler",
            "入力/出力エラー",
            "古いファイルハンドル",
        ],
        ..R
    },
    Rule {
        name: "mpi_runtime_lost",
        category: "mpi",
        label: Label::Retry,
        meaning: "the MPI runtime lost a daemon or a remote node mid-run (network or node failure); unlike MPI_ABORT, the application did not ask for it",
        any: &[
            "lost communication with a remote daemon",
            "orte has lost communication",
            "prte has lost communication",
            "a daemon died unexpectedly",
            "re:daemon on node .{0,40} failed",
            "orted was unable to",
            "remote daemon",
            "process manager lost connection",
            "pmix_server lost",
        ],
        ..R
    },
    Rule {
        name: "license_server_unreachable",
        category: "license",
        label: Label::Retry,
        meaning: "the license server could not be reached or had no free seat right now; the same license works once it is back",
        any: &[
            "cannot connect to license server",
            "license server machine is down",
            "license server is down",
            "license server not responding",
            "lost connection to license server",
            "licensed number of users already reached",
            "no available licenses",
            "all licenses are in use",
            "flexnet licensing error:-15",
            "licensing error:-15",
            "licensing error:-96",
            "licensing error:-97",
        ],
        ..R
    },
    Rule {
        name: "database_conflict",
        category: "external-service",
        label: Label::Retry,
        meaning: "a database resolved a conflict between concurrent writers or dropped the session (deadlock, lock wait timeout, locked file, server restart); the transaction succeeds when run again",
        any: &[
            "deadlock detected",
            "deadlockdetected",
            "deadlock found",
            "lock wait timeout",
            "try restarting transaction",
            "database is locked",
            "could not serialize access",
            "serialization failure",
            "server closed the connection unexpectedly",
            "terminating connection due to administrator command",
            "the database system is starting up",
            "the database system is shutting down",
            "the database system is in recovery mode",
            "too many connections",
            "too many clients already",
            "lost connection to mysql server",
            "mysql server has gone away",
            "connection pool exhausted",
        ],
        ..R
    },
    Rule {
        name: "scheduler_busy",
        category: "scheduler",
        label: Label::Retry,
        meaning: "the scheduler or service was temporarily unable to accept work (EAGAIN, socket timeouts to the controller); the request is valid and goes through later",
        any: &[
            "temporarily unable to accept job",
            "socket timed out on send/recv",
            "slurm_receive_msg",
            "unable to contact slurm controller",
            "slurmctld not responding",
            "slurm_load_jobs error",
            "batch job submission failed: resource temporarily unavailable",
            "try again later",
            "please try again",
            "temporarily unavailable",
        ],
        ..R
    },
    // ---- 6. Permanent causes ----------------------------------------------------------------------
    Rule {
        name: "certificate_rejected",
        category: "auth",
        meaning: "TLS certificate verification failed (untrusted CA, self-signed, expired, wrong host); a trust or configuration problem that a retry does not change",
        any: &[
            "certificate verify failed",
            "certificate_verify_failed",
            "certificate verification failed",
            "self-signed certificate",
            "self signed certificate",
            "unable to get local issuer certificate",
            "certificate has expired",
            "certificate is not valid for",
            "hostname mismatch",
            "x509: certificate",
            "ssl certificate problem",
        ],
        ..R
    },
    Rule {
        name: "credentials_rejected",
        category: "auth",
        meaning: "the service rejected the credentials or the permission (401/403, authentication failed, access denied); a retry sends the same credentials",
        any: &[
            "authentication failed",
            "authentication failure",
            "invalid username or password",
            "invalid credentials",
            "bad credentials",
            "permission denied (publickey",
            "unauthorized",
            "forbidden",
            "access denied",
            "accessdenied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "expiredtoken",
            "token has expired",
            "invalid token",
            "invalid api key",
            "incorrect api key",
            "not authorized",
            "re:\\((401|403)\\)",
            "re:\\b(http|status|error|code)[ :=]{0,3}(401|403)\\b",
            "re:\\b(401|403) (client error|forbidden|unauthorized)",
            "gated repo",
            "you must have access",
            "nocredentialserror",
            "unable to locate credentials",
            "host key verification failed",
        ],
        ..R
    },
    Rule {
        name: "license_rejected",
        category: "license",
        meaning: "the license itself does not allow this run (host id mismatch, expired, feature not licensed); it fails on every node until it is fixed",
        any: &[
            "hostid of your computer",
            "does not match the hostid",
            "license has expired",
            "feature has expired",
            "re:licen[sc]e (file )?(is )?expired",
            "license file does not support",
            "no such feature exists",
            "invalid license",
            "not licensed",
            "license checkout failed",
            "licensing error:-9,",
            "license manager error -9",
        ],
        ..R
    },
    Rule {
        name: "image_missing",
        category: "container",
        meaning: "the container image or tag does not exist or cannot be pulled with these rights; pulling again will not create it",
        any: &[
            "manifest unknown",
            "re:manifest for \\S+ not found",
            "pull access denied",
            "repository does not exist",
            "no such image",
            "image not found",
            "not found: manifest",
            "re:failed to pull image .{0,200}not ?found",
            "invalidimagename",
            "invalid reference format",
            "name unknown",
        ],
        ..R
    },
    Rule {
        name: "intentional_cancel",
        category: "scheduler",
        meaning: "someone cancelled the job on purpose (scancel/bkill with no scheduler reason); it should not be resubmitted automatically",
        any: &[
            "re:cancell?ed at \\S+ \\*\\*\\*",
            "cancelled by user",
            "canceled by user",
            "killed by user",
            "job was cancelled by",
            "job was canceled by",
            "term_owner",
            "term_admin",
            "scancel",
        ],
        ..R
    },
    Rule {
        name: "wrong_binary",
        category: "dependency",
        meaning: "the program cannot run on this software or hardware (illegal instruction, missing shared library, a driver older than the build needs, no kernel for this GPU); a rebuild or a different environment is needed",
        any: &[
            "illegal instruction",
            "ungültiger maschinenbefehl",
            "不正な命令",
            "cannot open shared object file",
            "undefined symbol",
            "re:version `glibc_[0-9.]+' not found",
            "driver on your system is too old",
            "driver version is insufficient",
            "cuda driver version is insufficient",
            "no kernel image is available",
            "not compatible with the current pytorch installation",
            "unsupported gpu architecture",
            "exec format error",
            "wrong elf class",
            "requires a newer",
        ],
        ..R
    },
    Rule {
        name: "missing_dependency",
        category: "dependency",
        meaning: "a package, module or pinned version is not available in this environment; installing it, not retrying, fixes it",
        any: &[
            "no module named",
            "modulenotfounderror",
            "importerror",
            "cannot import name",
            "there is no package called",
            "could not find a version that satisfies",
            "no matching distribution found",
            "resolutionimpossible",
            "conflicting dependencies",
            "package not found",
            "packagesnotfounderror",
            "unsatisfiableerror",
            "could not find package",
            "classnotfoundexception",
            "noclassdeffounderror",
            "nosuchmethoderror",
            "cannot find module",
            "command not found",
            "befehl nicht gefunden",
            "コマンドが見つかりません",
            "module: command not found",
            "re:package \\S+ is not installed",
        ],
        ..R
    },
    Rule {
        name: "code_error",
        category: "code-bug",
        meaning: "the job's own code raised an error that depends only on code and inputs (a type, key, index or shape error, a failed assertion, a null pointer, a crash); it fails the same way every time",
        any: &[
            "keyerror",
            "typeerror",
            "valueerror",
            "attributeerror",
            "indexerror",
            "nameerror",
            "syntaxerror",
            "indentationerror",
            "zerodivisionerror",
            "assertionerror",
            "notimplementederror",
            "unboundlocalerror",
            "recursionerror",
            "unicodedecodeerror",
            "unicodeencodeerror",
            "jsondecodeerror",
            "floatingpointerror",
            "overflowerror",
            "nullpointerexception",
            "illegalargumentexception",
            "illegalstateexception",
            "arrayindexoutofboundsexception",
            "indexoutofboundsexception",
            "numberformatexception",
            "classcastexception",
            "unsupportedoperationexception",
            "analysisexception",
            "unresolved_column",
            "cannot be resolved",
            "boundserror",
            "methoderror",
            "undefvarerror",
            "argumenterror",
            "domainerror",
            "dimensionmismatch",
            "panicked at",
            "std::out_of_range",
            "std::invalid_argument",
            "std::logic_error",
            "std::length_error",
            "out_of_range",
            "segmentation fault",
            "segfault",
            "sigsegv",
            "セグメンテーション違反",
            "speicherzugriffsfehler",
            "erreur de segmentation",
            "violación de segmento",
            "floating point exception",
            "gleitkomma-ausnahme",
            "double free",
            "free(): invalid",
            "corrupted size vs",
            "stack smashing detected",
            "shapes cannot be multiplied",
            "size mismatch",
            "shape mismatch",
            "shape '[",
            "must match the size of tensor",
            "dimension out of range",
            "index out of range",
            "index out of bounds",
            "out of bounds for axis",
            "device-side assert",
            "expected scalar type",
            "expected all tensors to be on the same device",
            "undefined columns selected",
            "object of type",
            "could not find function",
            "non-numeric argument",
            "subscript out of bounds",
            "re:object '[^']+' not found",
            "invalid literal for int",
            "could not convert string to float",
            "mpi_abort was invoked",
            "mpi_abort",
        ],
        ..R
    },
    Rule {
        name: "missing_input",
        category: "missing-input",
        meaning: "an input file or directory does not exist at the path given; the path or an earlier step must be fixed",
        any: &[
            "no such file or directory",
            "filenotfounderror",
            "filenotfoundexception",
            "errno 2]",
            "enoent",
            "does not exist",
            "cannot access",
            "could not open file",
            "cannot open file",
            "can't open file",
            "unable to open file",
            "file not found",
            "path not found",
            "nosuchkey",
            "the specified key does not exist",
            "404 not found",
            "404 client error",
            "re:\\b(http|status|error|code)[ :=]{0,3}404\\b",
            "datei oder verzeichnis nicht gefunden",
            "そのようなファイルやディレクトリはありません",
            "aucun fichier ou dossier de ce type",
        ],
        ..R
    },
    Rule {
        name: "permission_denied",
        category: "permission",
        meaning: "the job is not allowed to read, write or run something (EACCES/EPERM, read-only filesystem); a retry runs with the same rights",
        any: &[
            "permission denied",
            "eacces",
            "errno 13",
            "operation not permitted",
            "eperm",
            "read-only file system",
            "keine berechtigung",
            "vorgang nicht zulässig",
            "許可がありません",
            "権限がありません",
            "読み込み専用ファイルシステム",
            "permission non accordée",
            "accès refusé",
            "permiso denegado",
        ],
        ..R
    },
    Rule {
        name: "bad_configuration",
        category: "config",
        meaning: "the job's configuration or arguments are invalid (a malformed config file, unknown or missing arguments, failed parameter validation); it fails identically until they are fixed",
        any: &[
            "scannererror",
            "parsererror",
            "yaml.scanner",
            "yaml.parser",
            "tomldecodeerror",
            "configparser",
            "invalid configuration",
            "configuration error",
            "config error",
            "invalid config",
            "unrecognized arguments",
            "unrecognized option",
            "unknown option",
            "invalid option",
            "invalid choice",
            "error: argument",
            "the following arguments are required",
            "missing required",
            "required parameter",
            "validation of pipeline parameters failed",
            "invalid input values",
            "validationerror",
            "is not a valid",
            "invalid value for",
            "bad substitution",
            "unbound variable",
            "400 client error",
            "400 bad request",
        ],
        ..R
    },
    // ---- 7. Transient communication ---------------------------------------------------------------
    Rule {
        name: "collective_communication",
        category: "gpu-comm",
        label: Label::Retry,
        meaning: "a collective or its transport failed between ranks (NCCL/gloo errors, InfiniBand completion errors, a watchdog timeout after healthy progress, a peer that vanished) and no rank shows a bug of its own",
        any: &[
            "nccl error",
            "ncclremoteerror",
            "ncclsystemerror",
            "ncclinternalerror",
            "nccl warn net/ib",
            "net/ib",
            "ib_plugin",
            "transport retry counter exceeded",
            "retry counter exceeded",
            "ibv_poll_cq",
            "work completion status",
            "watchdog caught collective operation timeout",
            "collective operation timeout",
            "distbackenderror",
            "connection closed by peer",
            "gloo/transport",
            "broken pipe",
            "socket timeout",
            "rendezvous",
            "ucx error",
            "psm2",
            "libfabric",
            "hfi1",
        ],
        ..R
    },
    Rule {
        name: "network",
        category: "network",
        label: Label::Retry,
        meaning: "a remote host could not be reached for now (connection refused or timed out, DNS temporarily failing, network unreachable); the job and its inputs are fine",
        any: &[
            "temporary failure in name resolution",
            "eai_again",
            "try again (errno -3)",
            "re:\\berrno -3\\b",
            "could not resolve host",
            "name resolution",
            "connection refused",
            "connectionrefusederror",
            "errno 111",
            "econnrefused",
            "connection timed out",
            "connect timed out",
            "connecttimeout",
            "timed out while connecting",
            "read timed out",
            "readtimeout",
            "read timeout",
            "timeout exceeded while awaiting headers",
            "request canceled while waiting for connection",
            "i/o timeout",
            "tls handshake timeout",
            "network is unreachable",
            "no route to host",
            "host is unreachable",
            "connection aborted",
            "connectionreseterror",
            "connection reset",
            "econnreset",
            "errno 104",
            "errno 110",
            "etimedout",
            "recv failure",
            "send failure",
            "connectionerror",
            "lost connection",
            "connection reset by peer",
            "remote end closed connection",
            "remotedisconnected",
            "ssl: unexpected",
            "sslerror",
            "max retries exceeded",
            "timeouterror",
            "timed out",
            "verbindungsaufbau abgelehnt",
            "die wartezeit für die verbindung ist abgelaufen",
            "接続を拒否されました",
            "接続がタイムアウトしました",
        ],
        // A refused connection to this very node means the service the job needs is not running
        // here at all (see `local_service_missing`).
        unless: &["re:connection refused.{0,80}(localhost|127\\.0\\.0\\.1|\\[::1\\])|(localhost|127\\.0\\.0\\.1|\\[::1\\])[^ ]{0,10}.{0,80}connection refused"],
        ..R
    },
    Rule {
        name: "local_service_missing",
        category: "config",
        meaning: "the connection was refused by this very node (localhost): the service the job expects is not running where it runs, which a retry does not change",
        any: &["connection refused"],
        ..R
    },
    // ---- 8. Weak evidence -------------------------------------------------------------------------
    Rule {
        name: "sigkill_early",
        category: "oom",
        label: Label::RetryWithResources,
        adjust: MEMORY,
        meaning: "killed by SIGKILL (exit 137) well before its runtime limit and with nothing else said: most often the OOM killer",
        codes: &[137],
        check: Some(not_near_runtime_limit),
        confidence: 0.6,
        ..R
    },
    Rule {
        name: "coreutils_timeout",
        category: "timeout",
        label: Label::RetryWithResources,
        adjust: RUNTIME,
        meaning: "exit 124 is `timeout`'s own code: the command ran out of the time it was given",
        codes: &[124],
        confidence: 0.6,
        ..R
    },
    Rule {
        name: "crash_signal",
        category: "code-bug",
        meaning: "the program died of its own crash signal (SIGSEGV, SIGABRT, SIGFPE, SIGILL, SIGBUS) or could not be run (126/127); deterministic for the same code and input",
        codes: &[126, 127, 132, 134, 135, 136, 139],
        confidence: 0.6,
        ..R
    },
    Rule {
        name: "uncaught_exception",
        category: "code-bug",
        meaning: "the job ended on an uncaught exception of a type no rule knows as transient; an error in code or inputs is the likelier cause",
        any: &[
            "traceback (most recent call last)",
            "exception in thread \"main\"",
            "stacktrace:",
            "error: loaderror",
            "execution halted",
            "fatal error:",
            "uncaught exception",
            "unhandled exception",
        ],
        confidence: 0.55,
        ..R
    },
];

// ---- checks ---------------------------------------------------------------------------------------

fn unit_bytes(unit: &str) -> Option<f64> {
    let k = 1024f64;
    Some(match unit {
        "b" | "bytes" => 1.0,
        "k" | "kb" | "kib" | "ki" => k,
        "m" | "mb" | "mib" | "mi" => k * k,
        "g" | "gb" | "gib" | "gi" => k * k * k,
        "t" | "tb" | "tib" | "ti" => k * k * k * k,
        "p" | "pb" | "pib" | "pi" => k * k * k * k * k,
        "e" | "eb" | "eib" | "ei" => k * k * k * k * k * k,
        _ => return None,
    })
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid built-in pattern"))
}

/// An allocation no node can give: ≥ 8 TiB, or more than 16 times the job's memory limit.
fn impossible_allocation(f: &Facts) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = regex(
        &RE,
        r"(?:allocate|allocating|vector of size|alloc of)\s+([0-9]+(?:\.[0-9]*)?)\s*(bytes|[kmgtpe]i?b?)\b",
    );
    re.captures_iter(f.text).any(|c| {
        let n: f64 = c[1].parse().unwrap_or(0.0);
        let Some(u) = unit_bytes(&c[2]) else {
            return false;
        };
        let bytes = n * u;
        bytes >= 8.0 * 1024f64.powi(4)
            || f.case
                .memory_limit_bytes
                .is_some_and(|lim| lim > 0 && bytes > 16.0 * lim as f64)
    })
}

/// At least four readings of a memory figure, never falling, the last three times the first.
fn memory_keeps_growing(f: &Facts) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = regex(
        &RE,
        r"\b(?:mem|memory|rss|mem_alloc|allocated|gpu_mem|max_mem|mem_used)[ =:]{1,3}([0-9]+(?:\.[0-9]+)?) ?(kib|mib|gib|tib|kb|mb|gb|tb)\b",
    );
    let values: Vec<f64> = re
        .captures_iter(f.text)
        .filter_map(|c| Some(c[1].parse::<f64>().ok()? * unit_bytes(&c[2])?))
        .collect();
    values.len() >= 4
        && values.windows(2).all(|w| w[1] >= w[0])
        && values[values.len() - 1] >= 3.0 * values[0]
}

/// Kubernetes eviction text: the container's own use is at least half the node's threshold.
fn eviction_self_inflicted(f: &Facts) -> bool {
    static USING: OnceLock<Regex> = OnceLock::new();
    static THRESHOLD: OnceLock<Regex> = OnceLock::new();
    let using = regex(
        &USING,
        r"was using ([0-9]+(?:\.[0-9]+)?)(ki|mi|gi|ti|k|m|g|t)?\b",
    );
    let threshold = regex(
        &THRESHOLD,
        r"threshold quantity: ([0-9]+(?:\.[0-9]+)?)(ki|mi|gi|ti|k|m|g|t)?\b",
    );
    let amount = |re: &Regex| -> Option<f64> {
        let c = re.captures(f.text)?;
        let n: f64 = c[1].parse().ok()?;
        let u = c.get(2).map_or(Some(1.0), |u| unit_bytes(u.as_str()))?;
        Some(n * u)
    };
    match (amount(using), amount(threshold)) {
        (Some(u), Some(t)) => u >= 0.5 * t,
        (Some(u), None) => u >= 10.0 * 1024f64.powi(3),
        _ => false,
    }
}

fn runtime_fraction(c: &FailureCase) -> Option<f64> {
    match (c.exec_time_s, c.runtime_limit_s) {
        (Some(t), Some(l)) if l > 0 => Some(t / l as f64),
        _ => None,
    }
}

/// Killed (SIGKILL/SIGTERM/SIGXCPU) after 90 % or more of its runtime limit (Torc's rule).
fn killed_at_runtime_limit(f: &Facts) -> bool {
    matches!(f.case.return_code, 137 | 143 | 152 | -9 | -15)
        && runtime_fraction(f.case).is_some_and(|x| x >= 0.9)
}

/// Exit 137 counts as OOM only when the job had not used most of its time (Torc: < 80 %).
fn not_near_runtime_limit(f: &Facts) -> bool {
    runtime_fraction(f.case).is_none_or(|x| x < 0.8)
}

fn peak_over_limit(f: &Facts) -> bool {
    matches!(
        (f.case.peak_memory_bytes, f.case.memory_limit_bytes),
        (Some(p), Some(l)) if l > 0 && p > l
    )
}

// ---- the engine -----------------------------------------------------------------------------------

struct Compiled {
    literals: AhoCorasick,
    /// Pattern id of each literal (by Aho-Corasick pattern index).
    literal_ids: Vec<usize>,
    regexes: RegexSet,
    regex_ids: Vec<usize>,
    /// Pattern text by id, for reasons.
    patterns: Vec<&'static str>,
    /// Per rule: pattern ids of `any`, `with`, `unless`.
    rules: Vec<[Vec<usize>; 3]>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let mut patterns: Vec<&'static str> = Vec::new();
        let mut id_of = |p: &'static str| -> usize {
            if let Some(i) = patterns.iter().position(|q| *q == p) {
                i
            } else {
                patterns.push(p);
                patterns.len() - 1
            }
        };
        let rules: Vec<[Vec<usize>; 3]> = RULES
            .iter()
            .map(|r| {
                [
                    r.any.iter().map(|p| id_of(p)).collect(),
                    r.with.iter().map(|p| id_of(p)).collect(),
                    r.unless.iter().map(|p| id_of(p)).collect(),
                ]
            })
            .collect();
        let (mut lits, mut literal_ids, mut res, mut regex_ids) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, p) in patterns.iter().enumerate() {
            match p.strip_prefix("re:") {
                Some(re) => {
                    res.push(re);
                    regex_ids.push(id);
                }
                None => {
                    lits.push(*p);
                    literal_ids.push(id);
                }
            }
        }
        Compiled {
            literals: AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&lits)
                .expect("the phrases compile"),
            literal_ids,
            regexes: RegexSet::new(&res).expect("the rule regexes compile"),
            regex_ids,
            patterns,
            rules,
        }
    })
}

/// The built-in rules classifier.
#[derive(Debug, Clone, Default)]
pub struct RulesClassifier;

impl RulesClassifier {
    pub fn new() -> RulesClassifier {
        compiled();
        // Compile the checks' patterns now, so the first case does not pay for them.
        let case = FailureCase::default();
        for check in RULES.iter().filter_map(|r| r.check) {
            check(&Facts {
                case: &case,
                text: "",
            });
        }
        RulesClassifier
    }

    /// The first rule that holds for `case` (its index in [`RULES`]) and the phrase that
    /// matched, or `None` when no rule does.
    pub fn explain(&self, case: &FailureCase) -> Option<(usize, Option<&'static str>)> {
        let c = compiled();
        let text = normalise(&case.stderr_tail);
        let mut hit = vec![false; c.patterns.len()];
        for m in c.literals.find_overlapping_iter(&text) {
            hit[c.literal_ids[m.pattern().as_usize()]] = true;
        }
        for i in c.regexes.matches(&text).iter() {
            hit[c.regex_ids[i]] = true;
        }
        let facts = Facts { case, text: &text };
        for (i, (rule, [any, with, unless])) in RULES.iter().zip(&c.rules).enumerate() {
            let phrase = any.iter().copied().find(|&p| hit[p]);
            let by_code = rule.codes.contains(&case.return_code);
            let needs_evidence = !any.is_empty() || !rule.codes.is_empty();
            if needs_evidence && phrase.is_none() && !by_code {
                continue;
            }
            if !with.is_empty() && !with.iter().any(|&p| hit[p]) {
                continue;
            }
            if unless.iter().any(|&p| hit[p]) {
                continue;
            }
            if let Some(check) = rule.check {
                if !check(&facts) {
                    continue;
                }
            }
            return Some((i, phrase.map(|p| c.patterns[p])));
        }
        None
    }
}

impl Classifier for RulesClassifier {
    fn name(&self) -> String {
        "rules".into()
    }

    fn version(&self) -> String {
        VERSION.into()
    }

    fn classify(&self, case: &FailureCase) -> Result<Verdict, ClassifyError> {
        Ok(match self.explain(case) {
            Some((i, phrase)) => {
                let r = &RULES[i];
                let evidence = match phrase {
                    Some(p) => format!("\"{}\"", p.strip_prefix("re:").unwrap_or(p)),
                    None => format!("exit code {}", case.return_code),
                };
                Verdict {
                    action: r.label,
                    adjust: r.adjust,
                    reason: format!("{} ({}): {} [{evidence}]", r.name, r.category, r.meaning),
                    confidence: Some(r.confidence),
                }
            }
            None => Verdict {
                action: UNKNOWN.0,
                adjust: None,
                reason: format!("unknown: {}", UNKNOWN.1),
                confidence: Some(0.3),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(rc: i64, tail: &str) -> FailureCase {
        FailureCase {
            id: "t".into(),
            command: "job".into(),
            return_code: rc,
            stderr_tail: tail.into(),
            ..Default::default()
        }
    }

    fn label(rc: i64, tail: &str) -> (Label, String) {
        let v = RulesClassifier::new().classify(&case(rc, tail)).unwrap();
        (
            v.action,
            v.reason.split(' ').next().unwrap_or("").to_string(),
        )
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut names = std::collections::HashSet::new();
        for r in RULES {
            assert!(names.insert(r.name), "rule {} is listed twice", r.name);
            assert!(
                !r.meaning.is_empty() && !r.category.is_empty(),
                "{}",
                r.name
            );
            assert_eq!(
                r.adjust.is_some(),
                r.label == Label::RetryWithResources,
                "{}: adjust goes with retry_with_resources and only then",
                r.name
            );
            assert!(
                !r.any.is_empty() || !r.codes.is_empty() || r.check.is_some(),
                "{} can never hold",
                r.name
            );
            for p in r.any.iter().chain(r.with).chain(r.unless) {
                if let Some(re) = p.strip_prefix("re:") {
                    Regex::new(re).unwrap_or_else(|e| panic!("{}: {p}: {e}", r.name));
                } else {
                    // Phrases are matched against normalised text, so they must be normalised.
                    assert_eq!(
                        &normalise(p),
                        p,
                        "{}: phrase {p:?} is not normalised",
                        r.name
                    );
                }
            }
        }
        compiled();
    }

    #[test]
    fn precedence_picks_the_cause_not_the_last_line() {
        // A rank died on a bug; the others then time out in a collective: the bug decides.
        let (l, r) = label(
            1,
            "[rank3]: KeyError: 'labels'\n[rank0]: Watchdog caught collective operation timeout: WorkNCCL(OpType=ALLREDUCE)",
        );
        assert_eq!((l, r.as_str()), (Label::Fail, "code_error"));
        // Without the bug the same timeout is transient.
        assert_eq!(
            label(1, "[rank0]: Watchdog caught collective operation timeout").0,
            Label::Retry
        );
        // A stale handle makes the script "missing": the filesystem decides.
        assert_eq!(
            label(
                127,
                "couldn't chdir to /home/x: Stale file handle\n./run.sh: No such file or directory"
            )
            .0,
            Label::Retry
        );
        // Slurm's time limit kills with SIGKILL ("Killed", 137): time, not memory.
        let (l, r) = label(137, "*** JOB 1 ON n1 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT ***\nsrun: error: n1: task 0: Killed");
        assert_eq!((l, r.as_str()), (Label::RetryWithResources, "time_limit"));
        // A cancellation with no reason is a person's decision...
        assert_eq!(
            label(
                143,
                "slurmstepd: error: *** JOB 9 ON n2 CANCELLED AT 2024-06-01T10:00:00 ***"
            )
            .0,
            Label::Fail
        );
        // ... but the OOM killer's cancellation is about memory.
        assert_eq!(
            label(137, "Detected 1 oom-kill event(s)\n*** STEP 9.0 ON n2 CANCELLED AT 2024-06-01T10:00:00 ***").0,
            Label::RetryWithResources
        );
    }

    #[test]
    fn self_inflicted_lookalikes_fail() {
        assert_eq!(
            label(
                1,
                "pthread_create failed: Resource temporarily unavailable (RLIMIT_NPROC 4096)"
            )
            .0,
            Label::Fail
        );
        assert_eq!(
            label(1, "OSError: [Errno 24] Too many open files").0,
            Label::Fail
        );
        assert_eq!(
            label(1, "ConnectionError: HTTPConnectionPool(host='none', port=80): Failed to resolve 'none'").0,
            Label::Fail
        );
        assert_eq!(
            label(1, "MemoryError: Unable to allocate 40.0 TiB for an array").0,
            Label::Fail
        );
        assert_eq!(
            label(1, "MemoryError: Unable to allocate 40.0 GiB for an array").0,
            Label::RetryWithResources
        );
        assert_eq!(
            label(1, "step 1 mem 2 GB\nstep 2 mem 5 GB\nstep 3 mem 9 GB\nstep 4 mem 14 GB\nCUDA out of memory").0,
            Label::Fail
        );
    }

    #[test]
    fn numbers_from_the_ledger_count() {
        let mut c = case(137, "");
        c.exec_time_s = Some(3590.0);
        c.runtime_limit_s = Some(3600);
        let v = RulesClassifier::new().classify(&c).unwrap();
        assert_eq!(v.adjust, Some(Adjust::runtime(2.0)));
        c.exec_time_s = Some(60.0);
        let v = RulesClassifier::new().classify(&c).unwrap();
        assert_eq!(v.adjust, Some(Adjust::memory(2.0)));
        let mut c = case(1, "");
        c.peak_memory_bytes = Some(9 << 30);
        c.memory_limit_bytes = Some(8 << 30);
        assert_eq!(
            RulesClassifier::new().classify(&c).unwrap().action,
            Label::RetryWithResources
        );
    }

    #[test]
    fn unknown_is_retry_with_low_confidence() {
        let v = RulesClassifier::new()
            .classify(&case(3, "something odd happened"))
            .unwrap();
        assert_eq!(v.action, Label::Retry);
        assert!(v.reason.starts_with("unknown"));
        assert!(v.confidence.unwrap() < 0.5);
    }

    #[test]
    fn other_languages() {
        assert_eq!(
            label(
                1,
                "mkdir: das Verzeichnis »/x« kann nicht angelegt werden: Keine Berechtigung"
            )
            .0,
            Label::Fail
        );
        assert_eq!(
            label(
                139,
                "run.sh: 行 6: 99 セグメンテーション違反です (コアダンプ) ./a.out"
            )
            .0,
            Label::Fail
        );
    }
}
