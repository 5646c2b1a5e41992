//! When a workload using dynamic secrets is rolled out again, before the
//! credentials its pods got at start expire: pure functions of its last
//! rollout, the lifetime of those credentials and its UID. No I/O, no clock:
//! `now` is always an argument (Unix seconds).

use std::time::Duration;

/// No renewal comes later than this share of the lifetime, in percent.
pub const DEADLINE_PERCENT: u8 = 90;

/// The renewal percentage when the workload does not set one.
pub const DEFAULT_PERCENT: u8 = 67;

/// How a workload seen for the first time is treated: its pods' age is
/// unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FirstSight {
    /// Roll it out within its jitter window (spread, not at once).
    #[default]
    Rollout,
    /// Its pods are fresh: record now as its last rollout.
    Baseline,
}

/// What drives one workload's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The lifetime of its credentials (the smallest over its dynamic
    /// references).
    pub lifetime: Duration,
    /// When to renew, in percent of the lifetime (1–90).
    pub percent: u8,
    /// Its first-sight rule.
    pub first_sight: FirstSight,
    /// Its `min-reload-interval`, which may delay a renewal up to the
    /// deadline.
    pub min_interval: Option<Duration>,
    /// Its jitter in seconds ([`jitter`]).
    pub jitter: u64,
}

/// What the state annotation says about its rollouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// The last rollout, for any reason (Unix seconds).
    pub last_rollout: Option<u64>,
    /// When it was first seen without a known last rollout (Unix seconds).
    pub first_seen: Option<u64>,
}

/// What must be stored now so that a restart does not move the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A baseline: the pods are taken as rolled out at this time.
    LastRollout(u64),
    /// First seen at this time, pods of unknown age.
    FirstSeen(u64),
}

/// When a workload is to be rolled out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// From this time on the renewal is due.
    pub due: u64,
    /// The latest acceptable time.
    pub deadline: u64,
    /// What to store now, if anything.
    pub record: Option<Record>,
    /// The rollout is the first since the workload was seen (its pods'
    /// age is unknown).
    pub first_sight: bool,
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The jitter window in whole seconds: a tenth of the lifetime.
pub fn window(lifetime: Duration) -> u64 {
    lifetime.as_secs() / 10
}

/// The workload's jitter: whole seconds in `[0, window)` from a stable hash
/// of its UID, so that a fleet created at once, or a restart of the daemon,
/// does not roll everything in the same second; 0 when the window is empty.
pub fn jitter(uid: &str, lifetime: Duration) -> u64 {
    match window(lifetime) {
        0 => 0,
        window => fnv1a(uid.as_bytes()) % window,
    }
}

/// `lifetime × percent / 100` in whole seconds, saturating.
fn share(lifetime: Duration, percent: u8) -> u64 {
    let seconds = u128::from(lifetime.as_secs()) * u128::from(percent) / 100;
    u64::try_from(seconds).unwrap_or(u64::MAX)
}

/// The schedule of a workload whose stored rollouts are `clock`.
///
/// With a last rollout `r`: due at `r + lifetime × percent − jitter` (the
/// jitter capped at half the renewal time, so that a renewal never comes
/// right after the last), delayed by `min-reload-interval` but never past
/// the deadline `r + 90% of the lifetime`. Without one, first seen at `f`:
/// due at `f + jitter`, deadline `f + window`. Seen now for the first time:
/// `Baseline` records now as the last rollout, `Rollout` records now as the
/// first sight. A time in the future counts as now (a clock step or an
/// edited annotation must not hold a renewal back for ever).
pub fn schedule(clock: Clock, settings: &Settings, now: u64) -> Schedule {
    match (clock.last_rollout, clock.first_seen, settings.first_sight) {
        (Some(last), _, _) => after_rollout(last.min(now), settings, None),
        (None, Some(first), _) => first_seen(first.min(now), settings, None),
        (None, None, FirstSight::Baseline) => {
            after_rollout(now, settings, Some(Record::LastRollout(now)))
        }
        (None, None, FirstSight::Rollout) => {
            first_seen(now, settings, Some(Record::FirstSeen(now)))
        }
    }
}

