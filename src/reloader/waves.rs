//! Waves (`--max-concurrent-rollouts`, `--canary-rollouts`) with a health
//! gate: at most N workloads this daemon rolled out are in progress at
//! once, cluster-wide; for each new secret version the first canaries roll
//! alone and the rest wait until they are done; a rollout of a version
//! that fails holds every pending rollout of that version. A changed
//! workload that must wait is *pending*: its recorded versions are simply
//! not the current ones yet, so nothing is stored for it, and a restart or
//! a failover keeps every pending rollout. What caused a rollout is in its
//! state ([`State::cause`]), so a restart keeps every hold too. Pending
//! ones go oldest change first, then by kind, namespace and name, so a
//! restart does not reshuffle them. A workload whose metadata says
//! `<prefix>/reload-paused: "true"` waits the same way until that goes,
//! with one Warning Event; so does one outside its reload window
//! ([`super::windows`]) until it opens. Renewals of dynamic secrets count
//! as in progress and wait for a slot, a pause or a window only while
//! their deadline is after the next pass ([`renewal_turn`]): expiring
//! credentials are worse than a busy cluster.
//!
//! [`State::cause`]: crate::policy::state::State::cause

use super::decide::{decide, LookupFn};
use super::{Reloader, Report, Running};
use crate::collector::index::Index;
use crate::kube::Kube;
use crate::policy::progress;
use crate::policy::workload::{Entry, WorkloadId};
use std::collections::{HashMap, HashSet};

/// A secret version: its key and version number.
pub(super) type Cause = (String, u64);

/// How waves roll out: all zero is no waves (every change at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--max-concurrent-rollouts` (0: no limit).
    pub max_concurrent: usize,
    /// `--canary-rollouts`: per new secret version, how many roll alone
    /// first (0: none).
    pub canaries: usize,
    /// `--rollout-timeout` in seconds: a rollout of any kind fails past
    /// it (a Deployment may say so sooner itself).
    pub timeout: u64,
}

impl Settings {
    /// Whether changes may have to wait for others' rollouts.
    fn on(&self) -> bool {
        self.max_concurrent > 0 || self.canaries > 0
    }
}

/// A changed workload waiting for its turn: its oldest change's time (as
/// [`instant_key`] orders it), which workload, the first pass of its
/// namespace's cycle, and the secret versions it would roll out for.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Waiting {
    pub(super) oldest: (String, String),
    pub(super) id: WorkloadId,
    pub(super) began: u64,
    pub(super) causes: Vec<Cause>,
}

/// Why a changed workload is not rolled out now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// For its turn ([`Reloader::release`]): its oldest change's time, as
    /// [`instant_key`] orders, and the versions it would roll out for.
    Turn((String, String), Vec<Cause>),
    /// Its rollouts are paused.
    Paused,
    /// For its reload window ([`super::windows`]), which opens then (Unix
    /// seconds; `None`: not in the next two weeks).
    Window(Option<i64>),
}

/// A Vault `created_time` (RFC 3339, UTC, 0 to 9 fraction digits) as a key
/// that orders like the instant: the seconds, then the fraction padded.
pub(super) fn instant_key(created: &str) -> (String, String) {
    let text = created.trim_end_matches('Z');
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    (seconds.to_string(), format!("{fraction:0<9}"))
}

/// Where a rollout this daemon made stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Done, or never rolled out by this daemon.
    Done,
    /// In progress.
    Rolling,
    /// Failed: its status says so, or it took longer than the timeout.
    Failed,
}

/// Where `entry`'s last rollout by this daemon stands at `now` (Unix
/// seconds): failed when its status says so or past `timeout`.
pub fn progress(entry: &Entry, now: u64, timeout: u64) -> Progress {
    let Some(last) = entry.state.as_ref().and_then(|s| s.last_reload) else {
        return Progress::Done;
    };
    // The timeout bounds every kind: a Deployment's own deadline is the
    // tenant's to set, and must not let it hold a slot for ever.
    match (entry.rolling, entry.failed) {
        (_, true) => Progress::Failed,
        (true, false) if progress::timed_out(last, now, timeout) => Progress::Failed,
        (true, false) => Progress::Rolling,
        (false, false) => Progress::Done,
    }
}

/// How many workloads rolled out by this daemon are in progress at `now`
/// (a failed one is not: it would hold a slot for ever).
pub fn in_progress(index: &Index, now: u64, timeout: u64) -> usize {
    index
        .values()
        .filter(|e| progress(e, now, timeout) == Progress::Rolling)
        .count()
}

