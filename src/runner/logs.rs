//! Reading job logs: the last lines of a file, read from its end within a byte bound, so a
//! 10 GB stderr costs the same as a small one. Non-UTF-8 bytes are replaced, never an error.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this many bytes are read from the end of a log.
pub const TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of `path` (reading at most `max_bytes` from its end).
pub fn tail(path: &Path, lines: usize, max_bytes: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(max_bytes).read_to_end(&mut buf)?;
    // Started mid-file: drop the partial first line.
    if start > 0 {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=nl);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let all: Vec<&str> = text.split('\n').collect();
    let from = all.len().saturating_sub(lines);
    Ok(all[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_last_lines_within_bound_and_survives_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        let mut data = Vec::new();
        for i in 0..10_000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        data.extend_from_slice(b"bad \xff\xfe bytes\nlast line\n");
        std::fs::write(&p, &data).unwrap();
        let t = tail(&p, 3, 4096).unwrap();
        assert_eq!(t, "line 9999\nbad \u{fffd}\u{fffd} bytes\nlast line");
        // A bound smaller than the lines asked for gives what fits, without a partial line.
        let t = tail(&p, 1000, 100).unwrap();
        assert!(t.lines().count() < 1000);
        assert!(t.ends_with("last line"));
        assert!(t
            .lines()
            .all(|l| l.starts_with("line") || l.starts_with("bad") || l == "last line"));
    }
}
