//! The real binary over stdio, driven by the official Python MCP SDK (PyPI `mcp`, installed by
//! .ci/run), checked through the CLI afterwards.

use crate::common::{bin, stderr, stdout, Sandbox};
use std::process::Command;

#[test]
fn python_sdk_drives_the_stdio_server_end_to_end() {
    let probe = Command::new("python3")
        .args(["-c", "import mcp"])
        .output()
        .expect("python3 is needed for the MCP client test");
    assert!(
        probe.status.success(),
        "the Python MCP SDK is missing: run `python3 -m pip install mcp` (or .ci/run, which installs it)"
    );
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/stdio_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(bin())
        .arg(sb.path())
        .env("USER", "tester")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("all checks passed"));
}

#[test]
fn python_sdk_over_streamable_http() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let sb = Sandbox::new();
    sb.write("demo.yaml", include_str!("../../examples/demo.yaml"));
    assert_eq!(sb.run(&["run", "demo.yaml"]).status.code(), Some(4));
    let mut server = Command::new(bin())
        .args(["mcp", "--http", "127.0.0.1:0"])
        .current_dir(sb.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mcp/http_client.py"
        ))
        .arg(&url)
        .output()
        .unwrap();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGINT);
    }
    let status = server.wait().unwrap();
    assert!(
        out.status.success(),
        "python http client failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        status.success(),
        "server exits cleanly on Ctrl-C: {status:?}"
    );
    // The proposal made over HTTP is in the ledger, seen by the CLI.
    let (_, v) = sb.json(&["proposals", "list", "1"]);
    assert_eq!(v["items"][0]["status"], "open");
}
