//! Wall-clock timestamps in RFC 3339, as logs and Kubernetes objects want
//! them, and Go-style durations, as the original tool's flags take them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-28T07:43:31.123456Z` with `digits` (0 to 9) fraction digits.
pub fn rfc3339(at: SystemTime, digits: u32) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    );
    let digits = digits.min(9);
    if digits > 0 {
        let fraction = since.subsec_nanos() / 10u32.pow(9 - digits);
        text.push_str(&format!(".{fraction:0width$}", width = digits as usize));
    }
    text.push('Z');
    text
}

/// The proleptic Gregorian date of a day counted from 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses a Go duration such as `300ms`, `1.5h` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("'{text}' is not a duration like 30s, 1m or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return Err(invalid());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("30s", 30_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("2m0.5s", 120_500),
            ("0", 0),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for text in ["", "30", "s", "-1s", "1x", "1..5s", "1h 30m", "1e3s"] {
            assert!(parse_duration(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn formats_known_instants() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(rfc3339(at(0, 0), 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(at(951_782_400, 5_000_000), 3),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339(at(1_795_851_811, 123_456_789), 6),
            "2026-11-28T07:43:31.123456Z"
        );
        assert_eq!(rfc3339(at(4_107_542_399, 0), 0), "2100-02-28T23:59:59Z");
    }
}
