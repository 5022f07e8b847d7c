//! The duration syntax users type: `250ms`, `30s`, `5m`, `1h30m`, `30d`,
//! or bare seconds. One parser, so a flag, a plugin argument and a spec
//! field read the same text the same way.

use std::time::Duration;

/// Parses `250ms`, `30s`, `5m`, `1h30m`, `7d` or bare seconds (`300`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let invalid = || format!("invalid duration {s:?}: use e.g. 250ms, 30s, 5m, 1h30m or 7d");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The shortest text [`parse`] reads back as `d` (whole seconds).
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_combinations() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("300", s(300)),
            ("250ms", Duration::from_millis(250)),
            ("30s", s(30)),
            ("5m", s(300)),
            ("1h30m", s(5400)),
            ("30d", s(30 * 86_400)),
            ("1d12h", s(36 * 3600)),
            (" 2h ", s(7200)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_with_an_example() {
        for text in ["", "m", "5x", "1.5h", "-1s", "h1", "5 m", "30days"] {
            let e = parse(text).unwrap_err();
            assert!(e.contains("e.g. 250ms"), "{text}: {e}");
        }
    }

    #[test]
    fn format_reads_back() {
        for secs in [1, 59, 60, 61, 3600, 5400, 86_400, 90_061, 30 * 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
