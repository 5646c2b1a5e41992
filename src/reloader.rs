//! The reloader pass: asks Vault once for each distinct secret, decides per
//! workload what to patch (a pure function), and patches.

use crate::collector::Index;
use crate::error::Error;
use crate::kube::Kube;
use crate::pace::Duties;
use crate::refs::{Provider, SecretRef};
use crate::state::{self, State, Version};
use crate::vault::{Lookup, Vault};
use crate::workload::{self, Entry, WorkloadId};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

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
}

/// Decides for a workload using `refs`, last rolled out with `stored`,
/// given what Vault said this pass.
///
/// A secret seen for the first time joins the baseline without a rollout;
/// one whose number or creation time differs is a change; one Vault could
/// not be asked about keeps its stored version; a missing one keeps the
/// version the pods have, so its re-creation is a change; secrets no longer
/// used are dropped.
pub fn decide(
    refs: &[SecretRef],
    stored: Option<&State>,
    lookups: &HashMap<SecretRef, Lookup>,
) -> Decision {
    let empty = State::default();
    let stored_state = stored.unwrap_or(&empty);
    let mut changes = Vec::new();
    let mut state = State::default();
    for secret in refs {
        let key = secret.key();
        let before = stored_state.versions.get(&key);
        let after = match (lookups.get(secret), before) {
            (Some(Lookup::Found(now)), Some(Some(old))) if old == now => Some(Some(old.clone())),
            (Some(Lookup::Found(now)), Some(old)) => {
                changes.push(Change {
                    secret: secret.clone(),
                    old: old.clone(),
                    new: now.clone(),
                });
                Some(Some(now.clone()))
            }
            (Some(Lookup::Found(now)), None) => Some(Some(now.clone())),
            (Some(Lookup::Missing), None) => Some(None),
            (Some(Lookup::Unwatchable(_)), _) => None,
            (Some(Lookup::Missing | Lookup::Failed(_)) | None, before) => before.cloned(),
        };
        if let Some(version) = after {
            state.versions.insert(key, version);
        }
    }
    let write_state = match stored {
        Some(stored) => *stored != state,
        None => !state.versions.is_empty(),
    };
    Decision {
        changes,
        state,
        write_state,
    }
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
    if !decision.changes.is_empty() {
        let count = (entry.reload_count + 1).to_string();
        patch["spec"] = json!({"template": {"metadata": {"annotations": {
            (workload::reload_count_annotation(entry.prefix)): count
        }}}});
    }
    patch
}

/// How a pass went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct secrets checked.
    pub secrets: usize,
    /// Vault requests that failed.
    pub vault_failures: usize,
    /// Workloads rolled out.
    pub reloaded: Vec<WorkloadId>,
    /// Patches that failed.
    pub patch_failures: usize,
    /// The pass was stopped by the loop before it finished.
    pub interrupted: bool,
}

/// The Vault clients, and what must be said only once.
pub struct Reloader {
    vault: Vault,
    bao: Option<Vault>,
    ignore_missing: bool,
    bao_ignore_missing: bool,
    said_unwatchable: HashSet<SecretRef>,
}

impl Reloader {
    /// A reloader asking `vault` for `vault:` secrets and `bao` (or `vault`
    /// when there is none) for `bao:` ones.
    pub fn new(vault: (Vault, bool), bao: Option<(Vault, bool)>) -> Reloader {
        let bao_ignore_missing = bao.as_ref().map_or(vault.1, |b| b.1);
        Reloader {
            vault: vault.0,
            ignore_missing: vault.1,
            bao: bao.map(|b| b.0),
            bao_ignore_missing,
            said_unwatchable: HashSet::new(),
        }
    }

    /// One pass over every workload in `index`.
    pub fn pass(&mut self, kube: &mut Kube, index: &mut Index, duties: &mut dyn Duties) -> Report {
        let mut report = Report::default();
        let secrets: BTreeSet<SecretRef> = index
            .values()
            .flat_map(|e| e.refs.iter().cloned())
            .collect();
        report.secrets = secrets.len();
        let Some(lookups) = self.look_up(secrets, duties, &mut report) else {
            report.interrupted = true;
            return report;
        };
        let ids: Vec<WorkloadId> = index.keys().cloned().collect();
        for id in ids {
            if !duties.keep_going() {
                report.interrupted = true;
                return report;
            }
            match apply(kube, index, &id, &lookups) {
                Ok(true) => report.reloaded.push(id),
                Ok(false) => {}
                Err(e) => {
                    report.patch_failures += 1;
                    log::error!("updating {id} failed: {e}");
                }
            }
        }
        report
    }

