//! The index of opted-in workloads, with one writer: everything that
//! changes it — the collector's lists and watch events, the answers to the
//! reloader's own patches and reads — is a [`Update`] that goes through
//! [`Index::apply`], as kube-runtime's reflector store has one `Writer`.
//! The passes read it.

use crate::policy::workload::{Entry, Kind, WorkloadId};
use std::collections::{BTreeMap, BTreeSet};

/// What the API server said about workloads: the one way the index changes.
// An update is applied as soon as it is made, never kept: its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Update {
    /// A workload as stored now, with its entry; `None` when it is not
    /// (or no longer) watched: opted out, excluded, or unreadable.
    Stored(WorkloadId, Option<Entry>),
    /// A workload that was deleted.
    Deleted(WorkloadId),
    /// A scope listed anew: `entries` replace every workload of `kind` in
    /// `namespace` (`None`: in all namespaces).
    Listed {
        /// The kind listed.
        kind: Kind,
        /// The namespace listed, or all.
        namespace: Option<String>,
        /// The opted-in workloads the listing found, by workload.
        entries: BTreeMap<WorkloadId, Entry>,
    },
}

/// The opted-in workloads and what they use, by workload.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: BTreeMap<WorkloadId, Entry>,
    /// Workloads whose check-now annotation took a new value since
    /// [`Index::take_asked`] (not at first sight: it was there before).
    asked: BTreeSet<WorkloadId>,
}

/// Whether a scope of `kind` in `namespace` (`None`: all) holds `id`.
pub fn holds(kind: Kind, namespace: Option<&str>, id: &WorkloadId) -> bool {
    id.kind == kind && namespace.is_none_or(|ns| ns == id.namespace)
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Applies one change: the only way the index is written.
    pub fn apply(&mut self, change: Update) {
        match change {
            Update::Stored(id, Some(entry)) => {
                self.note_asked(&id, &entry);
                self.entries.insert(id, entry);
            }
            Update::Stored(id, None) | Update::Deleted(id) => {
                self.entries.remove(&id);
                self.asked.remove(&id);
            }
            Update::Listed {
                kind,
                namespace,
                mut entries,
            } => {
                let namespace = namespace.as_deref();
                for (id, entry) in &entries {
                    self.note_asked(id, entry);
                }
                self.entries.retain(|id, _| !holds(kind, namespace, id));
                let entries_now = &entries;
                self.asked
                    .retain(|id| !holds(kind, namespace, id) || entries_now.contains_key(id));
                // Moved over whole, never copied: at 10,000 workloads a copy
                // is megabytes the allocator keeps.
                self.entries.append(&mut entries);
            }
        }
    }

    /// Notes a check-now request: `entry` replaces a known workload whose
    /// check-now value differs.
    fn note_asked(&mut self, id: &WorkloadId, entry: &Entry) {
        let before = self.entries.get(id).map(|old| old.check_now);
        if before.is_some_and(|old| old != entry.check_now) && entry.check_now.is_some() {
            self.asked.insert(id.clone());
        }
    }

    /// The workloads that asked for a check since the last call.
    pub fn take_asked(&mut self) -> BTreeSet<WorkloadId> {
        std::mem::take(&mut self.asked)
    }

    /// The entry of workload `id`.
    pub fn get(&self, id: &WorkloadId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Whether workload `id` is in the index.
    pub fn contains_key(&self, id: &WorkloadId) -> bool {
        self.entries.contains_key(id)
    }

    /// How many workloads it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The workloads, in order.
    pub fn keys(&self) -> impl Iterator<Item = &WorkloadId> {
        self.entries.keys()
    }

    /// The entries, in the order of their workloads.
    pub fn values(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}

impl FromIterator<Entry> for Index {
    /// An index of `entries`, each applied as stored.
    fn from_iter<T: IntoIterator<Item = Entry>>(entries: T) -> Index {
        let mut index = Index::new();
        for entry in entries {
            index.apply(Update::Stored(entry.id.clone(), Some(entry)));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, namespace: &str, name: &str) -> Entry {
        let id = WorkloadId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        Entry {
            id,
            resource_version: "1".into(),
            uid: "u".into(),
            prefix: crate::policy::workload::PREFIXES[0],
            reload_count: 0,
            refs: vec![],
            min_reload_interval: None,
            vault_addr: None,
            state: None,
            state_budget: 0,
            unwatched: 0,
            refused: Default::default(),
            dynamic: None,
            check_now: None,
            paused: false,
            window: None,
            rolling: false,
            failed: false,
            releases_hold: None,
        }
    }

    fn names(index: &Index) -> Vec<String> {
        index.keys().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_listing_replaces_its_scope_and_nothing_else() {
        let mut index: Index = [
            entry(Kind::Deployment, "a", "old"),
            entry(Kind::Deployment, "b", "other-namespace"),
            entry(Kind::StatefulSet, "a", "other-kind"),
        ]
        .into_iter()
        .collect();
        index.apply(Update::Listed {
            kind: Kind::Deployment,
            namespace: Some("a".into()),
            entries: [entry(Kind::Deployment, "a", "new")]
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect(),
        });
        let want = [
            "Deployment a/new",
            "Deployment b/other-namespace",
            "StatefulSet a/other-kind",
        ];
        assert_eq!(names(&index), want);
        // A cluster-wide listing replaces the kind in every namespace.
        index.apply(Update::Listed {
            kind: Kind::Deployment,
            namespace: None,
            entries: BTreeMap::new(),
        });
        assert_eq!(names(&index), ["StatefulSet a/other-kind"]);
    }

    #[test]
    fn a_workload_stored_without_an_entry_or_deleted_leaves() {
        let mut index: Index = [entry(Kind::Deployment, "a", "app")].into_iter().collect();
        let id = index.keys().next().unwrap().clone();
        index.apply(Update::Stored(id.clone(), None));
        assert!(index.is_empty());
        index.apply(Update::Stored(
            id.clone(),
            Some(entry(Kind::Deployment, "a", "app")),
        ));
        assert!(index.contains_key(&id));
        index.apply(Update::Deleted(id.clone()));
        assert!(index.get(&id).is_none());
    }
}
