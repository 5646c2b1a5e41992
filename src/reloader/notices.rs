//! What the reloader tells about a workload beside its rollouts: one
//! warning and one Warning Event when a secret's state changes (missing,
//! denied, unreadable, not watched, left out), never one each pass.

use super::decide::LookupFn;
use super::Reloader;
use crate::kube::Kube;
use crate::policy::refs::SecretRef;
use crate::policy::state;
use crate::policy::workload::{Entry, WorkloadId};
use crate::vault::Lookup;
use std::collections::BTreeMap;

/// Why a secret a workload uses cannot be checked, as its Event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unavailable {
    /// It does not exist.
    Missing,
    /// The reloader's Vault policy refuses it.
    Denied,
}

/// How many paths one notice names; the rest are counted.
const NAMED: usize = 10;

impl Unavailable {
    /// The Event's reason and message for `secrets` (their paths, never a
    /// value; the first [`NAMED`] of them).
    fn notice(self, secrets: &[&SecretRef]) -> (&'static str, String) {
        let named: Vec<&str> = secrets
            .iter()
            .take(NAMED)
            .map(|s| s.path.as_str())
            .collect();
        let mut list = named.join(", ");
        if secrets.len() > NAMED {
            list += &format!(" and {} more", secrets.len() - NAMED);
        }
        let n = secrets.len();
        match (self, n) {
            (Unavailable::Missing, 1) => (
                "SecretNotFound",
                format!("Vault secret path {list} not found"),
            ),
            (Unavailable::Missing, _) => (
                "SecretNotFound",
                format!("{n} Vault secret paths not found: {list}"),
            ),
            (Unavailable::Denied, 1) => (
                "SecretAccessDenied",
                format!(
                    "Vault secret path {list}: the reloader's Vault policy refuses it (403), so \
                     its changes are not seen; its recorded version is kept"
                ),
            ),
            (Unavailable::Denied, _) => (
                "SecretAccessDenied",
                format!(
                    "{n} Vault secret paths: the reloader's Vault policy refuses them (403), so \
                     their changes are not seen; their recorded versions are kept: {list}"
                ),
            ),
        }
    }
}

/// Secrets of a workload that are not followed, as its Event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Counted {
    /// Past `--max-secrets-per-workload`.
    Unwatched,
    /// Outside `--allowed-secret-paths`.
    Refused,
    /// Left out of its state, which would not fit its annotations.
    LeftOut,
}

impl Counted {
    /// The Event's reason and message for `n` secrets of `entry`, with the
    /// cap `max_secrets`.
    fn notice(self, n: usize, entry: &Entry, max_secrets: usize) -> (&'static str, String) {
        match self {
            Counted::Unwatched => (
                "TooManySecrets",
                format!(
                    "it names {} secrets, more than --max-secrets-per-workload ({max_secrets}): \
                     only the first {max_secrets} are watched, changes to the other {n} are \
                     not rolled out",
                    n + max_secrets
                ),
            ),
            Counted::Refused => (
                "SecretPathRefused",
                format!(
                    "{n} of its references name secret paths outside --allowed-secret-paths and \
                     are never checked: {}",
                    entry.refused.describe()
                ),
            ),
            Counted::LeftOut => (
                "ObservedVersionsTruncated",
                format!(
                    "the versions of {n} of its {} secrets do not fit in its {} annotation \
                     (the API server allows 256 KiB for all of an object's annotations): \
                     changes to those secrets are not rolled out; use fewer secrets or \
                     smaller annotations",
                    entry.refs.len(),
                    state::ANNOTATION
                ),
            ),
        }
    }
}

