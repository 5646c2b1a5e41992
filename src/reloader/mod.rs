//! The reloader pass: asks Vault once for each distinct secret, decides per
//! workload what to do ([`decide`], pure), and does it ([`patch`]). Which
//! server a workload is read from is [`routing`]'s; what is told about a
//! workload besides its rollouts, [`notices`]'; dynamic-secret renewals,
//! [`dynamic`]'s.

use crate::collector::index::Index;
use crate::collector::steps::Steps;
use crate::error::Error;
use crate::kube::Kube;
use crate::policy::allow::Addr;
use crate::policy::refs::{Provider, SecretRef};
use crate::policy::workload::{self, WorkloadId};
use crate::vault::{Lookup, Vault};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod decide;
pub mod dynamic;
#[cfg(test)]
mod fixtures;
mod notices;
mod patch;
pub mod routing;
mod said;
pub use dynamic::DynamicSettings;
use notices::{record_event, Counted, Unavailable};
use patch::{apply, Patching};
use routing::Server;
pub use routing::{ClientFactory, PerWorkload};
use said::Said;

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
    /// Workloads rolled out for their dynamic secrets (also in `reloaded`).
    pub renewed: Vec<WorkloadId>,
    /// The next renewal due time of each workload with a known lifetime
    /// (Unix seconds).
    pub next_renewal: std::collections::BTreeMap<WorkloadId, u64>,
    /// Workloads whose dynamic secrets' lifetime could not be determined.
    pub lifetime_unknown: usize,
}

/// The Vault clients, and what must be said only once.
pub struct Reloader {
    vault: Vault,
    bao: Option<Vault>,
    /// `None` when per-workload addresses are not honoured.
    per_workload: Option<PerWorkload>,
    ignore_missing: bool,
    bao_ignore_missing: bool,
    /// Secrets that cannot be watched (no versions), already reported.
    said_unwatchable: Said<(Server, SecretRef)>,
    /// Missing secrets already logged, until found again.
    said_missing: Said<(Server, SecretRef)>,
    /// Secrets under a mount the token cannot see, already reported.
    said_unknown: Said<(Server, SecretRef)>,
    /// Missing or refused secrets reported with a Warning Event, per
    /// workload: what was said.
    said_unavailable: Said<(WorkloadId, SecretRef), Unavailable>,
    /// Unreadable current versions reported with a Warning Event, per
    /// workload and secret: the version number.
    said_unreadable: Said<(WorkloadId, SecretRef), u64>,
    /// Refused `vault-addr` annotations reported, per workload: why.
    said_refused: Said<WorkloadId, String>,
    /// Secrets not watched or left out of the state, reported per
    /// workload: how many.
    said_counted: Said<(WorkloadId, Counted), usize>,
    /// Dynamic-secret settings and what was said about renewals.
    renewals: dynamic::Memory,
    dry_run: bool,
    /// What one workload may name, for the workloads read back.
    limits: workload::Limits,
}

impl Reloader {
    /// A reloader asking `vault` for `vault:` secrets and `bao` (or `vault`
    /// when there is none) for `bao:` ones, each with its ignore-missing
    /// setting. With `per_workload`, a workload's `vault-addr` annotation
    /// picks the server for its `vault:` secrets when the allowlist lets it.
    /// With `dry_run` it only logs what it would do.
    pub fn new(
        vault: (Vault, bool),
        bao: Option<(Vault, bool)>,
        per_workload: Option<PerWorkload>,
        dry_run: bool,
    ) -> Reloader {
        let bao_ignore_missing = bao.as_ref().map_or(vault.1, |b| b.1);
        Reloader {
            vault: vault.0,
            ignore_missing: vault.1,
            bao: bao.map(|b| b.0),
            per_workload,
            bao_ignore_missing,
            said_unwatchable: Said::default(),
            said_missing: Said::default(),
            said_unknown: Said::default(),
            said_unavailable: Said::default(),
            said_unreadable: Said::default(),
            said_refused: Said::default(),
            said_counted: Said::default(),
            renewals: dynamic::Memory::default(),
            dry_run,
            limits: workload::Limits::default(),
        }
    }

    /// The same reloader holding the workloads it reads back to `limits`,
    /// as the collector does.
    pub fn with_limits(mut self, limits: workload::Limits) -> Reloader {
        self.limits = limits;
        self
    }

