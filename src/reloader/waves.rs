//! Waves (`--max-concurrent-rollouts`): at most N workloads this daemon
//! rolled out are in progress at once, cluster-wide. A changed workload
//! that must wait is *pending*: its recorded versions are simply not the
//! current ones yet, so nothing is stored for it, and a restart or a
//! failover keeps every pending rollout. Pending ones go oldest change
//! first, then by kind, namespace and name, so a restart does not reshuffle
//! them. Renewals of dynamic secrets are not held (their deadline matters
//! more) but count as in progress. A workload whose metadata says
//! `<prefix>/reload-paused: "true"` waits the same way until that goes,
//! with one Warning Event; so does one outside its reload window
//! ([`super::windows`]) until it opens.

use super::decide::{decide, LookupFn};
use super::{Reloader, Report, Running};
use crate::collector::index::Index;
use crate::kube::Kube;
use crate::policy::workload::{Entry, WorkloadId};

/// A changed workload waiting for a free slot: its oldest change's time
/// (as [`instant_key`] orders it), then which workload, with the first pass
/// of its namespace's cycle.
pub(super) type Waiting = ((String, String), WorkloadId, u64);

/// Why a changed workload is not rolled out now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// For a free slot; its oldest change's time, as [`instant_key`] orders.
    Slot((String, String)),
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

/// How many workloads rolled out by this daemon (they carry a last
/// rollout in their state) are in progress.
pub fn in_progress(index: &Index) -> usize {
    index
        .values()
        .filter(|e| e.rolling && e.state.as_ref().is_some_and(|s| s.last_reload.is_some()))
        .count()
}

impl Reloader {
    /// Whether `entry`, decided on `lookup` now, would be rolled out for a
    /// secret change while it must wait: paused, its reload window closed,
    /// or waves are on (then for [`Reloader::release`], with the key it is
    /// ordered by).
    pub(super) fn must_wait(&self, entry: &Entry, lookup: &LookupFn) -> Option<Wait> {
        let window = self.window(entry);
        if self.dry_run || (self.max_concurrent == 0 && !entry.paused && window.is_none()) {
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
        (self.max_concurrent > 0).then_some(Wait::Slot(oldest))
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
        log::warn!("{}: {message}", entry.id);
        let event = (true, "RolloutPaused", message.as_str());
        super::notices::record_event(kube, &entry.id, &entry.uid, event);
    }

    /// Rolls out the waiting workloads that fit in the free slots, oldest
    /// change first; the others stay pending (counted in `report`).
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
        let busy = in_progress(index);
        let free = self.max_concurrent.saturating_sub(busy);
        report.pending += waiting.len().saturating_sub(free);
        if waiting.len() > free {
            log::info!(
                "{} rollouts pending: {busy} in progress, at most {} at once \
                 (--max-concurrent-rollouts)",
                waiting.len() - free,
                self.max_concurrent
            );
        }
        let left = waiting.split_off(free.min(waiting.len()));
        running
            .pending
            .extend(left.into_iter().map(|(_, id, _)| id));
        running.releasing = true;
        for (_, id, began) in waiting {
            self.settle(kube, index, (&id, began), None, report, running);
        }
        running.releasing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(in_progress(&index), 1);
    }

    /// A fake API server whose PATCH stores the patched annotations on a
    /// Deployment using `secret/data/NAME`, its rollout in progress.
    fn fake_kube() -> crate::io::http::fake_server::FakeServer {
        use crate::io::http::fake_server::{self, Reply};
        fake_server::start(|r| {
            if r.method != "PATCH" {
                return Reply::json(201, "{}");
            }
            let name = r.path.rsplit('/').next().unwrap_or_default().to_string();
            let patch: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let object = serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "uid": "u", "resourceVersion": "2",
                             "generation": 2, "annotations": patch["metadata"]["annotations"]},
                "spec": {"template": {"metadata": {"annotations": {
                    "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}},
                    "spec": {"containers": [{"name": "c", "env": [
                        {"name": "P", "value": format!("vault:secret/data/{name}#k")}]}]}}},
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
        let mut reloader = Reloader::new((client, false), None, None, false).with_max_concurrent(1);
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
        assert_eq!(in_progress(&index), 1, "b rolls");
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
