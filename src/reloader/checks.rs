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
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The least time between two checks of one workload.
pub const GAP: Duration = Duration::from_secs(10);

/// What is known of each workload's check-now requests.
#[derive(Debug, Default)]
pub(super) struct Checks {
    /// Per workload: the check-now digest last served (or first seen), and
    /// when it was last checked.
    served: HashMap<WorkloadId, (Option<u64>, Option<Instant>)>,
    /// The lookups of checks not done yet, by namespace.
    pub(super) cycles: Cycles,
}

impl Checks {
    /// The workloads asking for a check at `now`: their check-now digest is
    /// not the one last served and their last check is [`GAP`] ago. A
    /// workload seen for the first time has nothing to serve: its
    /// annotation was there before (or it is new, and its first pass
    /// records its baseline). Forgets the workloads gone.
    pub(super) fn due(&mut self, index: &Index, now: Instant) -> Vec<WorkloadId> {
        self.served.retain(|id, _| index.contains_key(id));
        let mut due = Vec::new();
        for entry in index.values() {
            let Some((digest, checked)) = self.served.get(&entry.id) else {
                self.served
                    .insert(entry.id.clone(), (entry.check_now, None));
                continue;
            };
            let waited = checked.is_none_or(|at| now.saturating_duration_since(at) >= GAP);
            if *digest != entry.check_now && waited {
                due.push(entry.id.clone());
            }
        }
        due
    }

    /// `id` was checked at `now`, for the request `digest`.
    pub(super) fn served(&mut self, id: &WorkloadId, digest: Option<u64>, now: Instant) {
        self.served.insert(id.clone(), (digest, Some(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(checks.due(&index, at(0)).is_empty());
        let ask = |index: &mut Index, digest| {
            let mut changed = app.clone();
            changed.check_now = Some(digest);
            index.apply(crate::collector::index::Update::Stored(
                app.id.clone(),
                Some(changed),
            ));
        };
        ask(&mut index, 2);
        assert_eq!(names(checks.due(&index, at(1))), ["app"]);
        checks.served(&app.id, Some(2), at(1));
        assert!(checks.due(&index, at(2)).is_empty(), "served");
        // Asked again a second later: served when the gap ends.
        ask(&mut index, 3);
        assert!(checks.due(&index, at(2)).is_empty(), "within the gap");
        assert!(checks.due(&index, at(10)).is_empty(), "still within it");
        assert_eq!(names(checks.due(&index, at(11))), ["app"]);
        checks.served(&app.id, Some(3), at(11));
        // A workload gone is forgotten.
        ask(&mut index, 4);
        index.apply(crate::collector::index::Update::Deleted(app.id.clone()));
        assert!(checks.due(&index, at(30)).is_empty());
        assert!(checks.served.is_empty());
    }
}