    /// Every Vault client: the configured servers' and the workloads' own.
    fn clients(&mut self) -> impl Iterator<Item = &mut Vault> {
        std::iter::once(&mut self.vault)
            .chain(self.bao.iter_mut())
            .chain(
                self.per_workload
                    .iter_mut()
                    .flat_map(|pw| pw.clients.values_mut()),
            )
    }

    /// The Vault requests sent since the last call, by kind and status.
    pub fn take_requests(&mut self) -> crate::policy::metrics::Counts {
        let mut all = crate::policy::metrics::Counts::new();
        for client in self.clients() {
            for (key, n) in client.take_requests() {
                *all.entry(key).or_default() += n;
            }
        }
        all
    }

    /// Revokes the Vault tokens the clients logged in for: at shutdown.
    pub fn revoke_tokens(&mut self) {
        self.clients().for_each(Vault::revoke);
    }

    /// One pass over the workloads in `index`: asks Vault about each
    /// distinct secret, then decides and patches each workload, a step
    /// each ([`Steps`]). Between two steps the watch events are applied to
    /// `index`, so each workload is decided as it is then.
    pub fn pass(&mut self, kube: &mut Kube, index: &mut Index, steps: &mut dyn Steps) -> Report {
        let mut report = Report::default();
        self.clients().for_each(Vault::begin_pass);
        let sources: BTreeSet<(Server, SecretRef)> = index
            .values()
            .flat_map(|e| {
                let route = self.route(e);
                e.refs
                    .iter()
                    .filter_map(move |s| Some((Self::server(&route, s)?, s.clone())))
            })
            .collect();
        self.forget_what_is_gone(index, &sources);
        self.note_unannotated(index);
        report.secrets = sources.len();
        // The workloads as they are now: one created while Vault is asked
        // (the streams are read meanwhile) is decided next pass, when its
        // secrets have been asked about too.
        let ids: Vec<WorkloadId> = index.keys().cloned().collect();
        let Some(lookups) = self.look_up(sources, kube, index, steps, &mut report) else {
            report.interrupted = true;
            return report;
        };
        let Some(renewals) = self.plan_renewals(kube, index, &lookups, steps, &mut report) else {
            report.interrupted = true;
            return report;
        };
        for id in ids {
            if !steps.keep_going() {
                report.interrupted = true;
                return report;
            }
            steps.catch_up(kube, index);
            let Some(entry) = index.get(&id) else {
                continue;
            };
            let route = &self.route(entry);
            if let Err(why) = route {
                self.report_refused(kube, entry, why);
            }
            let lookup = |secret: &SecretRef| {
                let server = Self::server(route, secret)?;
                lookups.get(&(server, secret.clone()))
            };
            self.report_unavailable(kube, entry, &lookup);
            self.report_unreadable(kube, entry, &lookup);
            let unwatched = (Counted::Unwatched, entry.unwatched);
            self.report_counted(kube, entry, unwatched);
            let refused = (Counted::Refused, entry.refused.count);
            self.report_counted(kube, entry, refused);
            let renewal = renewals.get(&id);
            let patching = Patching {
                dry_run: self.dry_run,
                limits: &self.limits,
            };
            match apply(kube, index, &id, &lookup, renewal, patching) {
                Ok(applied) => {
                    if let Some(entry) = index.get(&id) {
                        let left_out = (Counted::LeftOut, applied.left_out);
                        self.report_counted(kube, entry, left_out);
                    }
                    if let Some((uid, decision)) = applied.rolled {
                        let message = decision.reason();
                        let event = (false, "SecretsReloaded", message.as_str());
                        record_event(kube, &id, &uid, event);
                        let memory = &mut self.renewals;
                        dynamic::rolled_out(memory, &mut report, &id, &decision, renewal);
                        report.reloaded.push(id);
                    }
                }
                Err(e) => {
                    report.patch_failures += 1;
                    log::error!("updating {id} failed: {e}");
                    if e.is_unreachable() {
                        // The rest would fail alike; their changes wait for the next pass.
                        return report;
                    }
                }
            }
        }
        report
    }

