//! The index of opted-in workloads, with one writer: everything that
//! changes it — the collector's lists and watch events, the answers to the
//! reloader's own patches and reads — is a [`Update`] that goes through
//! [`Index::apply`], as kube-runtime's reflector store has one `Writer`.
//! The passes read it.
//!
//! It also holds the references of the ConfigMaps (and Secrets) the
//! workloads name, and joins them into each naming workload's entry
//! whenever either changes, so an entry's `refs` are always the whole set
//! the webhook injects.

use crate::policy::sources::{self, Held};
use crate::policy::workload::{Entry, Kind, Source, WorkloadId};
use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet};

/// A ConfigMap or Secret: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceId {
    /// ConfigMap or Secret.
    pub source: Source,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What the API server said about workloads, ConfigMaps and Secrets: the one way
/// the index changes.
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
    /// A ConfigMap or Secret as stored now; `None`: deleted or not found.
    /// Kept only while some workload names it.
    Source(SourceId, Option<Held>),
    /// ConfigMaps or Secrets listed anew in `namespace` (`None`: all):
    /// every named one missing from `found` is missing from the cluster.
    SourcesListed {
        /// ConfigMaps or Secrets.
        source: Source,
        /// The namespace listed, or all.
        namespace: Option<String>,
        /// The named objects the listing found.
        found: BTreeMap<SourceId, Held>,
    },
}

/// The opted-in workloads and what they use, by workload.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: BTreeMap<WorkloadId, Entry>,
    /// Workloads whose check-now annotation took a new value since
    /// [`Index::take_asked`] (not at first sight: it was there before).
    asked: BTreeSet<WorkloadId>,
    /// The objects some entry names: who names them, what was read.
    objects: BTreeMap<SourceId, Followed>,
    /// Warnings of joins not taken yet, by workload (the latest only).
    said: BTreeMap<WorkloadId, Vec<String>>,
}

/// An object some entry names, kept in one map with its users so that
/// its id is held once.
#[derive(Clone, Debug)]
struct Followed {
    /// What was read of it: `None` until read, `Some(None)` when missing.
    read: Option<Option<Held>>,
    /// The entries naming it.
    users: Users,
}

/// The entries naming one object. Most objects are named by one workload,
/// which a set would keep in a B-tree node of its own: about 640 bytes for
/// each, where one id takes 56.
#[derive(Clone, Debug)]
enum Users {
    /// None, for the moment of an update: the object is forgotten after it
    /// unless the update names it again.
    None,
    One(WorkloadId),
    Many(BTreeSet<WorkloadId>),
}

impl Users {
    fn insert(&mut self, id: WorkloadId) {
        match self {
            Users::None => *self = Users::One(id),
            Users::Many(set) => drop(set.insert(id)),
            Users::One(one) if *one == id => {}
            Users::One(one) => *self = Users::Many(BTreeSet::from([one.clone(), id])),
        }
    }

    /// Removes `id`; whether none is left.
    fn remove(&mut self, id: &WorkloadId) -> bool {
        if matches!(self, Users::One(one) if one == id) {
            *self = Users::None;
        }
        if let Users::Many(set) = self {
            set.remove(id);
        }
        self.is_empty()
    }

