//! Human units on the command line and in reports.
//!
//! Sizes are binary (`1k` = 1024 bytes, `1m` = 1 MiB) because batch and
//! buffer sizes are powers of two in practice and Kafka users write
//! `batch.size=16384`. Durations take a unit suffix (`250us`, `500ms`,
//! `4s`, `2m`, `1h`); a bare number is seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("'{0}' is not a size: expected a number with an optional k, m or g suffix (binary units), e.g. 512, 16k, 1m")]
    Size(String),
    #[error("'{0}' is not a duration: expected a number with a unit, e.g. 500ms, 4s, 2m (a bare number means seconds)")]
    Duration(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

/// Parse `512`, `1k`, `64K`, `1m`, `1MiB`, `2g` into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(UnitError::Size(text.to_string()));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(UnitError::Size(text.to_string())),
    };
    let v: f64 = num.parse().map_err(|_| UnitError::Size(text.to_string()))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
        return Err(UnitError::Overflow(text.to_string()));
    }
    if bytes.fract() != 0.0 {
        // "1.5k" is fine (1536); "0.3" bytes is not.
        return Err(UnitError::Size(text.to_string()));
    }
    Ok(bytes as u64)
}

/// Parse `250us`, `500ms`, `4s`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(UnitError::Duration(text.to_string()));
    }
    let v: f64 = num
        .parse()
        .map_err(|_| UnitError::Duration(text.to_string()))?;
    let secs_per_unit = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(UnitError::Duration(text.to_string())),
    };
    let secs = v * secs_per_unit;
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(UnitError::Overflow(text.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1024` -> "1k", `1048576` -> "1m", `1500` -> "1500": the inverse of
/// [`parse_size`] where exact, so table labels round-trip to the CLI.
pub fn format_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{}g", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}m", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}k", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// A duration the way the CLI accepts it ("500ms", "4s", "2m").
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Latency in microseconds shown with a unit that keeps 3-4 significant
/// digits: "87µs", "1.23ms", "12.3ms", "1.20s".
pub fn format_us(us: u64) -> String {
    let v = us as f64;
    if us < 1000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", v / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", v / 1e3)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

/// A message rate with thousands separators: 1234567.8 -> "1,234,568".
pub fn format_count(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes per second in MiB/s.
pub fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / (1u64 << 20) as f64 / secs
    }
}

/// A comma-separated list, each item parsed by `f` ("1k,16k,64k").
pub fn parse_list<T, E>(text: &str, f: impl Fn(&str) -> Result<T, E>) -> Result<Vec<T>, E> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("k").is_err());
        assert!(parse_size("12x").is_err());
        assert!(parse_size("0.3").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("4s").unwrap(), Duration::from_secs(4));
        assert_eq!(parse_duration("4").unwrap(), Duration::from_secs(4));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("4 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["512", "1k", "16k", "64k", "256k", "1m", "1g", "1500"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        for s in ["500ms", "4s", "2m", "250us"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(format_us(87), "87µs");
        assert_eq!(format_us(1234), "1.23ms");
        assert_eq!(format_us(12_345), "12.3ms");
        assert_eq!(format_us(1_200_000), "1.20s");
        assert_eq!(format_count(1234567.8), "1,234,568");
        assert_eq!(format_count(12.0), "12");
    }

    #[test]
    fn lists() {
        let v = parse_list("1k, 16k,64k", parse_size).unwrap();
        assert_eq!(v, vec![1024, 16384, 65536]);
    }
}