    /// Drops what is kept about workloads, secrets and servers no longer in
    /// the index, so nothing grows with workloads that came and went.
    fn forget_what_is_gone(&mut self, index: &Index, sources: &BTreeSet<(Server, SecretRef)>) {
        let refused: HashSet<&WorkloadId> = index
            .values()
            .filter(|entry| self.route(entry).is_err())
            .map(|entry| &entry.id)
            .collect();
        let used = |(id, secret): &(WorkloadId, SecretRef)| {
            index.get(id).is_some_and(|e| e.refs.contains(secret))
        };
        self.said_unavailable.retain(used);
        self.said_unreadable.retain(used);
        for said in [
            &mut self.said_unwatchable,
            &mut self.said_missing,
            &mut self.said_unknown,
        ] {
            said.retain(|source| sources.contains(source));
        }
        self.said_refused.retain(|id| refused.contains(id));
        self.said_counted.retain(|(id, _)| index.contains_key(id));
        if let Some(per_workload) = self.per_workload.as_mut() {
            let used: HashSet<&Addr> = sources.iter().filter_map(|(s, _)| s.as_ref()).collect();
            per_workload.clients.retain(|addr, _| used.contains(addr));
        }
    }

    /// Asks each server about each of its secrets once. A server that cannot
    /// be reached is not asked again in the same pass (one error, not one
    /// per secret). Each lookup is a step: between two, the watch events
    /// are applied to `index`. `None` when the loop asked to stop.
    fn look_up(
        &mut self,
        sources: BTreeSet<(Server, SecretRef)>,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
        report: &mut Report,
    ) -> Option<HashMap<(Server, SecretRef), Lookup>> {
        let mut unreachable = self.prefetch(&sources, kube, index, steps)?;
        let mut lookups = HashMap::with_capacity(sources.len());
        for (server, secret) in sources {
            if !steps.keep_going() {
                return None;
            }
            steps.catch_up(kube, index);
            // Which client: `bao:` secrets share the Vault client without BAO_ADDR.
            let client_key = (
                server.clone(),
                secret.provider == Provider::Bao && self.bao.is_some(),
            );
            let (lookup, ignore_missing) = match unreachable.contains(&client_key) {
                true => (
                    Lookup::Failed(Error::Transport("not tried again this pass".into())),
                    false,
                ),
                false => match self.client(&server, secret.provider) {
                    Ok((client, ignore)) => (client.current_version(&secret.path), ignore),
                    Err(e) => (Lookup::Failed(e), false),
                },
            };
            if let Lookup::Failed(e) = &lookup {
                if !matches!(e, Error::MountUnknown { .. }) {
                    report.vault_failures += 1;
                }
            }
            let first_failure = match &lookup {
                Lookup::Failed(e) if e.is_server_failure() => unreachable.insert(client_key),
                _ => false,
            };
            self.log_lookup(&server, &secret, &lookup, ignore_missing, first_failure);
            lookups.insert((server, secret), lookup);
        }
        Some(lookups)
    }

    /// Lets each client list the directories of its secrets before they are
    /// looked up one by one (with `--list-secret-metadata`; otherwise
    /// nothing is sent), a directory a step. The clients whose server
    /// failed, not asked again this pass; `None` when the loop asked to
    /// stop.
    fn prefetch(
        &mut self,
        sources: &BTreeSet<(Server, SecretRef)>,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
    ) -> Option<HashSet<(Server, bool)>> {
        let mut by_client: BTreeMap<(Server, bool), Vec<&str>> = BTreeMap::new();
        for (server, secret) in sources {
            let bao_client = secret.provider == Provider::Bao && self.bao.is_some();
            by_client
                .entry((server.clone(), bao_client))
                .or_default()
                .push(&secret.path);
        }
        let mut failed = HashSet::new();
        for ((server, bao_client), paths) in by_client {
            let provider = if bao_client {
                Provider::Bao
            } else {
                Provider::Vault
            };
            let Ok((client, _)) = self.client(&server, provider) else {
                continue;
            };
            let mut plan = client.prefetch(&paths);
            loop {
                if !steps.keep_going() {
                    return None;
                }
                steps.catch_up(kube, index);
                match client.list_next(&mut plan) {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        let at = server
                            .as_ref()
                            .map(|a| format!(" at {a}"))
                            .unwrap_or_default();
                        log::error!(
                            "listing secrets{at} failed, not asking that server again this pass: {e}"
                        );
                        failed.insert((server.clone(), bao_client));
                    }
                }
            }
        }
        Some(failed)
    }

    /// Logs what a lookup found: a failing server once per pass (when it
    /// failed `first`), what cannot be watched or checked once, a missing
    /// secret once until it is found again.
    fn log_lookup(
        &mut self,
        server: &Server,
        secret: &SecretRef,
        lookup: &Lookup,
        ignore_missing: bool,
        first: bool,
    ) {
        let at = server
            .as_ref()
            .map(|a| format!(" at {a}"))
            .unwrap_or_default();
        let source = (server.clone(), secret.clone());
        if matches!(lookup, Lookup::Found(_) | Lookup::Unreadable(..)) {
            self.said_missing.forget(&source);
        }
        match lookup {
            Lookup::Found(version) => log::debug!("{secret}{at} is at {version}"),
            Lookup::Unreadable(version, why) => {
                log::debug!("{secret}{at} is at {version}, which is {why}")
            }
            Lookup::Missing => {
                let level = match (self.said_missing.news(source, ()), ignore_missing) {
                    (false, _) => log::Level::Debug,
                    (true, true) => log::Level::Warn,
                    (true, false) => log::Level::Error,
                };
                log::log!(level, "Vault secret path {} not found{at}", secret.path)
            }
            // Said once per workload that uses it (`report_unavailable`).
            Lookup::Denied => log::debug!("{secret}{at}: permission denied"),
            Lookup::Unwatchable(why) => {
                if !self.renewals.unannotated.contains(&source) {
                    log::debug!("{secret}{at} has no versions: {why}");
                } else if self.said_unwatchable.news(source, ()) {
                    log::warn!(
                        "{secret}{at} cannot be watched: {why}{}",
                        dynamic::hint(why)
                    );
                }
            }
            Lookup::Failed(e @ Error::MountUnknown { .. }) => {
                if self.said_unknown.news(source, ()) {
                    log::warn!(
                        "{secret}{at} cannot be checked: {e}; its recorded version is kept \
                         and it is asked about again every pass"
                    );
                }
            }
            Lookup::Failed(e) if e.is_server_failure() => {
                if first {
                    log::error!(
                        "checking {secret}{at} failed, not asking that server again this pass: {e}"
                    );
                }
            }
            Lookup::Failed(e) => log::error!("checking {secret}{at} failed: {e}"),
        }
    }
}

