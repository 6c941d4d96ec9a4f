//! Rendering in one place: tables for people, JSON for scripts, errors for both.

use super::{CliError, Format};
use serde_json::{json, Value};
use std::io::Write;

pub struct Out {
    pub format: Format,
}

impl Out {
    pub fn new(format: Format) -> Out {
        Out { format }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Print a JSON value (pretty) on stdout.
    pub fn print_json(&self, v: &Value) {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        let _ = std::io::stdout().write_all(s.as_bytes());
    }

    pub fn line(&self, s: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", s.as_ref());
    }

    /// Messages for people that are not the answer (warnings, hints): stderr.
    pub fn note(&self, s: impl AsRef<str>) {
        eprintln!("{}", s.as_ref());
    }

    pub fn error(&self, e: &CliError) {
        eprintln!("error: {}", e.message);
        if self.json() {
            let mut v = json!({"error": {"message": e.message, "exit_code": e.code}});
            if let Some(d) = &e.detail {
                v["error"]["detail"] = d.clone();
            }
            self.print_json(&v);
        }
    }

    /// Print rows as an aligned table.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let fmt_row = |cells: Vec<&str>| -> String {
            let n = cells.len();
            cells
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == n {
                        c.to_string()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        self.line(fmt_row(headers.to_vec()));
        for r in rows {
            self.line(fmt_row(r.iter().map(|s| s.as_str()).collect()));
        }
    }
}

/// Cut a string to `n` characters for a table cell.
pub fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub use crate::views::time_str;
