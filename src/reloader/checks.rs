//! Check now: whoever can annotate a workload asks for its secrets to be
//! looked up at once rather than at the next pass, with any new value of
//! `<prefix>/check-now` on its metadata (the RBAC the cluster already has
//! decides who may). At most one check per workload per [`GAP`]; a request
//! within the gap is served when it ends, never dropped. Checks are served
//! like a pass — namespaces in turn, within a time budget, a namespace not
//! done going on at the next check — with lookups of their own, so a check
//! never makes the next pass take a lookup stale.

use super::fair::Cycles;
use crate::collector::index::Index;
use crate::policy::workload::WorkloadId;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The least time between two checks of one workload.
pub const GAP: Duration = Duration::from_secs(10);

/// The check-now requests not served yet, and the recent checks.
#[derive(Debug, Default)]
pub(super) struct Checks {
    /// Workloads that asked ([`Index::take_asked`]) and were not checked
    /// since.
    waiting: BTreeSet<WorkloadId>,
    /// When workloads were checked, within the last [`GAP`].
    last: HashMap<WorkloadId, Instant>,
    /// The lookups of checks not done yet, by namespace.
    pub(super) cycles: Cycles,
}

impl Checks {
    /// The workloads to check at `now`: those that asked (the index tells,
    /// so nothing is scanned while none did) and were not checked within
    /// [`GAP`]. Forgets the workloads gone.
    pub(super) fn due(&mut self, index: &mut Index, now: Instant) -> Vec<WorkloadId> {
        self.waiting.extend(index.take_asked());
        self.waiting.retain(|id| index.contains_key(id));
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < GAP);
        let recent = |id: &&WorkloadId| self.last.contains_key(*id);
        self.waiting
            .iter()
            .filter(|id| !recent(id))
            .cloned()
            .collect()
    }

    /// `id` was checked at `now`.
    pub(super) fn served(&mut self, id: &WorkloadId, now: Instant) {
        self.waiting.remove(id);
        self.last.insert(id.clone(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::index::Update;
    use crate::reloader::fixtures::entry;

    #[test]
    fn a_new_value_is_checked_at_most_once_per_gap_and_never_dropped() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut app = entry("app", &["s/data/a"], None);
        app.check_now = Some(1);
        let mut index: Index = [app.clone()].into_iter().collect();
        let mut checks = Checks::default();
        let names =
            |ids: Vec<WorkloadId>| -> Vec<String> { ids.into_iter().map(|id| id.name).collect() };
        // First sight: the annotation was there already.
        assert!(checks.due(&mut index, at(0)).is_empty());
        let ask = |index: &mut Index, digest| {
            let mut changed = app.clone();
            changed.check_now = Some(digest);
            index.apply(Update::Stored(app.id.clone(), Some(changed)));
        };
        ask(&mut index, 2);
        assert_eq!(names(checks.due(&mut index, at(1))), ["app"]);
        checks.served(&app.id, at(1));
        assert!(checks.due(&mut index, at(2)).is_empty(), "served");
        // Asked again a second later: served when the gap ends.
        ask(&mut index, 3);
        assert!(checks.due(&mut index, at(2)).is_empty(), "within the gap");
        assert!(checks.due(&mut index, at(10)).is_empty(), "still within it");
        assert_eq!(names(checks.due(&mut index, at(11))), ["app"]);
        checks.served(&app.id, at(11));
        // The same value again, or the annotation removed, asks nothing.
        ask(&mut index, 3);
        let mut removed = app.clone();
        removed.check_now = None;
        index.apply(Update::Stored(app.id.clone(), Some(removed)));
        assert!(checks.due(&mut index, at(30)).is_empty());
        // A workload gone is forgotten.
        ask(&mut index, 4);
        index.apply(Update::Deleted(app.id.clone()));
        assert!(checks.due(&mut index, at(40)).is_empty());
        assert!(checks.waiting.is_empty() && checks.last.is_empty());
    }
}