/// The rollouts made for one secret version.
#[derive(Debug, Default)]
pub(super) struct Rollouts {
    /// When each began (Unix seconds), and whether it is in progress, in
    /// start order.
    began: Vec<(u64, bool)>,
    /// One that failed, if any.
    failed: Option<WorkloadId>,
}

/// The rollouts made for each secret version, from what caused each
/// workload's last rollout ([`State::cause`](crate::policy::state::State)).
pub(super) fn rollouts(index: &Index, now: u64, timeout: u64) -> HashMap<Cause, Rollouts> {
    let mut known: HashMap<Cause, Rollouts> = HashMap::new();
    for entry in index.values() {
        let Some(state) = &entry.state else { continue };
        let (Some(last), progress) = (state.last_reload, progress(entry, now, timeout)) else {
            continue;
        };
        for key in &state.cause {
            let Some(Some(version)) = state.versions.get(key) else {
                continue;
            };
            let rollouts = known.entry((key.clone(), version.number)).or_default();
            rollouts.began.push((last, progress == Progress::Rolling));
            if progress == Progress::Failed {
                rollouts.failed.get_or_insert_with(|| entry.id.clone());
            }
        }
    }
    // In start order once, for every verdict; those started later this
    // pass are pushed at the end, in order too.
    known.values_mut().for_each(|r| r.began.sort());
    known
}

/// Whether a waiting workload may go now, and if not why.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It may go (when there is a free slot).
    Go,
    /// A rollout of one of its versions failed: the failed workload and
    /// the version.
    Held(WorkloadId, Cause),
    /// The canaries of one of its versions are still rolling.
    AfterCanaries,
}

/// Whether a workload rolling out for `causes` may go, given the rollouts
/// made for each version, `canaries` per version, and the versions whose
/// hold an operator `released`. A version none of whose rollouts failed
/// lets it go once its first `canaries` rollouts (by start) are done, or
/// while fewer have started (it is one of them).
pub(super) fn verdict(
    causes: &[Cause],
    known: &HashMap<Cause, Rollouts>,
    canaries: usize,
    released: &HashSet<Cause>,
) -> Verdict {
    let mut verdict = Verdict::Go;
    for cause in causes.iter().filter(|c| !released.contains(*c)) {
        let Some(rollouts) = known.get(cause) else {
            continue;
        };
        if let Some(failed) = &rollouts.failed {
            return Verdict::Held(failed.clone(), cause.clone());
        }
        let began = &rollouts.began;
        let first = &began[..canaries.min(began.len())];
        if began.len() >= canaries && first.iter().any(|(_, rolling)| *rolling) {
            verdict = Verdict::AfterCanaries;
        }
    }
    verdict
}

/// What a due renewal does while rollouts must wait.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RenewalTurn {
    /// Nothing holds it.
    Go,
    /// It waits for a later pass, still before its deadline.
    Wait,
    /// It goes although rollouts must wait (said why): its deadline would
    /// pass first, and expiring credentials are worse than a busy cluster.
    Forced(&'static str),
}

/// A renewal's turn when `blocked` says why rollouts must wait now, if they
/// must: it waits while its `deadline` comes after the next pass (at
/// `next_pass`), Unix seconds.
pub(super) fn renewal_turn(
    blocked: Option<&'static str>,
    deadline: u64,
    next_pass: u64,
) -> RenewalTurn {
    match blocked {
        None => RenewalTurn::Go,
        Some(_) if deadline > next_pass => RenewalTurn::Wait,
        Some(why) => RenewalTurn::Forced(why),
    }
}

impl Reloader {
    /// Whether the due `renewal` of `entry` goes now: a pause, a closed
    /// reload window and full slots hold it until its deadline would pass,
    /// then it goes with a Warning Event `RenewalForced`.
    pub(super) fn renewal_goes(
        &mut self,
        kube: &mut Kube,
        index: &Index,
        entry: &Entry,
        renewal: &super::dynamic::Renewal,
    ) -> bool {
        let max = self.waves.max_concurrent;
        let now = super::unix_now();
        let closed = self
            .window(entry)
            .and_then(|w| super::windows::closed(w, now));
        let blocked = match (entry.paused, closed) {
            (true, _) => Some("its rollouts are paused (reload-paused)"),
            (false, Some(_)) => Some("its reload window is closed"),
            _ if max > 0 && self.in_progress(index) >= max => {
                Some("--max-concurrent-rollouts are in progress")
            }
            _ => None,
        };
        let next_pass = now.saturating_add(self.renewals.settings.period.as_secs().max(1));
        match renewal_turn(blocked, renewal.deadline, next_pass) {
            RenewalTurn::Go => true,
            RenewalTurn::Wait => false,
            RenewalTurn::Forced(why) => {
                let message = format!(
                    "its dynamic secrets are renewed now although {why}: the renewal's \
                     deadline comes before the next pass"
                );
                let event = (true, "RenewalForced", message.as_str());
                super::notices::tell(kube, entry, event);
                true
            }
        }
    }

