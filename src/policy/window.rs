//! Reload windows: when a workload's rollouts may start
//! (`<prefix>/reload-window` on its pod template, `--reload-window` for
//! all). A spec is one or more ranges separated by `;`, each
//! `DAYS START-END ZONE`:
//!
//! - DAYS: `Mon`..`Sun` (any case), a range `Mon-Fri` (wrapping: `Fri-Mon`
//!   is Fri, Sat, Sun, Mon), a comma list of those (`Sat,Sun`, no spaces),
//!   or `*` for every day;
//! - START-END: `HH:MM[:SS]-HH:MM[:SS]`, the end may be `24:00`; an end at
//!   or before the start crosses midnight and belongs to the start day
//!   (`Mon 22:00-06:00` is open from Monday 22:00 to Tuesday 06:00);
//! - ZONE: an IANA name (`Europe/Berlin`) or `UTC`, from the database
//!   bundled in the binary (the `scratch` image has no zoneinfo).
//!
//! A range begun on day D is open from D at START to END (on D or D+1), both
//! local times turned into instants with the "compatible" rule of RFC 5545
//! and Temporal: a local time skipped by a daylight-saving change (02:30 on
//! the night clocks go forward) is read with the offset before the change
//! (so 02:30 CET, which is 03:30 CEST), and a local time that occurs twice
//! (02:30 on the night clocks go back) is its first occurrence. So on the
//! night clocks go forward in Europe/Berlin `02:00-03:00` is empty (both ends
//! are 03:00 CEST: the window does not open that day) and `01:30-03:30` is
//! open one hour; on the night they go back `02:00-03:00` is open two hours
//! (from the first 02:00 to the only 03:00).
//!
//! A spec is tenant input: its length and number of ranges are capped, and
//! an error quotes at most a short excerpt of the part that is wrong.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::fmt;

/// The longest spec accepted, in bytes.
pub const MAX_LEN: usize = 512;
/// The most ranges a spec may hold.
pub const MAX_RANGES: usize = 16;
/// The most characters of a bad part an error quotes.
const QUOTED: usize = 32;
/// Seconds in a day.
const DAY: u32 = 86_400;
/// Days scanned for the next opening: two weeks and the days before today
/// whose range may still be open, so a week whose only range is empty (a
/// daylight-saving night) still finds the next one.
const SCAN_DAYS: i64 = 17;

/// A parsed reload window: open when any of its ranges is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    ranges: Box<[Range]>,
}

/// One `DAYS START-END ZONE` range.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    /// The start days, bit 0 Monday to bit 6 Sunday.
    days: u8,
    /// Seconds after local midnight of the start day.
    start: u32,
    /// Seconds after local midnight of the start day, past `start`: up to
    /// two days' worth when the range crosses midnight.
    end: u32,
    zone: TimeZone,
}

