//! Memory strings (`512m`, `2g`, bare bytes; 1024-based, case-insensitive) and ISO-8601
//! durations (`PT30M`, `P1DT2H`, `P2W`), as Torc 1.0.0 accepts them.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid memory value {0:?}: expected a whole number with an optional k, m, g or t suffix (1024-based), e.g. 512m or 2g")]
    Memory(String),
    #[error("invalid runtime value {0:?}: expected an ISO-8601 duration such as PT30M, PT2H, P1DT2H or P2W")]
    Duration(String),
}

pub fn parse_memory(s: &str) -> Result<u64, ResourceError> {
    let err = || ResourceError::Memory(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let (digits, mult): (&str, u64) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(err()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(mult).ok_or_else(err)
}

/// The shortest exact memory string for a byte count (`2g`, `1536m`, `100`).
pub fn format_memory(bytes: u64) -> String {
    for (suffix, mult) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes >= mult && bytes % mult == 0 {
            return format!("{}{}", bytes / mult, suffix);
        }
    }
    bytes.to_string()
}

/// Seconds in an ISO-8601 duration. Years count 365.25 days and months 30.44 days, as in Torc.
pub fn parse_duration(s: &str) -> Result<u64, ResourceError> {
    let err = || ResourceError::Duration(s.to_string());
    let t = s.trim().to_ascii_uppercase();
    let rest = t.strip_prefix('P').ok_or_else(err)?;
    if rest.is_empty() {
        return Err(err());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return Err(err());
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut any = false;
    let mut scan = |part: &str, units: &[(char, f64)]| -> Result<(), ResourceError> {
        let mut num = String::new();
        let mut next_unit = 0usize;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let pos = units[next_unit..]
                    .iter()
                    .position(|(u, _)| *u == c)
                    .ok_or_else(err)?;
                let (_, secs) = units[next_unit + pos];
                next_unit += pos + 1;
                let v: f64 = num.parse().map_err(|_| err())?;
                if !v.is_finite() || v < 0.0 {
                    return Err(err());
                }
                total += v * secs;
                any = true;
                num.clear();
            }
        }
        if !num.is_empty() {
            return Err(err());
        }
        Ok(())
    };
    scan(
        date,
        &[
            ('Y', 365.25 * 86400.0),
            ('M', 30.44 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    if let Some(time) = time {
        scan(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !any || total > u64::MAX as f64 / 2.0 {
        return Err(err());
    }
    Ok(total.ceil() as u64)
}

/// ISO-8601 for a number of seconds, in Torc's style (`PT2H30M`, `P1DT2H`, `PT0S`).
pub fn format_duration(secs: u64) -> String {
    let (d, rem) = (secs / 86400, secs % 86400);
    let (h, rem) = (rem / 3600, rem % 3600);
    let (m, s) = (rem / 60, rem % 60);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if h > 0 || m > 0 || s > 0 || d == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || (h == 0 && m == 0) {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_strings() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert_eq!(parse_memory("1t").unwrap(), 1 << 40);
        for bad in [
            "",
            "g",
            "2gb",
            "-1m",
            "1.5g",
            "abc",
            "99999999999999999999t",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(format_memory(3 << 30), "3g");
        assert_eq!(format_memory(1536 << 20), "1536m");
        assert_eq!(format_memory(1000), "1000");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT30M").unwrap(), 1800);
        assert_eq!(parse_duration("PT2H").unwrap(), 7200);
        assert_eq!(parse_duration("P1DT2H").unwrap(), 93600);
        assert_eq!(parse_duration("P2W").unwrap(), 14 * 86400);
        assert_eq!(parse_duration("P0DT1M").unwrap(), 60);
        assert_eq!(parse_duration("PT1.5S").unwrap(), 2);
        for bad in [
            "", "P", "PT", "30M", "PT30", "PTM", "PT1H2X", "P1H", "PT1M1H",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(format_duration(9000), "PT2H30M");
        assert_eq!(format_duration(93600), "P1DT2H");
        assert_eq!(format_duration(0), "PT0S");
        assert_eq!(parse_duration(&format_duration(123456)).unwrap(), 123456);
    }
}