/// Adds to `counts` the secrets `entry` uses that this pass found denied,
/// missing or unreadable (`lookup`), by namespace and that reason: the
/// `unavailable_secrets` metric. A secret Vault could not be asked about
/// is not counted (the Vault-lookups metrics tell that).
pub(super) fn count_unavailable(
    counts: &mut BTreeMap<(String, &'static str), u64>,
    entry: &Entry,
    lookup: &LookupFn,
) {
    for secret in &entry.refs {
        let reason = match lookup(secret) {
            Some(Lookup::Denied) => "denied",
            Some(Lookup::Missing) => "missing",
            Some(Lookup::Unreadable(..)) => "unreadable",
            _ => continue,
        };
        *counts
            .entry((entry.id.namespace.clone(), reason))
            .or_default() += 1;
    }
}

/// Records an Event `(warning, reason, message)` on workload `id`; whether
/// it was recorded. A failure is only
/// logged: the Event is a courtesy, the rollout or the warning stands.
pub(super) fn record_event(
    kube: &mut Kube,
    id: &WorkloadId,
    uid: &str,
    (warning, reason, message): (bool, &str, &str),
) -> bool {
    match kube.create_event(id, uid, warning, reason, message) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("recording an Event for {id} failed: {e}");
            false
        }
    }
}

/// Says `message` about `entry` in the log (a warning for a Warning
/// Event, else an info line) and as an Event `reason` on it.
pub(super) fn tell(kube: &mut Kube, entry: &Entry, (warning, reason, message): (bool, &str, &str)) {
    match warning {
        true => log::warn!("{}: {message}", entry.id),
        false => log::info!("{}: {message}", entry.id),
    }
    record_event(kube, &entry.id, &entry.uid, (warning, reason, message));
}

impl Reloader {
    /// One warning and one Warning Event for a workload whose `vault-addr`
    /// is refused, until the reason changes: its `vault:` secrets are not
    /// checked (its other secrets are).
    pub(super) fn report_refused(&mut self, kube: &mut Kube, entry: &Entry, why: &str) {
        let id = &entry.id;
        if !self.said_refused.news(id.clone(), why.to_string()) {
            return;
        }
        let message = format!("{why}: its vault: secrets are not checked");
        log::warn!("{id}: {message}");
        if self.dry_run {
            return;
        }
        let event = (true, "VaultAddressRefused", message.as_str());
        record_event(kube, id, &entry.uid, event);
    }