fn after_rollout(last: u64, settings: &Settings, record: Option<Record>) -> Schedule {
    let renew = share(settings.lifetime, settings.percent).max(1);
    let limit = share(settings.lifetime, DEADLINE_PERCENT).max(renew);
    let deadline = last.saturating_add(limit);
    let mut due = last.saturating_add(renew - settings.jitter.min(renew / 2));
    if let Some(interval) = settings.min_interval {
        due = due.max(last.saturating_add(interval.as_secs()));
    }
    Schedule {
        due: due.min(deadline),
        deadline,
        record,
        first_sight: false,
    }
}

fn first_seen(first: u64, settings: &Settings, record: Option<Record>) -> Schedule {
    let window = window(settings.lifetime).max(settings.jitter);
    Schedule {
        due: first.saturating_add(settings.jitter),
        deadline: first.saturating_add(window),
        record,
        first_sight: true,
    }
}

/// How far into its lifetime a rollout at `now` comes, in whole percent
/// (for the Event).
pub fn percent_at(last_rollout: u64, now: u64, lifetime: Duration) -> u64 {
    let lifetime = u128::from(lifetime.as_secs().max(1));
    let elapsed = u128::from(now.saturating_sub(last_rollout));
    u64::try_from(elapsed * 100 / lifetime).unwrap_or(u64::MAX)
}

/// How long after the end of its lifetime a rollout at `now` comes; `None`
/// while the lifetime that began at `last_rollout` lasts.
pub fn overdue(last_rollout: u64, now: u64, lifetime: Duration) -> Option<Duration> {
    let ended = last_rollout.saturating_add(lifetime.as_secs());
    (now > ended).then(|| Duration::from_secs(now - ended))
}

/// Whether `min-reload-interval` is longer than the renewal time, so that it
/// would push every renewal to the deadline (worth a Warning Event).
pub fn interval_too_long(settings: &Settings) -> bool {
    settings
        .min_interval
        .is_some_and(|interval| interval.as_secs() > share(settings.lifetime, settings.percent))
}

/// A duration as its Event shows it, in whole seconds: `20s`, `1h`, `1h30m`,
/// `2m5s`.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let parts = [
        (seconds / 3600, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text
    }
}

/// A workload whose renewal is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<T> {
    /// Which workload.
    pub key: T,
    /// Its schedule's deadline (Unix seconds).
    pub deadline: u64,
    /// Its namespace: a capped budget is shared between namespaces.
    pub namespace: String,
}

/// Which of the due renewals roll out in this pass, earliest deadline first.
///
/// With `max` (`--max-rollouts-per-pass`): at most that many, shared
/// between namespaces: each namespace's earliest deadline first, the
/// namespaces in turn (the one with the earliest deadline first), so one
/// namespace with many short lifetimes cannot keep another's renewal past
/// its deadline. Without: every
/// one whose deadline comes before the next pass (`now + period`), and of
/// the `k` others a share `⌈k × period / slack⌉`, where `slack` is the time
/// left until the earliest of their deadlines: enough that each is rolled
/// out inside its window, few enough that a fleet due at once is spread.
pub fn choose<T>(mut due: Vec<Candidate<T>>, now: u64, period: u64, max: Option<usize>) -> Vec<T> {
    due.sort_by_key(|c| c.deadline);
    let count = match max {
        Some(max) => return in_turn(due).take(max).map(|c| c.key).collect(),
        None => {
            let next_pass = now.saturating_add(period.max(1));
            let urgent = due.iter().take_while(|c| c.deadline <= next_pass).count();
            let others = (due.len() - urgent) as u64;
            let share = match due.get(urgent) {
                Some(first) => {
                    let slack = first.deadline - now;
                    others.saturating_mul(period.max(1)).div_ceil(slack)
                }
                None => 0,
            };
            urgent + usize::try_from(share.min(others)).unwrap_or(usize::MAX)
        }
    };
    due.into_iter().take(count).map(|c| c.key).collect()
}

/// `--max-renewals-per-namespace-hour` by default: one a second on
/// average, far above what real lifetimes need (a hundred workloads of 10
/// minute credentials make 900 an hour).
pub const PER_NAMESPACE_HOUR_DEFAULT: usize = 3600;

