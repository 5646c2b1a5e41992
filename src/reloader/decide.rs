//! The plan for one workload, pure: which of its secrets changed, what
//! state to store, and whether it is rolled out now.

use super::dynamic::{with_renewal, Renewal};
use crate::policy::refs::SecretRef;
use crate::policy::state::{self, State, Version};
use crate::policy::workload::{self, Entry};
use crate::vault::Lookup;
use serde_json::json;
use std::fmt;
use std::time::Duration;

/// A secret whose version differs from the one a workload was rolled out with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The secret.
    pub secret: SecretRef,
    /// The version the pods have (`None`: the secret did not exist).
    pub old: Option<Version>,
    /// The version now in Vault.
    pub new: Version,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.old {
            Some(old) if old.number == self.new.number => {
                write!(f, "{} {old} → {} (re-created)", self.secret, self.new)
            }
            Some(old) => write!(f, "{} {old} → {}", self.secret, self.new),
            None => write!(f, "{} missing → {}", self.secret, self.new),
        }
    }
}

/// What to do with one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Secrets that changed: when not empty, the workload is rolled out.
    pub changes: Vec<Change>,
    /// The state to store.
    pub state: State,
    /// Whether `state` differs from what is stored.
    pub write_state: bool,
    /// The changes must wait until this time (Unix seconds) because of the
    /// workload's minimum reload interval; nothing is written before.
    pub deferred_until: Option<u64>,
    /// The secrets whose current version cannot be read (deleted or
    /// destroyed) that hold back `changes`: a rollout would start pods that
    /// cannot get them, so nothing is written. Empty when nothing is held.
    pub held_by: Vec<SecretRef>,
    /// Why the workload is rolled out for its dynamic secrets, when it is
    /// (set by [`dynamic::with_renewal`]).
    pub renewal: Option<String>,
    /// How many secrets' versions `state` leaves out to fit its budget:
    /// their changes are not seen.
    pub left_out: usize,
}

impl Decision {
    /// Whether the workload is rolled out: a secret changed (and nothing
    /// holds the change back) or its dynamic secrets are renewed.
    pub fn rolls_out(&self) -> bool {
        let waits = self.deferred_until.is_some() || !self.held_by.is_empty();
        (!self.changes.is_empty() && !waits) || self.renewal.is_some()
    }