/// Why a spec is not a window; ranges are numbered from 1 and a quoted part
/// is at most [`QUOTED`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// Nothing but blanks.
    Empty,
    /// Longer than [`MAX_LEN`] bytes (how long it is).
    TooLong(usize),
    /// More than [`MAX_RANGES`] ranges (how many).
    TooManyRanges(usize),
    /// A range lacks a part: its days, its times or its zone.
    Missing {
        /// Which range.
        range: usize,
        /// Which part.
        part: &'static str,
    },
    /// A range has words after its zone.
    Extra {
        /// Which range.
        range: usize,
        /// The first extra word, capped.
        text: String,
    },
    /// A range's days are not days.
    BadDays {
        /// Which range.
        range: usize,
        /// The item that is not a day, capped.
        text: String,
    },
    /// A range's times are not `HH:MM[:SS]-HH:MM[:SS]`.
    BadTimes {
        /// Which range.
        range: usize,
        /// Its times, capped.
        text: String,
    },
    /// A range's start and end are the same time of day.
    EmptyTimes {
        /// Which range.
        range: usize,
    },
    /// A range's zone is not in the time-zone database.
    UnknownZone {
        /// Which range.
        range: usize,
        /// The zone name, capped.
        text: String,
    },
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WindowError::*;
        match self {
            Empty => write!(
                f,
                "empty; a window is like 'Mon-Fri 22:00-06:00 Europe/Berlin'"
            ),
            TooLong(len) => write!(f, "{len} bytes long, more than {MAX_LEN}"),
            TooManyRanges(n) => write!(f, "{n} ranges, more than {MAX_RANGES}"),
            Missing { range, part } => write!(
                f,
                "range {range} has no {part}; a range is like 'Mon-Fri 22:00-06:00 Europe/Berlin'"
            ),
            Extra { range, text } => {
                write!(f, "range {range}: unexpected '{text}' after its time zone")
            }
            BadDays { range, text } => write!(
                f,
                "range {range}: '{text}' is not a day (Mon..Sun, a range Mon-Fri, a list \
                 Sat,Sun without spaces, or *)"
            ),
            BadTimes { range, text } => write!(
                f,
                "range {range}: '{text}' is not a time range HH:MM[:SS]-HH:MM[:SS] (the end \
                 may be 24:00)"
            ),
            EmptyTimes { range } => write!(
                f,
                "range {range}: starts and ends at the same time; a whole day is 00:00-24:00"
            ),
            UnknownZone { range, text } => {
                write!(
                    f,
                    "range {range}: '{text}' is not an IANA time zone (or UTC)"
                )
            }
        }
    }
}

impl std::error::Error for WindowError {}

/// At most [`QUOTED`] characters of `text`, control characters escaped,
/// `…` when cut: tenant text in a log line stays short and on one line.
fn excerpt(text: &str) -> String {
    let mut quoted: String = text
        .chars()
        .take(QUOTED)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(QUOTED).is_some() {
        quoted.push('…');
    }
    quoted
}

/// Parses a window spec (see the module documentation for its grammar).
/// Blanks around ranges and between parts are ignored.
pub fn parse(spec: &str) -> Result<Window, WindowError> {
    if spec.len() > MAX_LEN {
        return Err(WindowError::TooLong(spec.len()));
    }
    if spec.trim().is_empty() {
        return Err(WindowError::Empty);
    }
    let count = spec.split(';').count();
    if count > MAX_RANGES {
        return Err(WindowError::TooManyRanges(count));
    }
    let ranges = spec
        .split(';')
        .enumerate()
        .map(|(i, text)| parse_range(i + 1, text))
        .collect::<Result<_, _>>()?;
    Ok(Window { ranges })
}

/// Range number `range`, `DAYS START-END ZONE`.
fn parse_range(range: usize, text: &str) -> Result<Range, WindowError> {
    let mut words = text.split_whitespace();
    let mut next = |part| words.next().ok_or(WindowError::Missing { range, part });
    let (days, times, zone) = (next("days")?, next("times")?, next("time zone")?);
    if let Some(extra) = words.next() {
        let text = excerpt(extra);
        return Err(WindowError::Extra { range, text });
    }
    let days = parse_days(days).map_err(|item| WindowError::BadDays {
        range,
        text: excerpt(item),
    })?;
    let bad_times = || WindowError::BadTimes {
        range,
        text: excerpt(times),
    };
    let (start, end) = times.split_once('-').ok_or_else(bad_times)?;
    let start = time_of_day(start)
        .filter(|s| *s < DAY)
        .ok_or_else(bad_times)?;
    let end = time_of_day(end).ok_or_else(bad_times)?;
    if start == end {
        return Err(WindowError::EmptyTimes { range });
    }
    // An end at or before the start is on the next day.
    let end = if end <= start { end + DAY } else { end };
    let zone = TimeZone::get(zone).map_err(|_| WindowError::UnknownZone {
        range,
        text: excerpt(zone),
    })?;
    Ok(Range {
        days,
        start,
        end,
        zone,
    })
}

