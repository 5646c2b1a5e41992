//! What a reloader pass costs against its period. A pass makes its requests
//! one at a time (without `--list-secret-metadata`, one metadata read per
//! secret), so it lasts about requests × (round trip + server time): a Vault
//! a network hop away makes it longer than on loopback. A pass stops at the
//! end of its period and the namespaces it did not finish go on next pass
//! (the others start afresh, so they are not delayed). [`judge`] turns a
//! finished pass into its share of `--reloader-run-period` (the
//! `pass_period_ratio` gauge and the pass's log line) and says when passes
//! start or stop outlasting the period, once per change. Pure: the daemon
//! does the logging.

use std::collections::BTreeMap;
use std::time::Duration;

/// How many namespaces a notice names; the rest are counted.
const NAMED: usize = 5;

/// A finished (not interrupted) reloader pass.
#[derive(Debug)]
pub struct Pass<'a> {
    /// How long it took.
    pub took: Duration,
    /// `--reloader-run-period` (at least 1 s: the flag refuses less).
    pub period: Duration,
    /// Distinct secrets it checked.
    pub secrets: usize,
    /// Requests it made, Vault and Kubernetes together, as its log line
    /// counts them.
    pub requests: u64,
    /// The namespaces it ran out of time for, with the secrets each has
    /// left to ask about next pass.
    pub carried: &'a BTreeMap<String, usize>,
    /// Namespaces it finished that began on an earlier pass.
    pub late: usize,
}

impl Pass<'_> {
    /// Whether it did not fit its period: it took longer, left namespaces
    /// for the next pass, or finished some left by the one before (so a
    /// namespace that always takes several passes keeps passes over, said
    /// once, rather than flapping each time it finishes).
    pub fn over(&self) -> bool {
        self.took > self.period || !self.carried.is_empty() || self.late > 0
    }
}

/// What [`judge`] decided about a pass.
#[derive(Debug)]
pub struct Cost {
    /// The pass's duration over the period: 0.5 is half of it, over 1 is
    /// longer than it (passes then run back to back).
    pub share: f64,
    /// A line to log at its level when this pass changed whether passes
    /// fit in their period; `None` otherwise.
    pub notice: Option<(log::Level, String)>,
}

/// Judges `pass`, given whether the pass before it was [`Pass::over`]
/// (`false` for the first). A pass over its period after one that was not
/// gives a warning naming the namespaces it left for the next pass (if
/// any), its secrets, its requests and their mean time (the pass's duration
/// over its requests: while a pass mostly waits for its answers, that is
/// about one round trip plus the server's time), and what to do. A pass
/// that fits after one that did not gives one info line. Any other pass
/// gives no notice, so each state is said once, when it begins.
pub fn judge(pass: &Pass, previous_over: bool) -> Cost {
    let share = pass.took.as_secs_f64() / pass.period.as_secs_f64();
    let percent = share * 100.0;
    let took = pass.took.as_millis();
    let notice = match (previous_over, pass.over()) {
        (false, true) => {
            // A pass of no request (none is ever that long) counts as one.
            let mean = pass.took.as_secs_f64() * 1000.0 / pass.requests.max(1) as f64;
            let what = match pass.carried.is_empty() {
                true => {
                    format!("reloader pass took {took} ms, {percent:.0}% of --reloader-run-period")
                }
                false => format!(
                    "reloader pass ran out of --reloader-run-period with {}",
                    carried(pass.carried)
                ),
            };
            Some((
                log::Level::Warn,
                format!(
                    "{what}: {} secrets, {} requests at {mean:.1} ms each on average, asked one \
                     at a time; {}. Lengthen --reloader-run-period, list directories with \
                     --list-secret-metadata (OpenBao), or split the namespaces between \
                     reloaders (--namespaces)",
                    pass.secrets,
                    pass.requests,
                    match pass.carried.is_empty() {
                        true =>
                            "passes now run back to back, so a change may wait about two passes",
                        false =>
                            "they are asked next pass, while every other namespace is \
                                  checked afresh each pass, so only theirs wait longer",
                    }
                ),
            ))
        }
        (true, false) => Some((
            log::Level::Info,
            format!(
                "reloader pass fits in its period again: {took} ms, {percent:.0}% of \
                 --reloader-run-period"
            ),
        )),
        _ => None,
    };
    Cost { share, notice }
}