/// The time now in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::*;

    #[test]
    fn a_missing_secret_is_logged_once_until_it_is_found() {
        let mut reloader = reloader_with_own_servers();
        let source = (None, secret("s/data/a"));
        let mut log = |lookup: Lookup| {
            reloader.log_lookup(&None, &source.1, &lookup, false, false);
            !reloader.said_missing.is_news(&source, &())
        };
        assert!(log(Lookup::Missing), "said");
        assert!(log(Lookup::Missing), "not said again");
        assert!(!log(Lookup::Found(version(1, "t1"))), "found again");
        assert!(log(Lookup::Missing), "gone again: said again");
    }

    #[test]
    fn what_is_kept_about_workloads_forgets_those_that_are_gone() {
        let mut reloader = reloader_with_own_servers();
        let own = Addr::parse("https://own.vault.svc:8200").unwrap();
        let (stays, goes) = (
            entry("stays", &["s/data/a"], Some("https://evil.example")),
            entry("goes", &["s/data/b"], Some("https://own.vault.svc:8200")),
        );
        for e in [&stays, &goes] {
            reloader
                .said_unavailable
                .said((e.id.clone(), e.refs[0].clone()), Unavailable::Missing);
            reloader.said_refused.said(e.id.clone(), "refused".into());
        }
        let gone = (Some(own.clone()), secret("s/data/b"));
        for said in [
            &mut reloader.said_unwatchable,
            &mut reloader.said_missing,
            &mut reloader.said_unknown,
        ] {
            said.said(gone.clone(), ());
        }
        let client = reloader.client(&Some(own.clone()), Provider::Vault).is_ok();
        assert!(client && reloader.per_workload.as_ref().unwrap().clients.len() == 1);
        // Only `stays` is left, and its own address is refused.
        let index: Index = [stays.clone()].into_iter().collect();
        let sources = [(None, secret("s/data/a"))].into();
        reloader.forget_what_is_gone(&index, &sources);
        let ids: Vec<&str> = reloader
            .said_unavailable
            .keys()
            .map(|(id, _)| id.name.as_str())
            .collect();
        assert_eq!(ids, ["stays"]);
        assert_eq!(
            reloader.said_refused.keys().collect::<Vec<_>>(),
            [&stays.id]
        );
        for said in [
            &reloader.said_unwatchable,
            &reloader.said_missing,
            &reloader.said_unknown,
        ] {
            assert_eq!(said.keys().count(), 0);
        }
        assert!(reloader.per_workload.as_ref().unwrap().clients.is_empty());
    }
}