/// Renewal rollouts of each namespace in the last hour, for
/// `--max-renewals-per-namespace-hour`.
#[derive(Debug, Default)]
pub struct Hourly {
    made: std::collections::HashMap<String, std::collections::VecDeque<u64>>,
}

impl Hourly {
    /// Of `due`, those that keep each namespace within `cap` renewal
    /// rollouts an hour at `now` (each namespace's earliest deadlines
    /// first), and those held back.
    pub fn within<T>(
        &mut self,
        mut due: Vec<Candidate<T>>,
        now: u64,
        cap: usize,
    ) -> (Vec<Candidate<T>>, Vec<Candidate<T>>) {
        self.made.retain(|_, times| {
            times.retain(|at| now.saturating_sub(*at) < 3600);
            !times.is_empty()
        });
        due.sort_by_key(|c| c.deadline);
        let mut taken: std::collections::HashMap<String, usize> = Default::default();
        due.into_iter().partition(|c| {
            let made = self.made.get(&c.namespace).map_or(0, |t| t.len());
            let count = taken.entry(c.namespace.clone()).or_default();
            *count += 1;
            made + *count <= cap
        })
    }

    /// Notes a renewal rollout in `namespace` at `now`.
    pub fn made(&mut self, namespace: &str, now: u64) {
        self.made
            .entry(namespace.to_string())
            .or_default()
            .push_back(now);
    }
}