    /// Whether `entry`, decided on `lookup` now, would be rolled out for a
    /// secret change while it must wait: paused, its reload window closed,
    /// or waves are on (then for [`Reloader::release`], with what it is
    /// ordered by).
    pub(super) fn must_wait(&self, entry: &Entry, lookup: &LookupFn) -> Option<Wait> {
        let window = self.window(entry);
        if self.dry_run || (!self.waves.on() && !entry.paused && window.is_none()) {
            return None;
        }
        let now = super::unix_now();
        let budget = entry.state_budget;
        let stored = entry.state.as_ref();
        let decision = decide(
            &entry.refs,
            stored,
            lookup,
            entry.min_reload_interval,
            now,
            budget,
            entry.refs_unknown(),
        );
        let rolls = decision.rolls_out() && decision.deferred_until.is_none();
        let oldest = decision
            .changes
            .iter()
            .map(|c| instant_key(&c.new.created))
            .min();
        let oldest = oldest.filter(|_| rolls && decision.held_by.is_empty())?;
        if entry.paused {
            return Some(Wait::Paused);
        }
        if let Some(wait) = window.and_then(|w| super::windows::closed(w, now)) {
            return Some(wait);
        }
        let causes = decision.changes.iter();
        let causes = causes.map(|c| (c.secret.key(), c.new.number)).collect();
        self.waves.on().then_some(Wait::Turn(oldest, causes))
    }

    /// One warning and one Warning Event for a paused workload whose change
    /// waits, until it is resumed.
    pub(super) fn report_paused(&mut self, kube: &mut Kube, entry: &Entry) {
        if !self.said_paused.news(entry.id.clone(), ()) {
            return;
        }
        let message = format!(
            "a secret it uses has a new version; its rollout waits while {}{} is \"true\"",
            entry.prefix,
            crate::policy::workload::PAUSED
        );
        let event = (true, "RolloutPaused", message.as_str());
        super::notices::tell(kube, entry, event);
    }

    /// One warning and one Warning Event `RolloutHeld` for a workload held
    /// by `failed`'s rollout of `cause`, until what holds it changes.
    fn report_held(
        &mut self,
        kube: &mut Kube,
        entry: &Entry,
        (failed, cause): (WorkloadId, Cause),
    ) {
        let said = (failed, cause);
        if !self.said_held.news(entry.id.clone(), said.clone()) {
            return;
        }
        let ((failed, (key, number)), prefix) = (said, entry.prefix);
        let hold = crate::policy::workload::ROLLOUT_HOLD;
        let message = format!(
            "its rollout for {key} v{number} is held: the rollout of {failed} for that version \
             failed; it goes when {failed} is healthy, when a newer version is written, or with \
             {prefix}{hold}: release on this workload"
        );
        let event = (true, "RolloutHeld", message.as_str());
        super::notices::tell(kube, entry, event);
    }

    /// How many workloads rolled out by this daemon are in progress now.
    pub fn in_progress(&self, index: &Index) -> usize {
        in_progress(index, super::unix_now(), self.waves.timeout)
    }

    /// Rolls out the waiting workloads whose turn it is, oldest change
    /// first: those no failed rollout holds and no canary keeps waiting,
    /// while there are free slots. The others stay pending (counted in
    /// `report`, the held ones apart).
    pub(super) fn release(
        &mut self,
        kube: &mut Kube,
        index: &mut Index,
        report: &mut Report,
        running: &mut Running,
    ) {
        let mut waiting = std::mem::take(&mut running.waiting);
        if waiting.is_empty() {
            return;
        }
        waiting.sort();
        let now = super::unix_now();
        let mut known = rollouts(index, now, self.waves.timeout);
        self.release_holds(index, &waiting, &known);
        let busy = in_progress(index, now, self.waves.timeout);
        let mut free = match self.waves.max_concurrent {
            0 => usize::MAX,
            n => n.saturating_sub(busy),
        };
        let mut go = Vec::new();
        let none = HashSet::new();
        for waits in waiting {
            let canaries = self.waves.canaries;
            let released = self.released.get(&waits.id.namespace).unwrap_or(&none);
            match verdict(&waits.causes, &known, canaries, released) {
                Verdict::Held(failed, cause) => {
                    if let Some(entry) = index.get(&waits.id) {
                        self.report_held(kube, entry, (failed, cause));
                    }
                    report.held += 1;
                }
                Verdict::Go if free > 0 => {
                    free -= 1;
                    for cause in &waits.causes {
                        known
                            .entry(cause.clone())
                            .or_default()
                            .began
                            .push((now, true));
                    }
                    go.push(waits);
                    continue;
                }
                Verdict::Go | Verdict::AfterCanaries => report.pending += 1,
            }
            running.pending.push(waits.id);
        }
        if report.pending > 0 {
            log::info!(
                "{} rollouts pending: {busy} in progress, at most {} at once \
                 (--max-concurrent-rollouts), {} canaries per version (--canary-rollouts)",
                report.pending,
                self.waves.max_concurrent,
                self.waves.canaries
            );
        }
        running.releasing = true;
        for waits in go {
            self.settle(kube, index, (&waits.id, waits.began), None, report, running);
        }
        running.releasing = false;
    }