    /// What the rollout's log line says: the changes, then the renewal.
    pub fn summary(&self) -> String {
        let changes = (!self.changes.is_empty()).then(|| list(&self.changes));
        changes
            .into_iter()
            .chain(self.renewal.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// What the rollout's Event says.
    pub fn reason(&self) -> String {
        match self.changes.is_empty() {
            true => self.summary(),
            false => format!("Rolled out for new secret versions: {}", self.summary()),
        }
    }
}

/// What Vault said this pass about a secret a workload uses.
pub type LookupFn<'a> = dyn Fn(&SecretRef) -> Option<&'a Lookup> + 'a;

/// Decides for a workload using `refs`, last rolled out with `stored`,
/// given what Vault said this pass (`lookup`).
///
/// A secret seen for the first time joins the baseline without a rollout;
/// one whose number or creation time differs is a change; one Vault could
/// not be asked about keeps its stored version; a missing one keeps the
/// version the pods have, so its re-creation is a change; one whose current
/// version cannot be read (deleted, destroyed) is no change and keeps the
/// stored version, so reading it again later (undelete) is a change only
/// when the pods do not have it; secrets no longer used are dropped.
/// Changes wait while any secret used cannot be read ([`Decision::held_by`]),
/// and wait (and so gather) while within `min_interval` of the last
/// rollout; `now` is Unix seconds. The state is cut to `budget` bytes
/// ([`State::within`]), so a rollout never depends on it fitting. When
/// `refs_unknown` ([`Entry::refs_unknown`]), secrets stored but not in
/// `refs` are kept as stored, not dropped: they may be the references of a
/// ConfigMap not read yet, and dropped they would come back as a baseline,
/// missing a change made meanwhile.
pub fn decide(
    refs: &[SecretRef],
    stored: Option<&State>,
    lookup: &LookupFn,
    min_interval: Option<Duration>,
    now: u64,
    budget: usize,
    refs_unknown: bool,
) -> Decision {
    let (changes, mut state) = compare(refs, stored, lookup);
    if let (true, Some(stored)) = (refs_unknown, stored) {
        for (key, version) in &stored.versions {
            let kept = state.versions.entry(key.clone());
            kept.or_insert_with(|| version.clone());
        }
    }
    let held_by: Vec<SecretRef> = refs
        .iter()
        .filter(|s| matches!(lookup(s), Some(Lookup::Unreadable(..))))
        .cloned()
        .collect();
    // A last rollout in the future (a clock step, or an edited annotation)
    // counts as now, so the interval cannot hold changes back for ever.
    let last_reload = stored.and_then(|s| s.last_reload).map(|last| last.min(now));
    let deferred_until = match (changes.is_empty(), min_interval, last_reload) {
        (false, Some(interval), Some(last)) if last.saturating_add(interval.as_secs()) > now => {
            Some(last.saturating_add(interval.as_secs()))
        }
        _ => None,
    };
    // A rollout ends the first sight of a workload using dynamic secrets,
    // and is caused by the secrets that changed.
    (state.last_reload, state.first_seen, state.cause) = match changes.is_empty() {
        true => (
            last_reload,
            stored.and_then(|s| s.first_seen),
            stored.map(|s| s.cause.clone()).unwrap_or_default(),
        ),
        false => (Some(now), None, cause(&changes)),
    };
    let (state, left_out) = state.within(budget);
    let write_state = match stored {
        Some(stored) => *stored != state,
        None => !state.versions.is_empty(),
    };
    let held = !changes.is_empty() && !held_by.is_empty();
    Decision {
        changes,
        state,
        write_state: write_state && deferred_until.is_none() && !held,
        deferred_until,
        held_by: if held { held_by } else { Vec::new() },
        renewal: None,
        left_out,
    }
}

/// The keys recorded as what caused a rollout for `changes`.
fn cause(changes: &[Change]) -> Vec<String> {
    let keys = changes.iter().map(|c| c.secret.key());
    keys.take(crate::policy::state::MAX_CAUSE).collect()
}

/// The changes among `refs` since `stored`, and the versions to store:
/// [`decide`]'s rules for each secret.
fn compare(refs: &[SecretRef], stored: Option<&State>, lookup: &LookupFn) -> (Vec<Change>, State) {
    let empty = State::default();
    let stored = stored.unwrap_or(&empty);
    let mut changes = Vec::new();
    let mut state = State::default();
    for secret in refs {
        let key = secret.key();
        let before = stored.versions.get(&key);
        let after = match (lookup(secret), before) {
            (Some(Lookup::Found(now)), Some(Some(old))) if old == now => Some(Some(old.clone())),
            (Some(Lookup::Found(now)), Some(old)) => {
                changes.push(Change {
                    secret: secret.clone(),
                    old: old.clone(),
                    new: now.clone(),
                });
                Some(Some(now.clone()))
            }
            (Some(Lookup::Found(now) | Lookup::Unreadable(now, _)), None) => {
                Some(Some(now.clone()))
            }
            (Some(Lookup::Missing), None) => Some(None),
            (Some(Lookup::Unwatchable(_)), _) => None,
            (
                Some(Lookup::Unreadable(..) | Lookup::Missing | Lookup::Denied | Lookup::Failed(_))
                | None,
                before,
            ) => before.cloned(),
        };
        if let Some(version) = after {
            state.versions.insert(key, version);
        }
    }
    (changes, state)
}

/// What to do with one workload now, as [`plan`] decides it: the
/// executor carries it out without deciding again.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Nothing to write.
    Nothing,
    /// Nothing is written now, and this log line says why: the changes
    /// wait (the minimum interval, a secret that cannot be read), or a dry
    /// run would have rolled the workload out.
    Hold(String),
    /// Store the state with this patch: no rollout.
    Record(serde_json::Value),
    /// Roll the workload out with this patch, for the decision's reasons.
    Roll(serde_json::Value, Decision),
}

/// The plan for `entry` at `now` (Unix seconds), its state cut to `budget`
/// bytes, with its dynamic-secret `renewal` if any; and how many secrets'
/// versions the state leaves out ([`Decision::left_out`]).
pub fn plan(
    entry: &Entry,
    lookup: &LookupFn,
    renewal: Option<&Renewal>,
    budget: usize,
    now: u64,
    dry_run: bool,
) -> (Plan, usize) {
    let refs = &entry.refs;
    let stored = entry.state.as_ref();
    let interval = entry.min_reload_interval;
    let unknown = entry.refs_unknown();
    let decision = decide(refs, stored, lookup, interval, now, budget, unknown);
    let decision = match renewal {
        Some(renewal) => with_renewal(decision, renewal, now),
        None => decision,
    };
    let left_out = decision.left_out;
    let id = &entry.id;
    let plan = if let Some(until) = decision.deferred_until {
        Plan::Hold(format!(
            "{id}: waiting {}s (min-reload-interval) to reload for {}",
            until.saturating_sub(now),
            list(&decision.changes)
        ))
    } else if !decision.held_by.is_empty() {
        let held: Vec<String> = decision.held_by.iter().map(|s| s.to_string()).collect();
        Plan::Hold(format!(
            "{id}: not reloading for {} while the current version of {} cannot be read",
            list(&decision.changes),
            held.join(", ")
        ))
    } else if dry_run && decision.rolls_out() {
        Plan::Hold(format!(
            "dry run: would reload {id}: {}",
            decision.summary()
        ))
    } else if dry_run || !(decision.rolls_out() || decision.write_state) {
        Plan::Nothing
    } else if decision.rolls_out() {
        Plan::Roll(patch_body(entry, &decision), decision)
    } else {
        Plan::Record(patch_body(entry, &decision))
    };
    (plan, left_out)
}

/// The merge patch that stores `decision` on `entry`, and rolls it out when
/// something changed. The resourceVersion makes it apply only to the
/// workload as it was read.
pub fn patch_body(entry: &Entry, decision: &Decision) -> serde_json::Value {
    let mut patch = json!({
        "metadata": {
            "resourceVersion": entry.resource_version,
            "annotations": { (state::ANNOTATION): decision.state.encode() },
        }
    });
    if decision.rolls_out() {
        let count = entry.reload_count.saturating_add(1).to_string();
        patch["spec"] = json!({"template": {"metadata": {"annotations": {
            (workload::reload_count_annotation(entry.prefix)): count
        }}}});
        // A release is used up by the rollout it let go.
        if let Some(prefix) = entry.releases_hold {
            let hold = format!("{prefix}{}", workload::ROLLOUT_HOLD);
            patch["metadata"]["annotations"][hold] = serde_json::Value::Null;
        }
    }
    patch
}

pub(super) fn list(changes: &[Change]) -> String {
    changes
        .iter()
        .map(Change::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::policy::workload::WorkloadId;
    use crate::reloader::fixtures::*;
    use std::collections::HashMap;

    /// [`decide`] with no minimum interval, now, and room for any state.
    fn decided(
        refs: &[SecretRef],
        stored: Option<&State>,
        found: &HashMap<SecretRef, Lookup>,
    ) -> Decision {
        decide(
            refs,
            stored,
            &|s| found.get(s),
            None,
            NOW,
            state::MAX_BYTES,
            false,
        )
    }

    #[test]
    fn first_sight_records_a_baseline_without_reloading() {
        let refs = [secret("s/data/a"), secret("s/data/b")];
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(1, "t1"))),
            ("s/data/b", Lookup::Missing),
        ]);
        let decision = decided(&refs, None, &found);
        assert!(decision.changes.is_empty());
        assert!(decision.write_state);
        assert_eq!(
            decision.state,
            state(&[("s/data/a", Some(version(1, "t1"))), ("s/data/b", None)])
        );
    }

    #[test]
    fn nothing_to_do_when_nothing_changed() {
        let refs = [secret("s/data/a")];
        let stored = state(&[("s/data/a", Some(version(2, "t2")))]);
        let found = lookups(vec![("s/data/a", Lookup::Found(version(2, "t2")))]);
        let decision = decided(&refs, Some(&stored), &found);
        assert!(decision.changes.is_empty() && !decision.write_state);
    }

    #[test]
    fn several_changes_make_one_decision() {
        let refs = [secret("s/data/a"), secret("s/data/b"), secret("s/data/c")];
        let stored = state(&[
            ("s/data/a", Some(version(1, "t1"))),
            ("s/data/b", Some(version(4, "t4"))),
            ("s/data/c", Some(version(1, "t1"))),
        ]);
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(2, "t2"))),
            ("s/data/b", Lookup::Found(version(5, "t5"))),
            ("s/data/c", Lookup::Found(version(1, "t1"))),
        ]);
        let decision = decided(&refs, Some(&stored), &found);
        assert_eq!(decision.changes.len(), 2);
        assert!(decision.write_state);
        assert_eq!(decision.state.last_reload, Some(NOW));
        assert_eq!(decision.changes[0].to_string(), "vault:s/data/a v1 → v2");
    }

    #[test]
    fn a_recreated_secret_is_a_change_even_with_the_same_number() {
        let refs = [secret("s/data/a")];
        let stored = state(&[("s/data/a", Some(version(1, "t1")))]);
        // Deleted: the pods keep what they have, nothing is written.
        let gone = lookups(vec![("s/data/a", Lookup::Missing)]);
        let decision = decided(&refs, Some(&stored), &gone);
        assert!(decision.changes.is_empty() && !decision.write_state);
        // Re-created: version 1 again, but created later.
        let back = lookups(vec![("s/data/a", Lookup::Found(version(1, "t9")))]);
        let decision = decided(&refs, Some(&stored), &back);
        assert_eq!(decision.changes.len(), 1);
        assert_eq!(
            decision.changes[0].to_string(),
            "vault:s/data/a v1 → v1 (re-created)"
        );
    }

    #[test]
    fn a_secret_created_after_the_baseline_is_a_change() {
        let refs = [secret("s/data/a")];
        let stored = state(&[("s/data/a", None)]);
        let found = lookups(vec![("s/data/a", Lookup::Found(version(1, "t1")))]);
        let decision = decided(&refs, Some(&stored), &found);
        assert_eq!(decision.changes[0].old, None);
    }

    #[test]
    fn failures_keep_what_is_stored_and_unwatchable_is_not_stored() {
        let refs = [
            secret("s/data/a"),
            secret("s/data/kv1"),
            secret("s/data/new"),
        ];
        let stored = state(&[("s/data/a", Some(version(3, "t3")))]);
        let found = lookups(vec![
            ("s/data/a", Lookup::Failed(Error::Transport("down".into()))),
            ("s/data/kv1", Lookup::Unwatchable("kv1")),
        ]);
        let decision = decided(&refs, Some(&stored), &found);
        assert!(decision.changes.is_empty() && !decision.write_state);
        assert_eq!(decision.state, stored);
    }

    #[test]
    fn removed_secrets_leave_the_state_and_added_ones_join_it() {
        let refs = [secret("s/data/b")];
        let stored = state(&[("s/data/a", Some(version(3, "t3")))]);
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(4, "t4"))),
            ("s/data/b", Lookup::Found(version(7, "t7"))),
        ]);
        let decision = decided(&refs, Some(&stored), &found);
        assert!(
            decision.changes.is_empty(),
            "a no longer used secret changed"
        );
        assert_eq!(
            decision.state,
            state(&[("s/data/b", Some(version(7, "t7")))])
        );
        assert!(decision.write_state);
    }

    #[test]
    fn changes_within_the_minimum_interval_wait_and_gather() {
        let refs = [secret("s/data/a"), secret("s/data/b")];
        let mut stored = state(&[
            ("s/data/a", Some(version(1, "t1"))),
            ("s/data/b", Some(version(1, "t1"))),
        ]);
        stored.last_reload = Some(NOW - 60);
        let ten_minutes = Some(Duration::from_secs(600));
        let first = lookups(vec![
            ("s/data/a", Lookup::Found(version(2, "t2"))),
            ("s/data/b", Lookup::Found(version(1, "t1"))),
        ]);
        let waiting = decide(
            &refs,
            Some(&stored),
            &|s| first.get(s),
            ten_minutes,
            NOW,
            state::MAX_BYTES,
            false,
        );
        assert_eq!(waiting.deferred_until, Some(NOW + 540));
        assert!(!waiting.write_state, "nothing may be written while waiting");
        // A second change in the window joins the first; once the window has
        // passed both go out in one rollout.
        let both = lookups(vec![
            ("s/data/a", Lookup::Found(version(2, "t2"))),
            ("s/data/b", Lookup::Found(version(2, "t2"))),
        ]);
        let still = decide(
            &refs,
            Some(&stored),
            &|s| both.get(s),
            ten_minutes,
            NOW + 300,
            state::MAX_BYTES,
            false,
        );
        assert_eq!(still.deferred_until, Some(NOW + 540));
        let later = decide(
            &refs,
            Some(&stored),
            &|s| both.get(s),
            ten_minutes,
            NOW + 540,
            state::MAX_BYTES,
            false,
        );
        assert_eq!(later.deferred_until, None);
        assert_eq!(later.changes.len(), 2);
        assert_eq!(later.state.last_reload, Some(NOW + 540));
        // Without changes the interval holds nothing back.
        let same = lookups(vec![
            ("s/data/a", Lookup::Found(version(1, "t1"))),
            ("s/data/b", Lookup::Found(version(1, "t1"))),
        ]);
        let quiet = decide(
            &refs,
            Some(&stored),
            &|s| same.get(s),
            ten_minutes,
            NOW,
            state::MAX_BYTES,
            false,
        );
        assert_eq!(quiet.deferred_until, None);
        assert!(!quiet.write_state);
    }

    #[test]
    fn kv2_lifecycle_rolls_out_only_for_a_readable_new_version() {
        use crate::vault::Unreadable::{Deleted, Destroyed};
        let (a, b) = ("s/data/a", "s/data/b");
        let refs = [secret(a), secret(b)];
        let stored = state(&[(a, Some(version(2, "t2"))), (b, Some(version(1, "t1")))]);
        let b_same = || (b, Lookup::Found(version(1, "t1")));
        let unreadable = |n, t: &str, why| Lookup::Unreadable(version(n, t), why);
        // name, lookups, stored (or first sight), changes, written, held by
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, Lookup)>,
            bool,
            usize,
            bool,
            Vec<SecretRef>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("kv delete of the version the pods have: nothing to do",
             vec![(a, unreadable(2, "t2", Deleted)), b_same()], true, 0, false, vec![]),
            ("a new version deleted before it was seen: no rollout",
             vec![(a, unreadable(3, "t3", Deleted)), b_same()], true, 0, false, vec![]),
            ("undelete of the version the pods have: no rollout",
             vec![(a, Lookup::Found(version(2, "t2"))), b_same()], true, 0, false, vec![]),
            ("undelete of a version the pods lack: rollout",
             vec![(a, Lookup::Found(version(3, "t3"))), b_same()], true, 1, true, vec![]),
            ("kv destroy: as delete",
             vec![(a, unreadable(2, "t2", Destroyed)), b_same()], true, 0, false, vec![]),
            ("rollback writes a new version: rollout",
             vec![(a, Lookup::Found(version(4, "t4"))), b_same()], true, 1, true, vec![]),
            ("another secret changed while one cannot be read: held",
             vec![(a, unreadable(2, "t2", Deleted)), (b, Lookup::Found(version(2, "u2")))], true, 1, false, vec![secret(a)]),
            ("first sight of a deleted version: it is the baseline",
             vec![(a, unreadable(2, "t2", Deleted)), b_same()], false, 0, true, vec![]),
        ];
        for (name, found, known, changes, written, held_by) in cases {
            let found = lookups(found);
            let before = known.then_some(&stored);
            let decision = decided(&refs, before, &found);
            assert_eq!(decision.changes.len(), changes, "{name}: changes");
            assert_eq!(decision.write_state, written, "{name}: written");
            assert_eq!(decision.held_by, held_by, "{name}: held by");
            if !written {
                continue;
            }
            let recorded = decision.state.versions[&secret(a).key()].clone();
            let want = match &found[&secret(a)] {
                Lookup::Found(v) | Lookup::Unreadable(v, _) => v.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(recorded, Some(want), "{name}: recorded");
        }
    }

    #[test]
    fn a_state_over_its_budget_keeps_its_first_secrets_and_still_rolls_out() {
        let (a, b, c) = ("s/data/a", "s/data/b", "s/data/c");
        let refs = [secret(a), secret(b), secret(c)];
        let v1 = |p| (p, Lookup::Found(version(1, "2026-11-28T07:43:31.1Z")));
        let first = lookups(vec![v1(a), v1(b), v1(c)]);
        let full = decided(&refs, None, &first);
        assert_eq!(full.left_out, 0);
        // Room for two of the three.
        let mut two = full.state.clone();
        two.versions.remove(&secret(c).key());
        let budget = two.encode().len();
        let baseline = decide(&refs, None, &|s| first.get(s), None, NOW, budget, false);
        assert_eq!((baseline.left_out, &baseline.state), (1, &two));
        assert!(baseline.write_state);
        // Stored cut, nothing changed: nothing to write, the same secret left out.
        let quiet = decide(
            &refs,
            Some(&two),
            &|s| first.get(s),
            None,
            NOW,
            budget,
            false,
        );
        assert!(!quiet.write_state && quiet.changes.is_empty());
        assert_eq!(quiet.left_out, 1);
        // A kept secret changes: a rollout, within the budget still.
        let changed = lookups(vec![
            (a, Lookup::Found(version(2, "2026-11-28T07:43:32.1Z"))),
            v1(b),
            v1(c),
        ]);
        let rolled = decide(
            &refs,
            Some(&two),
            &|s| changed.get(s),
            None,
            NOW,
            budget,
            false,
        );
        assert!(rolled.rolls_out() && rolled.write_state);
        assert_eq!(rolled.changes.len(), 1);
        // The rollout time takes some room too: the state may lose one more.
        assert!(rolled.state.encode().len() <= budget);
        assert!(rolled.state.versions.contains_key(&secret(a).key()));
    }

    #[test]
    fn a_first_sight_is_kept_until_a_rollout_ends_it() {
        let refs = [secret("s/data/a")];
        let mut stored = state(&[("s/data/a", Some(version(1, "t1")))]);
        stored.first_seen = Some(NOW - 5);
        let same = lookups(vec![("s/data/a", Lookup::Found(version(1, "t1")))]);
        let quiet = decided(&refs, Some(&stored), &same);
        assert_eq!(quiet.state, stored);
        assert!(
            !quiet.write_state,
            "an unchanged state is not written every pass"
        );
        let changed = lookups(vec![("s/data/a", Lookup::Found(version(2, "t2")))]);
        let rolled = decided(&refs, Some(&stored), &changed);
        assert_eq!(
            (rolled.state.last_reload, rolled.state.first_seen),
            (Some(NOW), None)
        );
    }

    #[test]
    fn a_last_reload_in_the_future_counts_as_now() {
        let refs = [secret("s/data/a")];
        let mut stored = state(&[("s/data/a", Some(version(1, "t1")))]);
        stored.last_reload = Some(u64::MAX);
        let found = lookups(vec![("s/data/a", Lookup::Found(version(2, "t2")))]);
        let interval = Some(Duration::from_secs(600));
        let decision = decide(
            &refs,
            Some(&stored),
            &|s| found.get(s),
            interval,
            NOW,
            state::MAX_BYTES,
            false,
        );
        assert_eq!(decision.deferred_until, Some(NOW + 600));
    }

    /// What [`plan`] makes of one workload using `s/data/a`, stored at
    /// `stored` (v1, rolled out at `last`), when Vault answers `now_is`.
    fn planned(stored: Option<u64>, last: Option<u64>, now_is: Lookup, dry_run: bool) -> Plan {
        let mut app = entry("app", &["s/data/a"], None);
        app.min_reload_interval = Some(Duration::from_secs(600));
        app.state = stored.map(|n| {
            let mut state = state(&[("s/data/a", Some(version(n, &format!("t{n}"))))]);
            state.last_reload = last;
            state
        });
        let found = lookups(vec![("s/data/a", now_is)]);
        let lookup = |s: &SecretRef| found.get(s);
        plan(&app, &lookup, None, state::MAX_BYTES, NOW, dry_run).0
    }

    #[test]
    fn the_plan_is_what_the_executor_does_without_deciding_again() {
        let v2 = || Lookup::Found(version(2, "t2"));
        let gone = || Lookup::Unreadable(version(2, "t2"), crate::vault::Unreadable::Deleted);
        let hold = |p: &Plan, starts: &str| matches!(p, Plan::Hold(why) if why.starts_with(starts));
        let unchanged = planned(Some(2), None, v2(), false);
        assert_eq!(unchanged, Plan::Nothing);
        let first_sight = planned(None, None, v2(), false);
        assert!(matches!(first_sight, Plan::Record(_)), "{first_sight:?}");
        match planned(Some(1), None, v2(), false) {
            Plan::Roll(patch, decision) => {
                assert_eq!(decision.changes.len(), 1);
                let template = &patch["spec"]["template"]["metadata"]["annotations"];
                assert!(
                    template.as_object().is_some_and(|a| a.len() == 1),
                    "{patch}"
                );
            }
            other => panic!("a new version rolls out: {other:?}"),
        }
        let waits = planned(Some(1), Some(NOW - 60), v2(), false);
        assert!(hold(&waits, "Deployment ns/app: waiting 540s"), "{waits:?}");
        assert_eq!(planned(Some(1), None, gone(), false), Plan::Nothing);
        // A change is held while another secret it uses cannot be read.
        let mut app = entry("app", &["s/data/a", "s/data/b"], None);
        let both = [
            ("s/data/a", Some(version(1, "t1"))),
            ("s/data/b", Some(version(1, "t1"))),
        ];
        app.state = Some(state(&both));
        let found = lookups(vec![("s/data/a", v2()), ("s/data/b", gone())]);
        let lookup = |s: &SecretRef| found.get(s);
        let (held, _) = plan(&app, &lookup, None, state::MAX_BYTES, NOW, false);
        assert!(hold(&held, "Deployment ns/app: not reloading"), "{held:?}");
        let dry = planned(Some(1), None, v2(), true);
        assert!(
            hold(&dry, "dry run: would reload Deployment ns/app"),
            "{dry:?}"
        );
        assert_eq!(
            planned(None, None, v2(), true),
            Plan::Nothing,
            "a dry run records nothing"
        );
    }

    #[test]
    fn the_patch_counts_up_under_the_opt_in_prefix() {
        let entry = Entry {
            id: WorkloadId {
                kind: workload::Kind::Deployment,
                namespace: "ns".into(),
                name: "app".into(),
            },
            resource_version: "77".into(),
            uid: "u".into(),
            prefix: workload::PREFIXES[1],
            reload_count: 4,
            refs: vec![secret("s/data/a")],
            min_reload_interval: None,
            vault_addr: None,
            state: None,
            state_budget: state::MAX_BYTES,
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
        };
        let mut decision = Decision {
            changes: vec![Change {
                secret: secret("s/data/a"),
                old: Some(version(1, "t1")),
                new: version(2, "t2"),
            }],
            state: state(&[("s/data/a", Some(version(2, "t2")))]),
            write_state: true,
            deferred_until: None,
            held_by: Vec::new(),
            renewal: None,
            left_out: 0,
        };
        let patch = patch_body(&entry, &decision);
        assert_eq!(patch["metadata"]["resourceVersion"], "77");
        assert_eq!(
            patch["metadata"]["annotations"][state::ANNOTATION],
            decision.state.encode()
        );
        assert_eq!(
            patch["spec"]["template"]["metadata"]["annotations"]
                ["alpha.vault.security.banzaicloud.io/secret-reload-count"],
            "5"
        );
        decision.changes.clear();
        assert!(patch_body(&entry, &decision).get("spec").is_none());
    }

    #[test]
    fn the_secrets_of_config_maps_not_read_yet_keep_their_versions() {
        // Rolled out with its own secret and one from ConfigMap `shared`;
        // the ConfigMaps of its namespace are not known now (not listed
        // yet, or their list failed): unknown is not missing, so the
        // ConfigMap's secret keeps its version. Dropped, it would come back
        // as a baseline and a change made meanwhile would be missed.
        use crate::collector::index::{Index, SourceId, Update};
        let workload: workload::Workload = serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {"template": {"metadata": {"annotations": {
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}},
                "spec": {"containers": [{"name": "c",
                    "env": [{"name": "OWN", "value": "vault:s/data/own#k"}],
                    "envFrom": [{"configMapRef": {"name": "shared"}}]}]}}}
        }))
        .unwrap();
        let limits = Default::default();
        let kind = workload::Kind::Deployment;
        let mut entry = workload.into_entry(kind, &limits, &mut Vec::new()).unwrap();
        let stored = state(&[
            ("s/data/own", Some(version(1, "t1"))),
            ("s/data/shared/db", Some(version(1, "t1"))),
        ]);
        entry.state = Some(stored);
        let mut index = Index::new();
        index.apply(Update::Stored(entry.id.clone(), Some(entry)));
        let entry = index.values().next().unwrap();
        let found = lookups(vec![("s/data/own", Lookup::Found(version(1, "t1")))]);
        let (planned, _) = plan(entry, &|s| found.get(s), None, state::MAX_BYTES, NOW, false);
        assert_eq!(planned, Plan::Nothing);
        // Its own secret changes meanwhile: the rollout keeps it too.
        let found = lookups(vec![("s/data/own", Lookup::Found(version(2, "t2")))]);
        let (planned, _) = plan(entry, &|s| found.get(s), None, state::MAX_BYTES, NOW, false);
        let Plan::Roll(_, decision) = planned else {
            panic!("{planned:?}")
        };
        let kept = decision
            .state
            .versions
            .get(&secret("s/data/shared/db").key());
        assert_eq!(kept, Some(&Some(version(1, "t1"))));
        // Known missing (listed without it, or deleted): dropped.
        let shared = SourceId {
            source: workload::Source::ConfigMap,
            namespace: "ns".into(),
            name: "shared".into(),
        };
        index.apply(Update::Source(shared, None));
        let entry = index.values().next().unwrap();
        let found = lookups(vec![("s/data/own", Lookup::Found(version(1, "t1")))]);
        let (planned, _) = plan(entry, &|s| found.get(s), None, state::MAX_BYTES, NOW, false);
        assert!(matches!(planned, Plan::Record(_)), "{planned:?}");
    }
}