    fn is_empty(&self) -> bool {
        match self {
            Users::None => true,
            Users::One(_) => false,
            Users::Many(set) => set.is_empty(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &WorkloadId> {
        let (one, many) = match self {
            Users::None => (None, None),
            Users::One(one) => (Some(one), None),
            Users::Many(set) => (None, Some(set)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Whether a scope of `kind` in `namespace` (`None`: all) holds `id`.
pub fn holds(kind: Kind, namespace: Option<&str>, id: &WorkloadId) -> bool {
    id.kind == kind && namespace.is_none_or(|ns| ns == id.namespace)
}

/// The objects `entry` names.
fn named(entry: &Entry) -> impl Iterator<Item = SourceId> + '_ {
    let named = entry.sources.iter().flat_map(|s| &s.named);
    named.map(|n| SourceId {
        source: n.source,
        namespace: entry.id.namespace.clone(),
        name: n.name.clone(),
    })
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
                let unnamed = self.unlink(&id);
                self.insert(entry);
                self.forget(unnamed);
            }
            Update::Stored(id, None) | Update::Deleted(id) => self.remove(&id),
            Update::Listed {
                kind,
                namespace,
                mut entries,
            } => {
                let namespace = namespace.as_deref();
                for (id, entry) in &entries {
                    self.note_asked(id, entry);
                }
                let gone: Vec<WorkloadId> = self
                    .entries
                    .keys()
                    .filter(|id| holds(kind, namespace, id))
                    .cloned()
                    .collect();
                let mut unnamed = Vec::new();
                for id in &gone {
                    unnamed.extend(self.unlink(id));
                }
                self.entries.retain(|id, _| !holds(kind, namespace, id));
                let entries_now = &entries;
                self.asked
                    .retain(|id| !holds(kind, namespace, id) || entries_now.contains_key(id));
                for entry in entries.values_mut() {
                    self.link(entry);
                }
                self.forget(unnamed);
                // Moved over whole, never copied: at 10,000 workloads a copy
                // is megabytes the allocator keeps.
                self.entries.append(&mut entries);
            }
            Update::Source(id, held) => {
                if let Some(object) = self.objects.get_mut(&id) {
                    object.read = Some(held);
                    self.rejoin(&id);
                }
            }
            Update::SourcesListed {
                source,
                namespace,
                found,
            } => self.listed(source, namespace, found),
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

    fn insert(&mut self, mut entry: Entry) {
        self.link(&mut entry);
        self.entries.insert(entry.id.clone(), entry);
    }

    fn remove(&mut self, id: &WorkloadId) {
        let unnamed = self.unlink(id);
        self.forget(unnamed);
        self.entries.remove(id);
        self.asked.remove(id);
    }

    /// Records what `entry` names and joins their references into it.
    fn link(&mut self, entry: &mut Entry) {
        if entry.sources.is_none() {
            self.said.remove(&entry.id);
            return;
        }
        for source in named(entry) {
            let id = entry.id.clone();
            match self.objects.entry(source) {
                Slot::Vacant(vacant) => drop(vacant.insert(Followed {
                    read: None,
                    users: Users::One(id),
                })),
                Slot::Occupied(mut object) => object.get_mut().users.insert(id),
            }
        }
        let objects = &self.objects;
        let namespace = entry.id.namespace.clone();
        let held = |source, name: &str| {
            let id = SourceId {
                source,
                namespace: namespace.clone(),
                name: name.to_string(),
            };
            let read = objects.get(&id).and_then(|o| o.read.as_ref());
            read.map(Option::as_ref)
        };
        let warnings = sources::join(entry, held);
        self.said.insert(entry.id.clone(), warnings);
    }

    /// Forgets what the entry of `id` names: the objects no entry names
    /// any more, for [`Index::forget`] once the update has linked what it
    /// brings (a workload stored again names them again, and what was read
    /// of them must stay: unread, they would be unknown until listed).
    fn unlink(&mut self, id: &WorkloadId) -> Vec<SourceId> {
        let Some(entry) = self.entries.get(id) else {
            return Vec::new();
        };
        let mut unnamed = Vec::new();
        for source in named(entry) {
            if let Some(object) = self.objects.get_mut(&source) {
                if object.users.remove(id) {
                    unnamed.push(source);
                }
            }
        }
        unnamed
    }

    /// Drops what was read of the `unnamed` objects still named by none.
    fn forget(&mut self, unnamed: Vec<SourceId>) {
        for source in unnamed {
            if self
                .objects
                .get(&source)
                .is_some_and(|o| o.users.is_empty())
            {
                self.objects.remove(&source);
            }
        }
    }

    /// Joins again the entries naming object `id`.
    fn rejoin(&mut self, id: &SourceId) {
        let users = self
            .objects
            .get(id)
            .into_iter()
            .flat_map(|o| o.users.iter());
        let users: Vec<WorkloadId> = users.cloned().collect();
        for user in users {
            if let Some(mut entry) = self.entries.remove(&user) {
                self.link(&mut entry);
                self.entries.insert(user, entry);
            }
        }
    }

    /// A listing of `source` objects in `namespace` (or all): the named
    /// ones it found are read, the others missing; their users are joined
    /// again.
    fn listed(
        &mut self,
        source: Source,
        namespace: Option<String>,
        mut found: BTreeMap<SourceId, Held>,
    ) {
        let named: Vec<SourceId> = self
            .objects
            .keys()
            .filter(|id| id.source == source)
            .filter(|id| namespace.as_ref().is_none_or(|n| *n == id.namespace))
            .cloned()
            .collect();
        for id in named {
            let held = Some(found.remove(&id));
            let Some(object) = self.objects.get_mut(&id) else {
                continue;
            };
            if object.read != held {
                object.read = held;
                self.rejoin(&id);
            }
        }
    }

    /// The objects some entry names that were not read yet (neither found
    /// nor known missing): for the collector to read.
    pub fn unread_sources(&self) -> impl Iterator<Item = &SourceId> {
        let unread = self.objects.iter().filter(|(_, o)| o.read.is_none());
        unread.map(|(id, _)| id)
    }

    /// Whether some entry names object `id`.
    pub fn names(&self, id: &SourceId) -> bool {
        self.objects.contains_key(id)
    }

    /// How many `source` objects named by some entry were found.
    pub fn sources(&self, source: Source) -> usize {
        let found = self
            .objects
            .iter()
            .filter(|(id, o)| id.source == source && matches!(o.read, Some(Some(_))));
        found.count()
    }

    /// The warnings of the joins since the last call, by workload: an
    /// empty list says a workload's earlier warnings are gone.
    pub fn take_warnings(&mut self) -> BTreeMap<WorkloadId, Vec<String>> {
        std::mem::take(&mut self.said)
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
    use crate::policy::sources::Held;

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
            sources: None,
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

    /// Deployment `name` in namespace `a` naming ConfigMap `shared` whole.
    fn naming(name: &str) -> Entry {
        let workload: crate::policy::workload::Workload =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "a"},
                "spec": {"template": {"metadata": {"annotations": {
                    "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}},
                    "spec": {"containers": [{"name": "c",
                        "envFrom": [{"configMapRef": {"name": "shared"}}]}]}}}
            }))
            .unwrap();
        let limits = Default::default();
        workload
            .into_entry(Kind::Deployment, &limits, &mut Vec::new())
            .unwrap()
    }

    fn held(values: &[(&str, &str)]) -> Held {
        let kept = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let values = crate::policy::sources::Values { kept, dropped: 0 };
        Held::read(values, "a", None)
    }

    fn paths(index: &Index, name: &str) -> Vec<String> {
        let id = WorkloadId {
            kind: Kind::Deployment,
            namespace: "a".into(),
            name: name.into(),
        };
        index
            .get(&id)
            .unwrap()
            .refs
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    fn shared() -> SourceId {
        SourceId {
            source: Source::ConfigMap,
            namespace: "a".into(),
            name: "shared".into(),
        }
    }

    #[test]
    fn a_config_map_joins_its_references_into_every_workload_naming_it() {
        let mut index: Index = [naming("one"), naming("two")].into_iter().collect();
        assert_eq!(index.unread_sources().collect::<Vec<_>>(), [&shared()]);
        let db = held(&[("DB_PASS", "vault:secret/data/shared/db#password")]);
        index.apply(Update::Source(shared(), Some(db)));
        assert_eq!(paths(&index, "one"), ["secret/data/shared/db"]);
        assert_eq!(paths(&index, "two"), ["secret/data/shared/db"]);
        assert_eq!(index.sources(Source::ConfigMap), 1);
        assert_eq!(index.unread_sources().count(), 0);
        // An edit that adds a reference adds it; a workload stored again
        // (its own event, a patch) keeps the join.
        let both = held(&[
            ("DB_PASS", "vault:secret/data/shared/db#password"),
            ("API", "vault:secret/data/shared/api#key"),
        ]);
        index.apply(Update::Source(shared(), Some(both)));
        index.apply(Update::Stored(naming("two").id, Some(naming("two"))));
        let want = ["secret/data/shared/api", "secret/data/shared/db"];
        assert_eq!(paths(&index, "one"), want);
        assert_eq!(paths(&index, "two"), want);
        // Deleted: its references go, and it is known missing.
        index.apply(Update::Source(shared(), None));
        assert!(paths(&index, "one").is_empty());
        assert_eq!(index.unread_sources().count(), 0);
        assert_eq!(index.sources(Source::ConfigMap), 0);
    }

    #[test]
    fn only_named_config_maps_are_kept_and_only_while_named() {
        let mut index = Index::new();
        let db = held(&[("DB_PASS", "vault:secret/data/shared/db#password")]);
        index.apply(Update::Source(shared(), Some(db.clone())));
        assert_eq!(index.sources(Source::ConfigMap), 0, "nobody names it");
        index.apply(Update::Stored(naming("one").id, Some(naming("one"))));
        index.apply(Update::SourcesListed {
            source: Source::ConfigMap,
            namespace: Some("a".into()),
            found: [(shared(), db)].into_iter().collect(),
        });
        assert_eq!(paths(&index, "one"), ["secret/data/shared/db"]);
        index.apply(Update::Deleted(naming("one").id));
        assert_eq!(index.sources(Source::ConfigMap), 0);
        assert!(!index.names(&shared()));
        // A listing without it: known missing, nothing to read.
        index.apply(Update::Stored(naming("one").id, Some(naming("one"))));
        index.apply(Update::SourcesListed {
            source: Source::ConfigMap,
            namespace: None,
            found: BTreeMap::new(),
        });
        assert!(paths(&index, "one").is_empty());
        assert_eq!(index.unread_sources().count(), 0);
    }

    #[test]
    fn workloads_listed_again_keep_what_their_config_maps_hold() {
        // A relist of the workloads (a 410, a new leader) is no news about
        // the ConfigMaps: what was read of them stays joined, unread again
        // would mean their references gone until a ConfigMap list.
        let mut index: Index = [naming("one")].into_iter().collect();
        let db = held(&[("DB_PASS", "vault:secret/data/shared/db#password")]);
        index.apply(Update::Source(shared(), Some(db)));
        index.apply(Update::Listed {
            kind: Kind::Deployment,
            namespace: None,
            entries: [(naming("one").id, naming("one"))].into_iter().collect(),
        });
        assert_eq!(paths(&index, "one"), ["secret/data/shared/db"]);
        assert_eq!(index.unread_sources().count(), 0);
        // So does a workload stored again alone (its own event, a patch).
        index.apply(Update::Stored(naming("one").id, Some(naming("one"))));
        assert_eq!(paths(&index, "one"), ["secret/data/shared/db"]);
        // Named by nobody any more: forgotten.
        index.apply(Update::Deleted(naming("one").id));
        assert!(!index.names(&shared()) && index.unread_sources().count() == 0);
    }

    #[test]
    fn a_config_map_named_by_several_is_kept_until_the_last_goes() {
        let mut index: Index = [naming("one"), naming("two"), naming("three")]
            .into_iter()
            .collect();
        let db = held(&[("DB_PASS", "vault:secret/data/shared/db#password")]);
        index.apply(Update::Source(shared(), Some(db)));
        index.apply(Update::Deleted(naming("one").id));
        index.apply(Update::Deleted(naming("two").id));
        assert_eq!(paths(&index, "three"), ["secret/data/shared/db"]);
        assert_eq!(index.sources(Source::ConfigMap), 1);
        index.apply(Update::Deleted(naming("three").id));
        assert!(!index.names(&shared()));
        assert_eq!(index.sources(Source::ConfigMap), 0);
    }

    #[test]
    fn the_warnings_of_a_join_are_handed_over_once() {
        let mut index: Index = [naming("one")].into_iter().collect();
        let bad = held(&[("BAD", "vault:#x")]);
        index.apply(Update::Source(shared(), Some(bad)));
        let said = index.take_warnings();
        let warnings = &said[&naming("one").id];
        assert_eq!(
            warnings,
            &["Deployment a/one: skipping a reference in key BAD of ConfigMap shared: empty path"]
        );
        assert!(index.take_warnings().is_empty());
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