    /// Lets go, in its namespace, the versions held by a failed rollout
    /// that a waiting workload's `<prefix>/rollout-hold: release` names (a
    /// tenant releases its own workloads, not another's that share the
    /// secret); forgets released versions no workload of the namespace
    /// waits for any more, so what is kept stays small.
    fn release_holds(
        &mut self,
        index: &Index,
        waiting: &[Waiting],
        known: &HashMap<Cause, Rollouts>,
    ) {
        let waited: HashSet<(&str, &Cause)> = waiting
            .iter()
            .flat_map(|w| w.causes.iter().map(|c| (w.id.namespace.as_str(), c)))
            .collect();
        self.released.retain(|namespace, causes| {
            causes.retain(|cause| waited.contains(&(namespace.as_str(), cause)));
            !causes.is_empty()
        });
        for waits in waiting {
            if index
                .get(&waits.id)
                .is_none_or(|e| e.releases_hold.is_none())
            {
                continue;
            }
            for cause in &waits.causes {
                let failed = known.get(cause).and_then(|r| r.failed.as_ref());
                let namespace = waits.id.namespace.clone();
                if let Some(failed) = failed {
                    let released = self.released.entry(namespace).or_default();
                    if released.insert(cause.clone()) {
                        log::warn!(
                            "{}: releases the rollouts of {} v{} in its namespace, held since \
                             {failed}'s failed",
                            waits.id,
                            cause.0,
                            cause.1
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::workload::Kind;
    use crate::reloader::fixtures::entry;

    #[test]
    fn created_times_order_like_instants_whatever_their_fraction() {
        let mut times = [
            "2026-12-06T13:30:24.28Z",
            "2026-12-06T13:30:24.284061274Z",
            "2026-12-06T13:30:24Z",
            "2026-12-06T13:30:23.9Z",
        ];
        times.sort_by_key(|t| instant_key(t));
        assert_eq!(
            times,
            [
                "2026-12-06T13:30:23.9Z",
                "2026-12-06T13:30:24Z",
                "2026-12-06T13:30:24.28Z",
                "2026-12-06T13:30:24.284061274Z"
            ]
        );
    }

    #[test]
    fn only_workloads_this_daemon_rolled_count_as_in_progress() {
        let state = |last_reload| crate::policy::state::State {
            last_reload,
            ..Default::default()
        };
        let mut ours = entry("ours", &[], None);
        (ours.rolling, ours.state) = (true, Some(state(Some(1))));
        let mut done = entry("done", &[], None);
        done.state = Some(state(Some(1)));
        let mut theirs = entry("theirs", &[], None);
        (theirs.rolling, theirs.state) = (true, Some(state(None)));
        let index: Index = [ours, done, theirs].into_iter().collect();
        assert_eq!(in_progress(&index, 2, 600), 1);
    }

    /// A fake API server whose PATCH stores the patched annotations on a
    /// Deployment using `secret/data/NAME` (`secret/data/shared` for names
    /// beginning `s-`), its rollout in progress.
    fn fake_kube() -> crate::io::http::fake_server::FakeServer {
        use crate::io::http::fake_server::{self, Reply};
        fake_server::start(|r| {
            if r.method != "PATCH" {
                return Reply::json(201, "{}");
            }
            let name = r.path.rsplit('/').next().unwrap_or_default().to_string();
            let secret = match name.starts_with("s-") {
                true => "shared",
                false => &name,
            };
            let mut patch: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            // A merge patch's null removes the annotation.
            let annotations = patch["metadata"]["annotations"].as_object_mut().unwrap();
            annotations.retain(|_, value| !value.is_null());
            let object = serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "uid": "u", "resourceVersion": "2",
                             "generation": 2, "annotations": patch["metadata"]["annotations"]},
                "spec": {"template": {"metadata": {"annotations": {
                    "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}},
                    "spec": {"containers": [{"name": "c", "env": [
                        {"name": "P", "value": format!("vault:secret/data/{secret}#k")}]}]}}},
                "status": {"observedGeneration": 1}
            });
            Reply::json(200, &object.to_string())
        })
    }

    /// A fake Vault: every secret at version 2, `b`'s written first.
    fn fake_vault() -> crate::io::http::fake_server::FakeServer {
        use crate::io::http::fake_server::{self, Reply};
        fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, r#"{"data":{"ttl":3600}}"#),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(
                200,
                r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#,
            ),
            p => {
                let created = if p.ends_with("/b") {
                    "2026-01-01T00:00:00Z"
                } else {
                    "2026-01-02T00:00:00Z"
                };
                let body = format!(
                    r#"{{"data":{{"current_version":2,"versions":{{"2":{{"created_time":"{created}"}}}}}}}}"#
                );
                Reply::json(200, &body)
            }
        })
    }

    /// A Deployment `ns/NAME` using `secret/data/NAME`, rolled out before
    /// at its version 1.
    fn workload(name: &str) -> Entry {
        let path = format!("secret/data/{name}");
        let mut e = entry(name, &[&path], None);
        let version = crate::reloader::fixtures::version(1, "t1");
        let mut state = crate::reloader::fixtures::state(&[(&path, Some(version))]);
        state.last_reload = Some(1);
        e.state = Some(state);
        e
    }

    #[test]
    fn pending_rollouts_wait_for_a_free_slot_oldest_change_first() {
        use crate::collector::steps::Unattended;
        let vault = fake_vault();
        let kube_server = fake_kube();
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        let mut reloader = Reloader::new((client, false), None, None, false).with_waves(Settings {
            max_concurrent: 1,
            ..Settings::default()
        });
        let mut index: Index = [workload("a"), workload("b")].into_iter().collect();
        let rolled = |report: &Report| -> Vec<String> {
            report.reloaded.iter().map(|id| id.name.clone()).collect()
        };
        // One slot: b, the older change, goes; a is pending.
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(
            (rolled(&report), report.pending),
            (vec!["b".to_string()], 1)
        );
        assert_eq!(
            in_progress(&index, crate::reloader::unix_now(), 600),
            1,
            "b rolls"
        );
        // While b rolls, a waits and nothing is written for it.
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((rolled(&report), report.pending), (vec![], 1));
        assert_eq!(
            kube_server.hits("/apis/apps/v1/namespaces/ns/deployments/a"),
            0
        );
        // b is done: a goes.
        let mut b = index.get(&workload("b").id).unwrap().clone();
        b.rolling = false;
        index.apply(crate::collector::index::Update::Stored(
            b.id.clone(),
            Some(b),
        ));
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(
            (rolled(&report), report.pending),
            (vec!["a".to_string()], 0)
        );
    }

    #[test]
    fn a_workload_outside_its_window_waits_with_one_event_until_it_opens() {
        use crate::collector::steps::Unattended;
        use crate::policy::window;
        let vault = fake_vault();
        let kube_server = fake_kube();
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        // The default window opens in two hours, for an hour: closed now.
        let hour = crate::reloader::unix_now() / 3600 % 24;
        let closed = format!("* {:02}:00-{:02}:00 UTC", (hour + 2) % 24, (hour + 3) % 24);
        let mut reloader = Reloader::new((client, false), None, None, false)
            .with_reload_window(Some(window::parse(&closed).unwrap()));
        let mut index: Index = [workload("a")].into_iter().collect();
        for _ in 0..2 {
            let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
            assert!(report.reloaded.is_empty());
            assert_eq!(report.pending, 1);
        }
        let events: Vec<_> = kube_server
            .requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/namespaces/ns/events")
            .map(|r| String::from_utf8(r.body).unwrap())
            .collect();
        assert_eq!(events.len(), 1, "one Event: {events:?}");
        assert!(events[0].contains("RolloutWaitsForWindow") && events[0].contains("opens at"));
        assert_eq!(
            kube_server.hits("/apis/apps/v1/namespaces/ns/deployments/a"),
            0
        );
        // Its own window, open now, wins over the default: it goes.
        let mut open = workload("a");
        open.window = Some(Box::new(window::parse("* 00:00-24:00 UTC").unwrap()));
        index.apply(crate::collector::index::Update::Stored(
            open.id.clone(),
            Some(open),
        ));
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        let rolled: Vec<&str> = report.reloaded.iter().map(|id| id.name.as_str()).collect();
        assert_eq!(rolled, ["a"]);
    }

    #[test]
    fn a_version_holds_after_a_failure_and_waits_for_its_canaries() {
        let rolled = |began: &[(u64, bool)], failed: bool| Rollouts {
            began: began.to_vec(),
            failed: failed.then(|| entry("bad", &[], None).id),
        };
        let v = |n: u64| ("vault:secret/data/db".to_string(), n);
        let none = HashSet::new();
        let bad = entry("bad", &[], None).id;
        // name, rollouts of v2, canaries, released, verdict
        let rows = [
            ("none yet: a canary", None, 1, false, Verdict::Go),
            (
                "canary rolling",
                Some(rolled(&[(5, true)], false)),
                1,
                false,
                Verdict::AfterCanaries,
            ),
            (
                "canary done",
                Some(rolled(&[(5, false)], false)),
                1,
                false,
                Verdict::Go,
            ),
            (
                "second canary",
                Some(rolled(&[(5, true)], false)),
                2,
                false,
                Verdict::Go,
            ),
            (
                "a later wave rolling",
                Some(rolled(&[(5, false), (9, true)], false)),
                1,
                false,
                Verdict::Go,
            ),
            (
                "no canaries",
                Some(rolled(&[(5, true)], false)),
                0,
                false,
                Verdict::Go,
            ),
            (
                "failed",
                Some(rolled(&[(5, false)], true)),
                0,
                false,
                Verdict::Held(bad.clone(), v(2)),
            ),
            (
                "failed, released",
                Some(rolled(&[(5, true)], true)),
                1,
                true,
                Verdict::Go,
            ),
        ];
        for (what, rollouts, canaries, released, want) in rows {
            let known: HashMap<Cause, Rollouts> = rollouts.map(|r| (v(2), r)).into_iter().collect();
            let released: HashSet<Cause> = match released {
                true => [v(2)].into(),
                false => none.clone(),
            };
            assert_eq!(
                verdict(&[v(2)], &known, canaries, &released),
                want,
                "{what}"
            );
            assert_eq!(
                verdict(&[v(3)], &known, canaries, &none),
                Verdict::Go,
                "{what}: v3"
            );
        }
    }

    #[test]
    fn a_renewal_waits_for_its_turn_until_its_deadline_would_pass() {
        let why = "--max-concurrent-rollouts are in progress";
        // name, blocked, deadline, next pass at 100, turn
        let rows = [
            ("nothing holds it", None, 50, RenewalTurn::Go),
            ("blocked, time left", Some(why), 101, RenewalTurn::Wait),
            (
                "blocked, deadline before the next pass",
                Some(why),
                99,
                RenewalTurn::Forced(why),
            ),
            (
                "blocked, deadline at the next pass",
                Some(why),
                100,
                RenewalTurn::Forced(why),
            ),
        ];
        for (what, blocked, deadline, want) in rows {
            assert_eq!(renewal_turn(blocked, deadline, 100), want, "{what}");
        }
    }

    #[test]
    fn a_renewal_waits_for_a_slot_then_goes_with_an_event_before_its_deadline() {
        use crate::collector::steps::Unattended;
        use crate::io::http::fake_server::{self, Reply};
        use crate::policy::renewal::FirstSight;
        use crate::policy::workload::{Dynamic, MaxAge};
        let vault = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, r#"{"data":{"ttl":3600}}"#),
            p if p.starts_with("/v1/sys/internal/ui/mounts/database") => Reply::json(
                200,
                r#"{"data":{"path":"database/","type":"database","options":null}}"#,
            ),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(
                200,
                r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#,
            ),
            _ => Reply::json(
                200,
                r#"{"data":{"current_version":2,"versions":{"2":{"created_time":"t2"}}}}"#,
            ),
        });
        let kube_server = fake_kube();
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        let one = Settings {
            max_concurrent: 1,
            ..Settings::default()
        };
        let mut reloader = Reloader::new((client, false), None, None, false)
            .with_waves(one)
            .with_dynamic(super::super::DynamicSettings {
                default_max_age: None,
                max_rollouts: None,
                period: std::time::Duration::from_secs(2),
                per_namespace_hour: 3600,
            });
        let now = crate::reloader::unix_now();
        // In progress, up to date: it takes the one slot.
        let mut busy = workload("busy");
        busy.rolling = true;
        let state = busy.state.as_mut().unwrap();
        state
            .versions
            .values_mut()
            .for_each(|v| *v = Some(crate::reloader::fixtures::version(2, "t2")));
        state.last_reload = Some(now);
        // Renewed every 20 s at 67%; its 90% deadline 18 s after the last.
        let renewing = |last: u64| {
            let mut e = entry("renewing", &["database/creds/app"], None);
            e.dynamic = Some(Dynamic {
                max_age: MaxAge::Fixed(std::time::Duration::from_secs(20)),
                percent: 67,
                first_sight: FirstSight::Rollout,
                daemon_mode: false,
                written: Vec::new(),
            });
            e.state = Some(crate::policy::state::State {
                last_reload: Some(last),
                ..Default::default()
            });
            e
        };
        let patches = || kube_server.hits("/apis/apps/v1/namespaces/ns/deployments/renewing");
        let events = || kube_server.hits("/api/v1/namespaces/ns/events");
        // Due, its deadline 3 s away, after the next pass: it waits.
        let mut index: Index = [busy.clone(), renewing(now - 15)].into_iter().collect();
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((rolled(&report), report.pending, patches()), (vec![], 1, 0));
        // Its deadline 1 s away, before the next pass: it goes, said once.
        let mut index: Index = [busy, renewing(now - 17)].into_iter().collect();
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(
            (rolled(&report), report.pending, patches()),
            (vec!["renewing"], 0, 1)
        );
        assert_eq!(events(), 2, "RenewalForced, then SecretsReloaded");
    }