    /// Asks Vault about each secret once. A server that cannot be reached
    /// is not asked again in the same pass (one error, not one per secret).
    /// `None` when the loop asked to stop.
    fn look_up(
        &mut self,
        secrets: BTreeSet<SecretRef>,
        duties: &mut dyn Duties,
        report: &mut Report,
    ) -> Option<HashMap<SecretRef, Lookup>> {
        let mut lookups = HashMap::with_capacity(secrets.len());
        let mut unreachable: HashSet<Provider> = HashSet::new();
        for secret in secrets {
            if !duties.keep_going() {
                return None;
            }
            let (client, ignore_missing) = match (secret.provider, self.bao.as_mut()) {
                (Provider::Bao, Some(bao)) => (bao, self.bao_ignore_missing),
                (Provider::Bao, None) => (&mut self.vault, self.bao_ignore_missing),
                (Provider::Vault, _) => (&mut self.vault, self.ignore_missing),
            };
            let lookup = if unreachable.contains(&secret.provider) {
                Lookup::Failed(Error::Transport("not tried again this pass".into()))
            } else {
                client.current_version(&secret.path)
            };
            match &lookup {
                Lookup::Found(version) => log::debug!("{secret} is at {version}"),
                Lookup::Missing if ignore_missing => {
                    log::warn!("Vault secret path {} not found", secret.path)
                }
                Lookup::Missing => log::error!("Vault secret path {} not found", secret.path),
                Lookup::Unwatchable(why) => {
                    if self.said_unwatchable.insert(secret.clone()) {
                        log::warn!("{secret} cannot be watched: {why}");
                    }
                }
                Lookup::Failed(e @ Error::Transport(_)) => {
                    report.vault_failures += 1;
                    if unreachable.insert(secret.provider) {
                        log::error!(
                            "checking {secret} failed, not asking that server again this pass: {e}"
                        );
                    }
                }
                Lookup::Failed(e) => {
                    report.vault_failures += 1;
                    log::error!("checking {secret} failed: {e}");
                }
            }
            lookups.insert(secret, lookup);
        }
        Some(lookups)
    }
}

/// Decides for one workload and patches it; on a conflict reads it again,
/// decides again and patches once more. `Ok(true)` when it was rolled out.
fn apply(
    kube: &mut Kube,
    index: &mut Index,
    id: &WorkloadId,
    lookups: &HashMap<SecretRef, Lookup>,
) -> Result<bool, Error> {
    let mut fetched_again = false;
    loop {
        let Some(entry) = index.get(id) else {
            return Ok(false);
        };
        let decision = decide(&entry.refs, entry.state.as_ref(), lookups);
        if decision.changes.is_empty() && !decision.write_state {
            return Ok(false);
        }
        let reload = !decision.changes.is_empty();
        let result = kube.merge_patch(
            id.kind,
            &id.namespace,
            &id.name,
            &patch_body(entry, &decision),
        );
        let stored = match result {
            Ok(stored) => stored,
            Err(Error::Conflict) if !fetched_again => {
                fetched_again = true;
                log::debug!("{id} changed since it was collected; reading it again");
                refresh(kube, index, id)?;
                continue;
            }
            Err(Error::NotFound) => {
                index.remove(id);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if reload {
            let changes: Vec<String> = decision.changes.iter().map(Change::to_string).collect();
            log::info!("reloaded {id}: {}", changes.join(", "));
        } else {
            log::debug!("recorded the secret versions of {id}");
        }
        update(index, id, stored);
        return Ok(reload);
    }
}

/// Replaces the entry with the workload as stored now (it may have opted out).
fn refresh(kube: &mut Kube, index: &mut Index, id: &WorkloadId) -> Result<(), Error> {
    match kube.get(id.kind, &id.namespace, &id.name) {
        Ok(current) => {
            update(index, id, current);
            Ok(())
        }
        Err(Error::NotFound) => {
            index.remove(id);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn update(index: &mut Index, id: &WorkloadId, current: workload::Workload) {
    // Warnings about its values were already logged by the collector.
    match current.into_entry(id.kind, &mut Vec::new()) {
        Some(entry) => {
            index.insert(id.clone(), entry);
        }
        None => {
            index.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(path: &str) -> SecretRef {
        SecretRef {
            provider: Provider::Vault,
            path: path.into(),
        }
    }

    fn version(number: u64, created: &str) -> Version {
        Version {
            number,
            created: created.into(),
        }
    }

    fn state(entries: &[(&str, Option<Version>)]) -> State {
        State {
            versions: entries
                .iter()
                .map(|(path, v)| (secret(path).key(), v.clone()))
                .collect(),
        }
    }

    fn lookups(entries: Vec<(&str, Lookup)>) -> HashMap<SecretRef, Lookup> {
        entries.into_iter().map(|(p, l)| (secret(p), l)).collect()
    }

    #[test]
    fn first_sight_records_a_baseline_without_reloading() {
        let refs = [secret("s/data/a"), secret("s/data/b")];
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(1, "t1"))),
            ("s/data/b", Lookup::Missing),
        ]);
        let decision = decide(&refs, None, &found);
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
        let decision = decide(&refs, Some(&stored), &found);
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
        let decision = decide(&refs, Some(&stored), &found);
        assert_eq!(decision.changes.len(), 2);
        assert!(decision.write_state);
        assert_eq!(decision.changes[0].to_string(), "vault:s/data/a v1 → v2");
    }

    #[test]
    fn a_recreated_secret_is_a_change_even_with_the_same_number() {
        let refs = [secret("s/data/a")];
        let stored = state(&[("s/data/a", Some(version(1, "t1")))]);
        // Deleted: the pods keep what they have, nothing is written.
        let gone = lookups(vec![("s/data/a", Lookup::Missing)]);
        let decision = decide(&refs, Some(&stored), &gone);
        assert!(decision.changes.is_empty() && !decision.write_state);
        // Re-created: version 1 again, but created later.
        let back = lookups(vec![("s/data/a", Lookup::Found(version(1, "t9")))]);
        let decision = decide(&refs, Some(&stored), &back);
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
        let decision = decide(&refs, Some(&stored), &found);
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
        let decision = decide(&refs, Some(&stored), &found);
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
        let decision = decide(&refs, Some(&stored), &found);
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
            state: None,
        };
        let mut decision = Decision {
            changes: vec![Change {
                secret: secret("s/data/a"),
                old: Some(version(1, "t1")),
                new: version(2, "t2"),
            }],
            state: state(&[("s/data/a", Some(version(2, "t2")))]),
            write_state: true,
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
}