    /// One Warning Event on a workload for its secrets that newly do not
    /// exist, and one for those the policy newly refuses (with a warning
    /// line too: unlike a missing one, it is logged nowhere else), each
    /// secret once until that changes; a secret found again clears it.
    pub(super) fn report_unavailable(&mut self, kube: &mut Kube, entry: &Entry, lookup: &LookupFn) {
        let id = &entry.id;
        let mut news: Vec<(Unavailable, &SecretRef)> = Vec::new();
        for secret in &entry.refs {
            let key = (id.clone(), secret.clone());
            let now = match lookup(secret) {
                Some(Lookup::Missing) => Unavailable::Missing,
                Some(Lookup::Denied) => Unavailable::Denied,
                Some(Lookup::Found(_)) => {
                    self.said_unavailable.forget(&key);
                    continue;
                }
                _ => continue,
            };
            if self.said_unavailable.is_news(&key, &now) {
                news.push((now, secret));
            }
        }
        for kind in [Unavailable::Missing, Unavailable::Denied] {
            let secrets: Vec<&SecretRef> = news
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, s)| *s)
                .collect();
            if secrets.is_empty() {
                continue;
            }
            let (reason, message) = kind.notice(&secrets);
            if kind == Unavailable::Denied {
                log::warn!("{id}: {message}");
            }
            let event = (true, reason, message.as_str());
            if self.dry_run || record_event(kube, id, &entry.uid, event) {
                for secret in secrets {
                    self.said_unavailable
                        .said((id.clone(), secret.clone()), kind);
                }
            }
        }
    }

    /// A Warning Event on a workload for `n` of its secrets that are not
    /// watched (past `--max-secrets-per-workload`, whose warning line the
    /// collector gave) or left out of its state (with a warning line),
    /// once per count.
    pub(super) fn report_counted(
        &mut self,
        kube: &mut Kube,
        entry: &Entry,
        (what, n): (Counted, usize),
    ) {
        let key = (entry.id.clone(), what);
        if n == 0 {
            self.said_counted.forget(&key);
            return;
        }
        if !self.said_counted.news(key, n) {
            return;
        }
        let (reason, message) = what.notice(n, entry, self.limits.max_secrets);
        if what == Counted::LeftOut {
            log::warn!("{}: {message}", entry.id);
        }
        if !self.dry_run {
            let event = (true, reason, message.as_str());
            record_event(kube, &entry.id, &entry.uid, event);
        }
    }

    /// A warning and a Warning Event on a workload for each secret it uses
    /// whose current version cannot be read, once per version: new pods
    /// would not get it, so the workload is not rolled out meanwhile.
    pub(super) fn report_unreadable(&mut self, kube: &mut Kube, entry: &Entry, lookup: &LookupFn) {
        let id = &entry.id;
        for secret in &entry.refs {
            let key = (id.clone(), secret.clone());
            let (version, why) = match lookup(secret) {
                Some(Lookup::Unreadable(version, why)) => (version, why),
                Some(Lookup::Found(_) | Lookup::Missing) => {
                    self.said_unreadable.forget(&key);
                    continue;
                }
                _ => continue,
            };
            if self.dry_run || !self.said_unreadable.is_news(&key, &version.number) {
                continue;
            }
            let message = format!(
                "Vault secret path {}: its current version {version} is {why}; pods started \
                 now could not read it, so the workload is not rolled out until it can be read",
                secret.path
            );
            log::warn!("{id}: {message}");
            let event = (true, "SecretVersionUnreadable", message.as_str());
            if record_event(kube, id, &entry.uid, event) {
                self.said_unreadable.said(key, version.number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::error::Error;
    use crate::vault::Unreadable;

    #[test]
    fn one_notice_names_up_to_ten_paths_and_counts_the_rest() {
        let paths: Vec<SecretRef> = (0..12).map(|n| secret(&format!("s/data/{n}"))).collect();
        let refs: Vec<&SecretRef> = paths.iter().collect();
        let rows: [(Unavailable, usize, &str, &str); 4] = [
            (
                Unavailable::Missing,
                1,
                "SecretNotFound",
                "Vault secret path s/data/0 not found",
            ),
            (
                Unavailable::Missing,
                12,
                "SecretNotFound",
                "12 Vault secret paths not found: s/data/0, s/data/1, s/data/2, s/data/3, \
                 s/data/4, s/data/5, s/data/6, s/data/7, s/data/8, s/data/9 and 2 more",
            ),
            (
                Unavailable::Denied,
                1,
                "SecretAccessDenied",
                "Vault secret path s/data/0: the reloader's Vault policy refuses it (403), so \
                 its changes are not seen; its recorded version is kept",
            ),
            (
                Unavailable::Denied,
                2,
                "SecretAccessDenied",
                "2 Vault secret paths: the reloader's Vault policy refuses them (403), so their \
                 changes are not seen; their recorded versions are kept: s/data/0, s/data/1",
            ),
        ];
        for (kind, n, reason, message) in rows {
            assert_eq!(kind.notice(&refs[..n]), (reason, message.to_string()));
        }
    }

    #[test]
    fn unavailable_secrets_are_counted_by_namespace_and_reason() {
        let found = lookups(vec![
            ("s/data/denied", Lookup::Denied),
            ("s/data/missing", Lookup::Missing),
            (
                "s/data/gone",
                Lookup::Unreadable(version(2, "t2"), Unreadable::Deleted),
            ),
            ("s/data/ok", Lookup::Found(version(1, "t1"))),
            (
                "s/data/down",
                Lookup::Failed(Error::Transport("reset".into())),
            ),
        ]);
        let lookup = |secret: &SecretRef| found.get(secret);
        let all = [
            "s/data/denied",
            "s/data/missing",
            "s/data/gone",
            "s/data/ok",
            "s/data/down",
        ];
        let mut other = entry("b", &["s/data/missing", "s/data/unasked"], None);
        other.id.namespace = "other".into();
        let mut counts = BTreeMap::new();
        for e in [
            &entry("a", &all, None),
            &entry("c", &["s/data/denied"], None),
            &other,
        ] {
            count_unavailable(&mut counts, e, &lookup);
        }
        let expected: BTreeMap<(String, &str), u64> = [
            (("ns".into(), "denied"), 2),
            (("ns".into(), "missing"), 1),
            (("ns".into(), "unreadable"), 1),
            (("other".into(), "missing"), 1),
        ]
        .into();
        assert_eq!(counts, expected);
    }
}