/// "N secrets of namespace a (n), b (m) and K more not asked about yet".
fn carried(namespaces: &BTreeMap<String, usize>) -> String {
    let total: usize = namespaces.values().sum();
    let mut named: Vec<String> = namespaces
        .iter()
        .take(NAMED)
        .map(|(ns, n)| format!("{ns} ({n})"))
        .collect();
    if namespaces.len() > NAMED {
        named.push(format!("{} more", namespaces.len() - NAMED));
    }
    let plural = if namespaces.len() == 1 { "" } else { "s" };
    format!(
        "{total} secrets of namespace{plural} {} not asked about yet",
        named.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level::{Info, Warn};

    /// A pass (took ms, period s, secrets, requests) and what judging it
    /// after the row before gives (share, level and a part of the notice).
    type Row = (
        u64,
        u64,
        usize,
        u64,
        f64,
        Option<(log::Level, &'static str)>,
    );

    #[test]
    fn passes_in_turn_are_judged_against_their_period_and_said_once_per_change() {
        let rows: [Row; 11] = [
            (840, 4, 954, 956, 0.21, None),
            // Exactly the period still fits.
            (2000, 2, 954, 956, 1.0, None),
            (
                6220,
                2,
                954,
                956,
                3.11,
                Some((
                    Warn,
                    "reloader pass took 6220 ms, 311% of --reloader-run-period: 954 secrets, \
                     956 requests at 6.5 ms each on average, asked one at a time; passes now \
                     run back to back, so a change may wait about two passes. Lengthen \
                     --reloader-run-period, list directories with --list-secret-metadata \
                     (OpenBao), or split the namespaces between reloaders (--namespaces)",
                )),
            ),
            // Still too long: said already.
            (6000, 2, 954, 956, 3.0, None),
            (
                1500,
                2,
                954,
                956,
                0.75,
                Some((
                    Info,
                    "reloader pass fits in its period again: 1500 ms, 75% of \
                     --reloader-run-period",
                )),
            ),
            (1500, 2, 954, 956, 0.75, None),
            (2001, 2, 10, 12, 1.0005, Some((Warn, "2001 ms, 100% of"))),
            (1000, 2, 10, 12, 0.5, Some((Info, "1000 ms, 50% of"))),
            // A pass of no request counts as one.
            (
                3000,
                2,
                0,
                0,
                1.5,
                Some((Warn, "0 requests at 3000.0 ms each")),
            ),
            (
                1000,
                60,
                5000,
                5002,
                1000.0 / 60_000.0,
                Some((Info, "2% of")),
            ),
            (
                90_000,
                60,
                5000,
                5002,
                1.5,
                Some((Warn, "5002 requests at 18.0 ms each")),
            ),
        ];
        let mut previous = false;
        let none = BTreeMap::new();
        for (took, period, secrets, requests, share, notice) in rows {
            let pass = Pass {
                took: Duration::from_millis(took),
                period: Duration::from_secs(period),
                secrets,
                requests,
                carried: &none,
                late: 0,
            };
            let cost = judge(&pass, previous);
            assert!((cost.share - share).abs() < 1e-9, "{pass:?}: {cost:?}");
            match (&cost.notice, notice) {
                (None, None) => {}
                (Some((level, text)), Some((want_level, part))) => {
                    assert_eq!(*level, want_level, "{pass:?}: {text}");
                    assert!(text.contains(part), "{pass:?}: {text}");
                }
                _ => panic!("{pass:?} after {previous}: {cost:?}, wanted {notice:?}"),
            }
            previous = pass.over();
        }
    }

    #[test]
    fn a_pass_that_leaves_namespaces_for_the_next_says_which_once() {
        let evil: BTreeMap<String, usize> = [("evil".to_string(), 4321)].into();
        let many: BTreeMap<String, usize> = (0..7).map(|i| (format!("ns{i}"), 10)).collect();
        let none = BTreeMap::new();
        let pass = |carried| Pass {
            took: Duration::from_millis(2010),
            period: Duration::from_secs(2),
            secrets: 5001,
            requests: 700,
            carried,
            late: 0,
        };
        let cost = judge(&pass(&evil), false);
        let (level, text) = cost.notice.unwrap();
        assert_eq!(level, Warn);
        assert!(
            text.starts_with(
                "reloader pass ran out of --reloader-run-period with 4321 secrets of namespace \
                 evil (4321) not asked about yet: 5001 secrets, 700 requests at 2.9 ms each"
            ),
            "{text}"
        );
        assert!(text.contains("every other namespace is checked afresh each pass"));
        assert!(judge(&pass(&evil), true).notice.is_none(), "said once");
        let (_, text) = judge(&pass(&many), false).notice.unwrap();
        assert!(
            text.contains(
                "70 secrets of namespaces ns0 (10), ns1 (10), ns2 (10), ns3 (10), ns4 (10), 2 more"
            ),
            "{text}"
        );
        // The pass that finishes what was left is still over; the one
        // after, within the period, fits again.
        let finishing = Pass {
            took: Duration::from_millis(1990),
            late: 1,
            ..pass(&none)
        };
        assert!(judge(&finishing, true).notice.is_none());
        let fits = Pass {
            late: 0,
            ..finishing
        };
        assert_eq!(judge(&fits, true).notice.unwrap().0, Info);
    }
}