/// The days of `text` as bits (bit 0 Monday), or the item that is not a day.
fn parse_days(text: &str) -> Result<u8, &str> {
    if text == "*" {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for item in text.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (day(first), day(last)),
            None => (day(item), day(item)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Err(item);
        };
        // Wrapping: Fri-Mon is Fri, Sat, Sun, Mon.
        let mut d = first;
        loop {
            days |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

/// A day name's number, Monday 0, in any case.
fn day(name: &str) -> Option<u32> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

/// `HH:MM[:SS]` as seconds after midnight, `24:00[:00]` included.
fn time_of_day(text: &str) -> Option<u32> {
    let fields: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&fields.len()) {
        return None;
    }
    let number = |i: usize, max: u32| {
        let f: &str = fields.get(i).copied().unwrap_or("00");
        let digits = if i == 0 { 1..=2 } else { 2..=2 };
        let ok = digits.contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| f.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n <= max)
    };
    let total = number(0, 24)? * 3600 + number(1, 59)? * 60 + number(2, 59)?;
    (total <= DAY).then_some(total)
}

impl Window {
    /// A window open at every instant: what a workload whose own window is
    /// unreadable gets, so that neither its bad value nor the default
    /// window holds it.
    pub fn always() -> Window {
        Window {
            ranges: Box::new([Range {
                days: 0x7f,
                start: 0,
                end: DAY,
                zone: TimeZone::UTC,
            }]),
        }
    }

    /// Whether the window is open at `unix_seconds`. An instant outside the
    /// years -9999 to 9999 is never in it.
    pub fn is_open(&self, unix_seconds: i64) -> bool {
        self.opens_at(unix_seconds) == Some(unix_seconds)
    }

    /// The first instant at or after `unix_seconds` at which the window is
    /// open (`unix_seconds` itself when it is open then), looking up to two
    /// weeks ahead; `None` when it does not open in that time, which only
    /// an instant outside the years -9999 to 9999 can cause.
    pub fn opens_at(&self, unix_seconds: i64) -> Option<i64> {
        self.ranges
            .iter()
            .filter_map(|range| range.opens_at(unix_seconds))
            .min()
    }
}

impl Range {
    /// The first instant at or after `now` inside this range, from the
    /// ranges begun on the days around `now` and in the two weeks after.
    fn opens_at(&self, now: i64) -> Option<i64> {
        let today = self
            .zone
            .to_datetime(Timestamp::from_second(now).ok()?)
            .date();
        // A range begun yesterday may still be open; the day before too,
        // when a daylight-saving change stretches it.
        let mut date = today.yesterday().ok()?.yesterday().ok()?;
        for _ in 0..SCAN_DAYS {
            // Ranges begun on later days start and end later: the first
            // one still open or to come is the next opening.
            match self.on(date) {
                Some((start, end)) if end > now && end > start => return Some(start.max(now)),
                _ => {}
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The instants `[start, end)` of the range begun on local `date`, when
    /// it is one of its days; empty (start = end) where a daylight-saving
    /// change swallows it.
    fn on(&self, date: Date) -> Option<(i64, i64)> {
        let weekday = date.weekday().to_monday_zero_offset();
        if self.days & (1 << weekday) == 0 {
            return None;
        }
        let start = self.instant(date, self.start)?;
        let end = self.instant(date, self.end)?;
        Some((start, end))
    }

    /// Local `date` plus `seconds` (up to two days), as an instant with the
    /// compatible disambiguation.
    fn instant(&self, date: Date, seconds: u32) -> Option<i64> {
        let mut date = date;
        for _ in 0..seconds / DAY {
            date = date.tomorrow().ok()?;
        }
        let s = seconds % DAY;
        let local = date.at((s / 3600) as i8, (s / 60 % 60) as i8, (s % 60) as i8, 0);
        let instant = self.zone.to_ambiguous_timestamp(local).compatible().ok()?;
        Some(instant.as_second())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `2026-01-05T23:00:00Z` as Unix seconds.
    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn open_and_closed_instants() {
        // 2026-01-05 is a Monday.
        let cases: &[(&str, &[(&str, bool)])] = &[
            (
                "Mon 22:00-06:00 UTC",
                &[
                    ("2026-01-05T21:59:59Z", false),
                    ("2026-01-05T22:00:00Z", true),
                    ("2026-01-06T05:59:59Z", true),
                    ("2026-01-06T06:00:00Z", false),
                    ("2026-01-06T23:00:00Z", false),
                    ("2026-01-05T03:00:00Z", false), // Sunday's night: not a start day
                ],
            ),
            (
                "Fri-Mon 09:00-17:00 UTC",
                &[
                    ("2026-01-10T12:00:00Z", true),  // Saturday
                    ("2026-01-05T12:00:00Z", true),  // Monday
                    ("2026-01-07T12:00:00Z", false), // Wednesday
                ],
            ),
            (
                "Mon-Fri 22:00-06:00 Europe/Berlin; Sat,sun 00:00-24:00 UTC",
                &[
                    ("2026-01-05T21:30:00Z", true), // Mon 22:30 CET
                    ("2026-01-06T04:59:59Z", true), // Tue 05:59:59 CET
                    ("2026-01-06T05:00:00Z", false),
                    ("2026-01-10T00:00:00Z", true), // Saturday, any time
                    ("2026-01-11T23:59:59Z", true), // Sunday's last second
                    ("2026-01-12T00:00:00Z", false), // Monday 01:00 CET
                ],
            ),
            (
                "* 10:00:00-10:00:20 UTC",
                &[
                    ("2026-01-07T10:00:19Z", true),
                    ("2026-01-07T10:00:20Z", false),
                ],
            ),
            (
                "Tue 23:00-00:00 UTC",
                &[
                    ("2026-01-06T23:30:00Z", true),
                    ("2026-01-07T00:00:00Z", false),
                ],
            ),
        ];
        for (spec, instants) in cases {
            let window = parse(spec).unwrap();
            for (instant, open) in *instants {
                assert_eq!(window.is_open(at(instant)), *open, "{spec} at {instant}");
            }
        }
    }

    #[test]
    fn the_next_opening() {
        let window = parse("Mon-Fri 22:00-06:00 Europe/Berlin").unwrap();
        let now = at("2026-01-07T12:00:00Z"); // Wednesday
        assert_eq!(window.opens_at(now), Some(at("2026-01-07T21:00:00Z")));
        let open = at("2026-01-07T22:00:00Z");
        assert_eq!(window.opens_at(open), Some(open), "open now: now");
        let friday_night = at("2026-01-10T05:00:00Z"); // Saturday 06:00 CET
        assert_eq!(
            window.opens_at(friday_night),
            Some(at("2026-01-12T21:00:00Z"))
        );
        assert_eq!(Window::always().opens_at(now), Some(now));
        assert_eq!(window.opens_at(i64::MAX), None, "past the year 9999");
    }

    #[test]
    fn across_daylight_saving_changes_local_times_are_compatible() {
        // Europe/Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST (01:00Z);
        // 2026-10-25 03:00 CEST becomes 02:00 CET (01:00Z). Both Sundays.
        let short = parse("Sun 02:00-03:00 Europe/Berlin").unwrap();
        let long = parse("Sun 01:30-03:30 Europe/Berlin").unwrap();
        let cases = [
            // Forward: 02:00-03:00 is empty that day, so the next opening is
            // a week later (02:00 CEST = 00:00Z).
            (&short, "2026-03-29T00:59:59Z", false),
            (&short, "2026-03-29T01:00:00Z", false),
            // 01:30-03:30 is one hour: 00:30Z to 01:30Z.
            (&long, "2026-03-29T00:29:59Z", false),
            (&long, "2026-03-29T00:30:00Z", true),
            (&long, "2026-03-29T01:29:59Z", true),
            (&long, "2026-03-29T01:30:00Z", false),
            // Back: 02:00-03:00 is two hours, from the first 02:00 (00:00Z)
            // to 03:00 CET (02:00Z).
            (&short, "2026-10-24T23:59:59Z", false),
            (&short, "2026-10-25T00:00:00Z", true),
            (&short, "2026-10-25T01:30:00Z", true),
            (&short, "2026-10-25T02:00:00Z", false),
            // 01:30-03:30 is three hours: 23:30Z to 02:30Z.
            (&long, "2026-10-24T23:30:00Z", true),
            (&long, "2026-10-25T02:29:59Z", true),
            (&long, "2026-10-25T02:30:00Z", false),
        ];
        for (window, instant, open) in cases {
            assert_eq!(window.is_open(at(instant)), open, "{window:?} at {instant}");
        }
        assert_eq!(
            short.opens_at(at("2026-03-28T12:00:00Z")),
            Some(at("2026-04-05T00:00:00Z")),
            "the swallowed night is skipped"
        );
    }

    #[test]
    fn bad_specs_say_which_part_of_which_range() {
        let long_zone = format!("Mon 10:00-11:00 {}", "X".repeat(200));
        let long = "Mon 10:00-11:00 UTC;".repeat(30);
        let many = vec!["Mon 10:00-11:00 UTC"; MAX_RANGES + 1].join(";");
        let cases: Vec<(&str, WindowError)> = vec![
            ("", WindowError::Empty),
            ("  ", WindowError::Empty),
            (&long, WindowError::TooLong(long.len())),
            (&many, WindowError::TooManyRanges(MAX_RANGES + 1)),
            (
                "Mon 10:00-11:00 UTC;",
                WindowError::Missing {
                    range: 2,
                    part: "days",
                },
            ),
            (
                "Mon 10:00-11:00",
                WindowError::Missing {
                    range: 1,
                    part: "time zone",
                },
            ),
            (
                "Mon 10:00-11:00 UTC now",
                WindowError::Extra {
                    range: 1,
                    text: "now".into(),
                },
            ),
            (
                "Mon,Mox 10:00-11:00 UTC",
                WindowError::BadDays {
                    range: 1,
                    text: "Mox".into(),
                },
            ),
            (
                "Mon-Monday 10:00-11:00 UTC",
                WindowError::BadDays {
                    range: 1,
                    text: "Mon-Monday".into(),
                },
            ),
            (
                "* 10:00-11:00 UTC; Mon 25:00-26:00 UTC",
                WindowError::BadTimes {
                    range: 2,
                    text: "25:00-26:00".into(),
                },
            ),
            ("Mon 10:00-24:01 UTC", bad_times("10:00-24:01")),
            ("Mon 24:00-06:00 UTC", bad_times("24:00-06:00")),
            ("Mon 10:0-11:00 UTC", bad_times("10:0-11:00")),
            ("Mon 10:00:00:00-11:00 UTC", bad_times("10:00:00:00-11:00")),
            ("Mon 10:00 UTC", bad_times("10:00")),
            ("Mon +1:00-11:00 UTC", bad_times("+1:00-11:00")),
            ("Mon 06:00-06:00 UTC", WindowError::EmptyTimes { range: 1 }),
            (
                "Mon 10:00-11:00 Mars/Olympus",
                WindowError::UnknownZone {
                    range: 1,
                    text: "Mars/Olympus".into(),
                },
            ),
            (
                &long_zone,
                WindowError::UnknownZone {
                    range: 1,
                    text: format!("{}…", "X".repeat(QUOTED)),
                },
            ),
        ];
        for (spec, error) in cases {
            assert_eq!(parse(spec), Err(error), "{spec}");
        }
        let message = parse("Mon\u{1b}[31m 10:00-11:00 UTC")
            .unwrap_err()
            .to_string();
        assert!(message.contains("'Mon\\u{1b}[31m'"), "escaped: {message}");
    }

    fn bad_times(text: &str) -> WindowError {
        WindowError::BadTimes {
            range: 1,
            text: text.into(),
        }
    }

    #[test]
    fn accepted_forms() {
        for spec in [
            "* 00:00-24:00 UTC",
            " mon-FRI 9:00-17:30 Europe/Berlin ;  Sat 10:00:30-10:00:45 America/New_York ",
            "Sun-Sat 22:00-22:00:01 utc",
            "Sat,Sun,Mon-Tue 23:59:59-00:00 Asia/Kolkata",
        ] {
            assert!(parse(spec).is_ok(), "{spec}: {:?}", parse(spec));
        }
    }
}
