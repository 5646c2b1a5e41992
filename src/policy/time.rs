//! Wall-clock timestamps in RFC 3339, as logs and Kubernetes objects want
//! them (written by `humantime`), and Go-style durations, as the original
//! tool's flags take them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-28T07:43:31.123456Z` with `digits` (0 to 9) fraction digits,
/// truncated. Instants before 1970 or after 9999 are clamped to those years,
/// as RFC 3339 has no others and a wrong clock must not stop the daemon.
pub fn rfc3339(at: SystemTime, digits: u32) -> String {
    let latest = UNIX_EPOCH + Duration::new(LAST_SECOND_OF_9999, 999_999_999);
    let at = at.clamp(UNIX_EPOCH, latest);
    // Always 30 bytes, `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    let full = humantime::format_rfc3339_nanos(at).to_string();
    let (seconds, fraction) = full.split_at(19);
    match digits.min(9) as usize {
        0 => format!("{seconds}Z"),
        digits => format!("{seconds}{}Z", &fraction[..=digits]),
    }
}

/// 9999-12-31T23:59:59Z, the last second humantime (and RFC 3339) can write.
const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

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
        assert_eq!(
            rfc3339(at(1_795_851_811, 999_999_999), 0),
            "2026-11-28T07:43:31Z"
        );
        assert_eq!(
            rfc3339(at(1_795_851_811, 120_000_000), 9),
            "2026-11-28T07:43:31.120000000Z"
        );
        assert_eq!(
            rfc3339(at(1_795_851_811, 123_456_789), 12),
            "2026-11-28T07:43:31.123456789Z"
        );
        assert_eq!(
            rfc3339(at(1_795_851_811, 123_456_789), 1),
            "2026-11-28T07:43:31.1Z"
        );
    }

    #[test]
    fn clamps_instants_rfc_3339_cannot_write() {
        let before_1970 = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(rfc3339(before_1970, 3), "1970-01-01T00:00:00.000Z");
        let year_10000 = UNIX_EPOCH + Duration::from_secs(LAST_SECOND_OF_9999 + 86_400);
        assert_eq!(rfc3339(year_10000, 0), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(year_10000, 6), "9999-12-31T23:59:59.999999Z");
    }
}