    #[test]
    fn a_rollout_fails_by_its_status_or_past_the_timeout() {
        let rolled = |kind, rolling, failed, last: Option<u64>| {
            let mut e = entry("w", &[], None);
            (e.id.kind, e.rolling, e.failed) = (kind, rolling, failed);
            e.state = last.map(|last| crate::policy::state::State {
                last_reload: Some(last),
                ..Default::default()
            });
            e
        };
        let (d, s) = (Kind::Deployment, Kind::StatefulSet);
        // name, entry, progress at 1000 with a timeout of 600
        let rows = [
            (
                "not rolled by the daemon",
                rolled(d, true, false, None),
                Progress::Done,
            ),
            ("done", rolled(s, false, false, Some(100)), Progress::Done),
            (
                "rolling",
                rolled(s, true, false, Some(500)),
                Progress::Rolling,
            ),
            (
                "past the timeout",
                rolled(s, true, false, Some(399)),
                Progress::Failed,
            ),
            (
                "a Deployment whose own deadline is huge (tenant input): the timeout bounds it",
                rolled(d, true, false, Some(1)),
                Progress::Failed,
            ),
            (
                "a Deployment within the timeout",
                rolled(d, true, false, Some(500)),
                Progress::Rolling,
            ),
            (
                "a last rollout far in the future (an edited state) cannot hold a slot",
                rolled(s, true, false, Some(u64::MAX)),
                Progress::Failed,
            ),
            (
                "past its deadline",
                rolled(d, true, true, Some(900)),
                Progress::Failed,
            ),
            (
                "failed, then rolled no more",
                rolled(d, false, true, Some(900)),
                Progress::Failed,
            ),
        ];
        for (what, entry, want) in rows {
            assert_eq!(progress(&entry, 1000, 600), want, "{what}");
        }
    }