/// `due`, sorted by deadline, namespace by namespace in turn: the first of
/// each namespace (in the order of their earliest deadlines), then the
/// second of each, and so on.
fn in_turn<T>(due: Vec<Candidate<T>>) -> impl Iterator<Item = Candidate<T>> {
    let mut rounds: Vec<Vec<Candidate<T>>> = Vec::new();
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for candidate in due {
        let round = taken.entry(candidate.namespace.clone()).or_default();
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(candidate);
        *round += 1;
    }
    rounds.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn settings(lifetime: u64, percent: u8, jitter: u64) -> Settings {
        Settings {
            lifetime: Duration::from_secs(lifetime),
            percent,
            first_sight: FirstSight::Rollout,
            min_interval: None,
            jitter,
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // From the FNV reference test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jitter_is_stable_and_inside_a_tenth_of_the_lifetime() {
        let hour = Duration::from_secs(3600);
        let uid = "0b7c6a3e-5d1f-4c2a-9f7e-2a1b3c4d5e6f";
        assert_eq!(jitter(uid, hour), jitter(uid, hour));
        assert_eq!(jitter(uid, Duration::from_secs(9)), 0);
        let spread: std::collections::HashSet<u64> = (0..200)
            .map(|i| jitter(&format!("uid-{i}"), hour))
            .collect();
        assert!(spread.iter().all(|j| *j < 360), "{spread:?}");
        assert!(spread.len() > 100, "200 UIDs gave {} jitters", spread.len());
    }

    #[test]
    fn due_times_after_a_rollout() {
        let last = NOW - 100;
        let interval = |s: &mut Settings, secs| s.min_interval = Some(Duration::from_secs(secs));
        // name, settings, min interval, due, deadline
        #[rustfmt::skip]
        let cases: Vec<(&str, Settings, Option<u64>, u64, u64)> = vec![
            ("67% of 20s, no jitter", settings(20, 67, 0), None, last + 13, last + 18),
            ("67% of 20s, jitter 1", settings(20, 67, 1), None, last + 12, last + 18),
            ("67% of 1h, jitter 359", settings(3600, 67, 359), None, last + 2412 - 359, last + 3240),
            ("90% is the deadline", settings(3600, 90, 0), None, last + 3240, last + 3240),
            ("1%: jitter capped at half the renewal time", settings(3600, 1, 300), None, last + 18, last + 3240),
            ("min interval delays", settings(3600, 50, 0), Some(2000), last + 2000, last + 3240),
            ("min interval stops at the deadline", settings(3600, 50, 0), Some(86400), last + 3240, last + 3240),
            ("min interval shorter: no effect", settings(3600, 50, 0), Some(60), last + 1800, last + 3240),
            ("a tiny lifetime still moves on", settings(1, 67, 0), None, last + 1, last + 1),
        ];
        for (name, mut s, min, due, deadline) in cases {
            if let Some(min) = min {
                interval(&mut s, min);
            }
            let clock = Clock {
                last_rollout: Some(last),
                first_seen: Some(1),
            };
            let got = schedule(clock, &s, NOW);
            assert_eq!((got.due, got.deadline), (due, deadline), "{name}");
            assert_eq!((got.record, got.first_sight), (None, false), "{name}");
        }
    }

    #[test]
    fn sums_saturate() {
        let late = Clock {
            last_rollout: Some(u64::MAX - 10),
            first_seen: None,
        };
        let got = schedule(late, &settings(u64::MAX, 90, 0), u64::MAX);
        assert_eq!((got.due, got.deadline), (u64::MAX, u64::MAX));
    }

    #[test]
    fn first_sight_spreads_or_takes_a_baseline() {
        let mut s = settings(20, 67, 1);
        let fresh = Clock::default();
        let got = schedule(fresh, &s, NOW);
        assert_eq!((got.due, got.deadline), (NOW + 1, NOW + 2));
        assert_eq!(
            (got.record, got.first_sight),
            (Some(Record::FirstSeen(NOW)), true)
        );
        // Restarted later: the recorded first sight keeps the due time.
        let seen = Clock {
            last_rollout: None,
            first_seen: Some(NOW),
        };
        let again = schedule(seen, &s, NOW + 5);
        assert_eq!((again.due, again.record), (NOW + 1, None));
        s.first_sight = FirstSight::Baseline;
        let got = schedule(fresh, &s, NOW);
        assert_eq!((got.due, got.deadline), (NOW + 12, NOW + 18));
        assert_eq!(
            (got.record, got.first_sight),
            (Some(Record::LastRollout(NOW)), false)
        );
    }

    #[test]
    fn times_in_the_future_count_as_now() {
        let s = settings(100, 50, 0);
        let ahead = Clock {
            last_rollout: Some(u64::MAX),
            first_seen: None,
        };
        assert_eq!(schedule(ahead, &s, NOW).due, NOW + 50);
        let seen_ahead = Clock {
            last_rollout: None,
            first_seen: Some(NOW + 1000),
        };
        assert_eq!(schedule(seen_ahead, &s, NOW).due, NOW);
    }

    #[test]
    fn percent_and_interval_warnings() {
        assert_eq!(percent_at(NOW - 13, NOW, Duration::from_secs(20)), 65);
        assert_eq!(percent_at(NOW, NOW - 5, Duration::ZERO), 0);
        let mut s = settings(3600, 67, 0);
        assert!(!interval_too_long(&s));
        s.min_interval = Some(Duration::from_secs(2412));
        assert!(!interval_too_long(&s));
        s.min_interval = Some(Duration::from_secs(2413));
        assert!(interval_too_long(&s));
    }

    #[test]
    fn overdue_counts_from_the_end_of_the_lifetime() {
        let life = Duration::from_secs(20);
        assert_eq!(overdue(NOW - 13, NOW, life), None, "inside it");
        assert_eq!(overdue(NOW - 20, NOW, life), None, "at its very end");
        assert_eq!(overdue(NOW - 21, NOW, life), Some(Duration::from_secs(1)));
        assert_eq!(
            overdue(NOW, NOW - 5, life),
            None,
            "a last rollout in the future"
        );
        assert_eq!(overdue(u64::MAX, NOW, life), None, "sums saturate");
    }

    #[test]
    fn durations_read_like_annotations() {
        for (seconds, text) in [
            (0, "0s"),
            (20, "20s"),
            (3600, "1h"),
            (5400, "1h30m"),
            (125, "2m5s"),
            (90061, "25h1m1s"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(seconds)), text);
        }
    }

    #[test]
    fn choice_is_earliest_deadline_first_and_spread() {
        let c = |key: &'static str, deadline: u64| Candidate {
            key,
            deadline,
            namespace: "ns".into(),
        };
        // name, candidates, period, max, chosen
        type Case = (
            &'static str,
            Vec<Candidate<&'static str>>,
            u64,
            Option<usize>,
            Vec<&'static str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("nothing due", vec![], 60, None, vec![]),
            ("a cap takes the earliest deadlines", vec![c("a", NOW + 900), c("b", NOW + 100), c("c", NOW + 500)], 60, Some(2), vec!["b", "c"]),
            ("a cap above the count", vec![c("a", NOW + 900)], 60, Some(5), vec!["a"]),
            ("a cap of zero holds all", vec![c("a", NOW)], 60, Some(0), vec![]),
            ("urgent ones all go", vec![c("a", NOW + 60), c("b", NOW), c("c", NOW + 30)], 60, None, vec!["b", "c", "a"]),
            ("a share of the others", vec![c("a", NOW + 100), c("b", NOW + 100), c("c", NOW + 100), c("d", NOW + 100)], 50, None, vec!["a", "b"]),
            ("at least one of the others", vec![c("a", NOW + 1000), c("b", NOW + 1000)], 1, None, vec!["a"]),
            ("urgent plus a share", vec![c("u", NOW + 1), c("a", NOW + 10), c("b", NOW + 10)], 5, None, vec!["u", "a"]),
            ("a deadline passed long ago", vec![c("a", 5), c("b", NOW + 1000)], 1, None, vec!["a", "b"]),
        ];
        for (name, due, period, max, want) in cases {
            assert_eq!(choose(due, NOW, period, max), want, "{name}");
        }
    }

    #[test]
    fn a_capped_budget_is_shared_between_namespaces() {
        // `evil` has 50 renewals due with deadlines before everyone else's.
        let mut due: Vec<Candidate<String>> = (0..50)
            .map(|i| Candidate {
                key: format!("evil-{i}"),
                deadline: NOW + 9,
                namespace: "evil".into(),
            })
            .collect();
        for (ns, deadline) in [("good", NOW + 60), ("other", NOW + 30)] {
            due.push(Candidate {
                key: format!("{ns}-0"),
                deadline,
                namespace: ns.into(),
            });
        }
        due.push(Candidate {
            key: "other-1".into(),
            deadline: NOW + 20,
            namespace: "other".into(),
        });
        assert_eq!(
            choose(due.clone(), NOW, 60, Some(3)),
            ["evil-0", "other-1", "good-0"]
        );
        assert_eq!(
            choose(due.clone(), NOW, 60, Some(5)),
            ["evil-0", "other-1", "good-0", "evil-1", "other-0"]
        );
        // Without a cap every urgent one goes, whatever its namespace.
        assert_eq!(choose(due, NOW, 60, None).len(), 53);
    }

    #[test]
    fn each_namespace_has_its_hourly_renewals() {
        let c = |key: &'static str, ns: &str, deadline: u64| Candidate {
            key,
            deadline,
            namespace: ns.into(),
        };
        let mut hourly = Hourly::default();
        for at in [NOW - 3601, NOW - 100, NOW - 50] {
            hourly.made("evil", at);
        }
        let due = vec![
            c("e1", "evil", NOW + 30),
            c("e0", "evil", NOW + 10),
            c("e2", "evil", NOW + 40),
            c("g0", "good", NOW + 60),
        ];
        let keys =
            |v: Vec<Candidate<&'static str>>| v.into_iter().map(|c| c.key).collect::<Vec<_>>();
        // Two made in the last hour (the third is older), a cap of 3: one more.
        let (go, held) = hourly.within(due.clone(), NOW, 3);
        assert_eq!((keys(go), keys(held)), (vec!["e0", "g0"], vec!["e1", "e2"]));
        // An hour later the old ones no longer count.
        let (go, held) = hourly.within(due, NOW + 3600, 3);
        assert_eq!((keys(go).len(), keys(held).len()), (4, 0));
        assert!(hourly.made.is_empty(), "forgotten once out of the hour");
    }

    #[test]
    fn twenty_due_at_once_are_spread_over_their_window() {
        let mut left: Vec<Candidate<usize>> = (0..20)
            .map(|key| Candidate {
                key,
                deadline: NOW + 10,
                namespace: "ns".into(),
            })
            .collect();
        let mut passes = Vec::new();
        for pass in 0..10 {
            let now = NOW + pass;
            let chosen = choose(left.clone(), now, 1, None);
            left.retain(|c| !chosen.contains(&c.key));
            passes.push(chosen.len());
        }
        assert!(left.is_empty(), "{passes:?}");
        assert!(passes.iter().all(|n| *n < 20 / 2), "{passes:?}");
    }
}