    /// A fake Vault where `secret/data/shared` is at the version `version`
    /// holds (written at the same time whatever the version).
    fn shared_vault(
        version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> crate::io::http::fake_server::FakeServer {
        use crate::io::http::fake_server::{self, Reply};
        fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, r#"{"data":{"ttl":3600}}"#),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(
                200,
                r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#,
            ),
            _ => {
                let n = version.load(std::sync::atomic::Ordering::SeqCst);
                let body = format!(
                    r#"{{"data":{{"current_version":{n},"versions":{{"{n}":{{"created_time":"2026-01-02T00:00:00Z"}}}}}}}}"#
                );
                Reply::json(200, &body)
            }
        })
    }

    /// Workloads `s-a`, `s-b`, `s-c` and (in namespace `other`) `s-d`
    /// sharing `secret/data/shared`, at version 2 in Vault, 1 in their
    /// state, after a pass with one canary: `s-a` rolled alone, and its
    /// rollout then failed.
    fn held_after_a_failed_canary() -> (
        Reloader,
        Index,
        Kube,
        [crate::io::http::fake_server::FakeServer; 2],
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        use crate::collector::steps::Unattended;
        let version = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2));
        let vault = shared_vault(version.clone());
        let kube_server = fake_kube();
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        let canaries = Settings {
            canaries: 1,
            timeout: 600,
            ..Settings::default()
        };
        let mut reloader = Reloader::new((client, false), None, None, false).with_waves(canaries);
        let names = ["s-a", "s-b", "s-c"];
        let mut index: Index = names.iter().map(|n| sharing(n)).collect();
        let mut other = sharing("s-d");
        other.id.namespace = "other".into();
        index.apply(crate::collector::index::Update::Stored(
            other.id.clone(),
            Some(other),
        ));
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((rolled(&report), report.pending), (vec!["s-a"], 3));
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        let waits = (rolled(&report), report.pending, report.held);
        assert_eq!(waits, (vec![], 3, 0), "while the canary rolls");
        let mut canary = index.get(&sharing("s-a").id).unwrap().clone();
        canary.failed = true;
        index.apply(crate::collector::index::Update::Stored(
            canary.id.clone(),
            Some(canary),
        ));
        (reloader, index, kube, [vault, kube_server], version)
    }

    /// `ns/NAME` using `secret/data/shared`, rolled out before at version 1.
    fn sharing(name: &str) -> Entry {
        let path = "secret/data/shared";
        let mut e = entry(name, &[path], None);
        let version = crate::reloader::fixtures::version(1, "t1");
        let mut state = crate::reloader::fixtures::state(&[(path, Some(version))]);
        state.last_reload = Some(1);
        e.state = Some(state);
        e
    }

    fn rolled(report: &Report) -> Vec<&str> {
        report.reloaded.iter().map(|id| id.name.as_str()).collect()
    }

    #[test]
    fn a_failed_canary_holds_the_others_once_each_until_one_is_released() {
        use crate::collector::steps::Unattended;
        let (mut reloader, mut index, mut kube, [_vault, kube_server], _) =
            held_after_a_failed_canary();
        let events = || kube_server.hits("/api/v1/namespaces/ns/events");
        let before = events();
        for _ in 0..2 {
            let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
            let held = (rolled(&report), report.pending, report.held);
            assert_eq!(held, (vec![], 0, 3));
        }
        assert_eq!(events() - before, 2, "one RolloutHeld Event each");
        assert_eq!(kube_server.hits("/api/v1/namespaces/other/events"), 1);
        assert_eq!(
            kube_server.hits("/apis/apps/v1/namespaces/ns/deployments/s-b"),
            0
        );
        let mut released = index.get(&sharing("s-b").id).unwrap().clone();
        released.releases_hold = Some(crate::policy::workload::PREFIXES[0]);
        index.apply(crate::collector::index::Update::Stored(
            released.id.clone(),
            Some(released),
        ));
        // Released in its namespace only: another tenant's stays held.
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((rolled(&report), report.held), (vec!["s-b", "s-c"], 1));
        let patches = kube_server.requests();
        let patch = patches.iter().find(|r| r.path.ends_with("/s-b")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
        let hold = "secrets-reloader.security.bank-vaults.io/rollout-hold";
        assert!(body["metadata"]["annotations"][hold].is_null());
        assert!(
            body["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .contains_key(hold),
            "removed"
        );
    }

    #[test]
    fn a_newer_version_of_the_secret_is_not_held_by_the_failed_one() {
        use crate::collector::steps::Unattended;
        let (mut reloader, mut index, mut kube, _servers, version) = held_after_a_failed_canary();
        version.store(3, std::sync::atomic::Ordering::SeqCst);
        // v3 has a canary of its own (the failed workload, first by name);
        // the others wait for it, and none is held.
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        let waits = (rolled(&report), report.pending, report.held);
        assert_eq!(waits, (vec!["s-a"], 3, 0));
    }

    #[test]
    fn a_paused_workload_waits_with_one_event_until_resumed() {
        use crate::collector::steps::Unattended;
        let vault = fake_vault();
        let kube_server = fake_kube();
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        let mut reloader = Reloader::new((client, false), None, None, false);
        let mut paused = workload("a");
        paused.paused = true;
        let mut index: Index = [paused.clone()].into_iter().collect();
        let events = || kube_server.hits("/api/v1/namespaces/ns/events");
        for _ in 0..2 {
            let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
            assert!(report.reloaded.is_empty());
            assert_eq!(report.pending, 1);
        }
        assert_eq!(events(), 1, "one RolloutPaused Event");
        assert_eq!(
            kube_server.hits("/apis/apps/v1/namespaces/ns/deployments/a"),
            0
        );
        paused.paused = false;
        index.apply(crate::collector::index::Update::Stored(
            paused.id.clone(),
            Some(paused),
        ));
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        let rolled: Vec<&str> = report.reloaded.iter().map(|id| id.name.as_str()).collect();
        assert_eq!(rolled, ["a"]);
    }
}
