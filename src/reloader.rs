//! The reloader pass: asks Vault once for each distinct secret, decides per
//! workload what to patch (a pure function), and patches.

use crate::allow::{Addr, AllowList};
use crate::error::Error;
use crate::index::{Index, Update};
use crate::kube::Kube;
use crate::refs::{Provider, SecretRef};
use crate::state::{self, State, Version};
use crate::steps::Steps;
use crate::vault::{Lookup, Vault};
use crate::workload::{self, Entry, WorkloadId};
use serde_json::json;
use std::collections::{hash_map, BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod dynamic;
mod said;
pub use dynamic::DynamicSettings;
use said::Said;

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
/// ([`State::within`]), so a rollout never depends on it fitting.
pub fn decide(
    refs: &[SecretRef],
    stored: Option<&State>,
    lookup: &LookupFn,
    min_interval: Option<Duration>,
    now: u64,
    budget: usize,
) -> Decision {
    let empty = State::default();
    let stored_state = stored.unwrap_or(&empty);
    let mut changes = Vec::new();
    let mut state = State::default();
    for secret in refs {
        let key = secret.key();
        let before = stored_state.versions.get(&key);
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
    // A rollout ends the first sight of a workload using dynamic secrets.
    (state.last_reload, state.first_seen) = match changes.is_empty() {
        true => (last_reload, stored.and_then(|s| s.first_seen)),
        false => (Some(now), None),
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
    /// Workloads rolled out for their dynamic secrets (also in `reloaded`).
    pub renewed: Vec<WorkloadId>,
    /// The next renewal due time of each workload with a known lifetime
    /// (Unix seconds).
    pub next_renewal: std::collections::BTreeMap<WorkloadId, u64>,
    /// Workloads whose dynamic secrets' lifetime could not be determined.
    pub lifetime_unknown: usize,
}

/// Makes a client for a workload's own Vault address.
pub type ClientFactory = Box<dyn Fn(&Addr) -> Result<Vault, Error>>;

/// Which server a secret is read from: a workload's own Vault address, or
/// `None` for the configured server of its provider.
type Server = Option<Addr>;

/// Where a workload's `vault:` secrets are read, or why they are not read
/// at all (its `vault-addr` is unusable or not allowed).
type Route = Result<Server, String>;

/// Workloads' own Vault servers (`--per-workload-vault-addr`).
pub struct PerWorkload {
    make: ClientFactory,
    allowed: AllowList,
    /// Clients made on first use, forgotten when no workload names them.
    clients: HashMap<Addr, Vault>,
}

impl PerWorkload {
    /// Clients made by `make`, for the addresses `allowed` lets through.
    pub fn new(make: ClientFactory, allowed: AllowList) -> PerWorkload {
        PerWorkload {
            make,
            allowed,
            clients: HashMap::new(),
        }
    }
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

/// How [`apply`] writes: not at all in a dry run, and the limits of the
/// workload it reads back.
#[derive(Clone, Copy, Debug)]
struct Patching<'a> {
    dry_run: bool,
    limits: &'a workload::Limits,
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
    pub fn take_requests(&mut self) -> crate::metrics::Counts {
        let mut all = crate::metrics::Counts::new();
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

    /// Where `entry`'s `vault:` secrets are read.
    fn route(&self, entry: &Entry) -> Route {
        let allowed = self.per_workload.as_ref().map(|pw| &pw.allowed);
        route(allowed, &entry.id.namespace, entry.vault_addr.as_deref())
    }

    /// The server `secret` is read from on `route`; `None`: not read.
    fn server(route: &Route, secret: &SecretRef) -> Option<Server> {
        match (secret.provider, route) {
            (Provider::Vault, Ok(server)) => Some(server.clone()),
            (Provider::Vault, Err(_)) => None,
            (Provider::Bao, _) => Some(None),
        }
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

    /// One warning and one Warning Event for a workload whose `vault-addr`
    /// is refused, until the reason changes: its `vault:` secrets are not
    /// checked (its other secrets are).
    fn report_refused(&mut self, kube: &mut Kube, entry: &Entry, why: &str) {
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

    /// A Warning Event on a workload for each secret it uses that does not
    /// exist or that the policy refuses (with a warning line too: unlike a
    /// missing one, it is logged nowhere else), once until that changes; a
    /// secret found again clears it.
    fn report_unavailable(&mut self, kube: &mut Kube, entry: &Entry, lookup: &LookupFn) {
        let id = &entry.id;
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
            if !self.said_unavailable.is_news(&key, &now) {
                continue;
            }
            let (reason, message) = now.notice(secret);
            if now == Unavailable::Denied {
                log::warn!("{id}: {message}");
            }
            let event = (true, reason, message.as_str());
            if self.dry_run || record_event(kube, id, &entry.uid, event) {
                self.said_unavailable.said(key, now);
            }
        }
    }

    /// A Warning Event on a workload for `n` of its secrets that are not
    /// watched (past `--max-secrets-per-workload`, whose warning line the
    /// collector gave) or left out of its state (with a warning line),
    /// once per count.
    fn report_counted(&mut self, kube: &mut Kube, entry: &Entry, (what, n): (Counted, usize)) {
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
    fn report_unreadable(&mut self, kube: &mut Kube, entry: &Entry, lookup: &LookupFn) {
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

    /// The client for a server, and whether a missing secret there is only
    /// a warning.
    fn client(&mut self, server: &Server, provider: Provider) -> Result<(&mut Vault, bool), Error> {
        match (
            server,
            provider,
            self.bao.as_mut(),
            self.per_workload.as_mut(),
        ) {
            (Some(addr), _, _, Some(per_workload)) => {
                let client = match per_workload.clients.entry(addr.clone()) {
                    hash_map::Entry::Occupied(known) => known.into_mut(),
                    hash_map::Entry::Vacant(new) => new.insert((per_workload.make)(addr)?),
                };
                Ok((client, self.ignore_missing))
            }
            (_, Provider::Bao, Some(bao), _) => Ok((bao, self.bao_ignore_missing)),
            (_, Provider::Bao, None, _) => Ok((&mut self.vault, self.bao_ignore_missing)),
            _ => Ok((&mut self.vault, self.ignore_missing)),
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

/// Why a secret a workload uses cannot be checked, as its Event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unavailable {
    /// It does not exist.
    Missing,
    /// The reloader's Vault policy refuses it.
    Denied,
}

impl Unavailable {
    /// The Event's reason and message for `secret` (its path, never a value).
    fn notice(self, secret: &SecretRef) -> (&'static str, String) {
        let path = &secret.path;
        match self {
            Unavailable::Missing => (
                "SecretNotFound",
                format!("Vault secret path {path} not found"),
            ),
            Unavailable::Denied => (
                "SecretAccessDenied",
                format!(
                    "Vault secret path {path}: the reloader's Vault policy refuses it (403), so \
                     its changes are not seen; its recorded version is kept"
                ),
            ),
        }
    }
}

/// Secrets of a workload that are not followed, as its Event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Counted {
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

/// Records an Event `(warning, reason, message)` on workload `id`; whether
/// it was recorded. A failure is only
/// logged: the Event is a courtesy, the rollout or the warning stands.
fn record_event(
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

/// Where a workload in `namespace` naming `vault_addr` has its `vault:`
/// secrets read: the configured server when per-workload addresses are off
/// (`allowed` is `None`) or it names none; its own address only when
/// `allowed` lets it for that namespace.
fn route(allowed: Option<&AllowList>, namespace: &str, vault_addr: Option<&str>) -> Route {
    let (Some(allowed), Some(text)) = (allowed, vault_addr) else {
        return Ok(None);
    };
    match Addr::parse(text) {
        Ok(addr) if allowed.allows(&addr, namespace) => Ok(Some(addr)),
        Ok(addr) => Err(format!(
            "Vault address {addr} is not in --allowed-vault-addrs"
        )),
        Err(why) => Err(format!("its vault-addr annotation is unusable: {why}")),
    }
}

/// The time now in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn list(changes: &[Change]) -> String {
    changes
        .iter()
        .map(Change::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`apply`] did with a workload.
#[derive(Debug, Default)]
struct Applied {
    /// Its UID and the decision, when it was rolled out.
    rolled: Option<(String, Decision)>,
    /// The secrets whose versions its state leaves out ([`Decision::left_out`]).
    left_out: usize,
}

/// Decides for one workload (with its dynamic-secret `renewal`, if any) and
/// patches it; on a conflict reads it again, decides again and patches once
/// more. When the API server refuses the annotations as too long anyway,
/// the patch goes again with a state of no versions: the rollout never
/// waits for the state to fit. In a dry run it only logs.
fn apply(
    kube: &mut Kube,
    index: &mut Index,
    id: &WorkloadId,
    lookup: &LookupFn,
    renewal: Option<&dynamic::Renewal>,
    patching: Patching,
) -> Result<Applied, Error> {
    let mut fetched_again = false;
    let mut too_long = false;
    let mut renewed_again = None;
    loop {
        let Some(entry) = index.get(id) else {
            return Ok(Applied::default());
        };
        let budget = if too_long { 0 } else { entry.state_budget };
        let renewal = renewed_again.as_ref().or(renewal);
        let decision = plan(entry, lookup, renewal, budget);
        let left_out = decision.left_out;
        if !to_write(id, &decision, patching.dry_run) {
            return Ok(Applied {
                rolled: None,
                left_out,
            });
        }
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
                refresh(kube, index, id, patching.limits)?;
                // Decided again on the workload as it is now, the renewal too.
                if let (Some(renewal), Some(fresh)) = (renewal, index.get(id)) {
                    renewed_again = Some(renewal.again(fresh, unix_now()));
                }
                continue;
            }
            Err(Error::AnnotationsTooLong) if !too_long => {
                too_long = true;
                log::warn!("{id}: the API server refused its annotations as too long; writing its state without versions");
                continue;
            }
            Err(Error::NotFound) => {
                index.apply(Update::Deleted(id.clone()));
                return Ok(Applied::default());
            }
            Err(e) => return Err(e),
        };
        let uid = stored.metadata.uid.clone();
        update(index, id, stored, patching.limits);
        if !decision.rolls_out() {
            log::debug!("recorded the secret versions of {id}");
            return Ok(Applied {
                rolled: None,
                left_out,
            });
        }
        log::info!("reloaded {id}: {}", decision.summary());
        let rolled = Some((uid, decision));
        return Ok(Applied { rolled, left_out });
    }
}

/// The decision for `entry` now, its state cut to `budget` bytes, with its
/// dynamic-secret `renewal` if any.
fn plan(
    entry: &Entry,
    lookup: &LookupFn,
    renewal: Option<&dynamic::Renewal>,
    budget: usize,
) -> Decision {
    let now = unix_now();
    let decision = decide(
        &entry.refs,
        entry.state.as_ref(),
        lookup,
        entry.min_reload_interval,
        now,
        budget,
    );
    match renewal {
        Some(renewal) => dynamic::with_renewal(decision, renewal, now),
        None => decision,
    }
}

/// Whether `decision` for workload `id` is to be written now; when it is
/// not, the log says why it waits (its minimum interval, a secret that
/// cannot be read, a dry run).
fn to_write(id: &WorkloadId, decision: &Decision, dry_run: bool) -> bool {
    if let Some(until) = decision.deferred_until {
        log::info!(
            "{id}: waiting {}s (min-reload-interval) to reload for {}",
            until.saturating_sub(unix_now()),
            list(&decision.changes)
        );
        return false;
    }
    if !decision.held_by.is_empty() {
        let held: Vec<String> = decision.held_by.iter().map(|s| s.to_string()).collect();
        log::info!(
            "{id}: not reloading for {} while the current version of {} cannot be read",
            list(&decision.changes),
            held.join(", ")
        );
        return false;
    }
    if dry_run && decision.rolls_out() {
        log::info!("dry run: would reload {id}: {}", decision.summary());
    }
    !dry_run && (decision.rolls_out() || decision.write_state)
}

/// Replaces the entry with the workload as stored now (it may have opted out).
fn refresh(
    kube: &mut Kube,
    index: &mut Index,
    id: &WorkloadId,
    limits: &workload::Limits,
) -> Result<(), Error> {
    match kube.get(id.kind, &id.namespace, &id.name) {
        Ok(current) => {
            update(index, id, current, limits);
            Ok(())
        }
        Err(Error::NotFound) => {
            index.apply(Update::Deleted(id.clone()));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn update(
    index: &mut Index,
    id: &WorkloadId,
    current: workload::Workload,
    limits: &workload::Limits,
) {
    // Warnings about its values were already logged by the collector.
    let entry = current.into_entry(id.kind, limits, &mut Vec::new());
    index.apply(Update::Stored(id.clone(), entry));
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_851_811;

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
            last_reload: None,
            first_seen: None,
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
        let decision = decided(&refs, None, &found);
        assert!(decision.changes.is_empty());
        assert!(decision.write_state);
        assert_eq!(
            decision.state,
            state(&[("s/data/a", Some(version(1, "t1"))), ("s/data/b", None)])
        );
    }

    /// [`decide`] with no minimum interval, now, and room for any state.
    fn decided(
        refs: &[SecretRef],
        stored: Option<&State>,
        found: &HashMap<SecretRef, Lookup>,
    ) -> Decision {
        decide(refs, stored, &|s| found.get(s), None, NOW, state::MAX_BYTES)
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
        );
        assert_eq!(still.deferred_until, Some(NOW + 540));
        let later = decide(
            &refs,
            Some(&stored),
            &|s| both.get(s),
            ten_minutes,
            NOW + 540,
            state::MAX_BYTES,
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
        let baseline = decide(&refs, None, &|s| first.get(s), None, NOW, budget);
        assert_eq!((baseline.left_out, &baseline.state), (1, &two));
        assert!(baseline.write_state);
        // Stored cut, nothing changed: nothing to write, the same secret left out.
        let quiet = decide(&refs, Some(&two), &|s| first.get(s), None, NOW, budget);
        assert!(!quiet.write_state && quiet.changes.is_empty());
        assert_eq!(quiet.left_out, 1);
        // A kept secret changes: a rollout, within the budget still.
        let changed = lookups(vec![
            (a, Lookup::Found(version(2, "2026-11-28T07:43:32.1Z"))),
            v1(b),
            v1(c),
        ]);
        let rolled = decide(&refs, Some(&two), &|s| changed.get(s), None, NOW, budget);
        assert!(rolled.rolls_out() && rolled.write_state);
        assert_eq!(rolled.changes.len(), 1);
        // The rollout time takes some room too: the state may lose one more.
        assert!(rolled.state.encode().len() <= budget);
        assert!(rolled.state.versions.contains_key(&secret(a).key()));
    }

    #[test]
    fn annotations_refused_as_too_long_are_written_without_versions_and_it_rolls_out() {
        use crate::http::fake_server::{self, Reply};
        let too_long = r#"{"kind":"Status","code":422,"reason":"Invalid","details":{"causes":[
            {"reason":"FieldValueTooLong","message":"Too long","field":"metadata.annotations"}]}}"#;
        let stored = serde_json::json!({
            "metadata": {"name": "app", "namespace": "ns", "resourceVersion": "2", "uid": "u"},
            "spec": {"template": {"metadata": {"annotations": {
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}}}}
        })
        .to_string();
        let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&patches);
        let server = fake_server::start(move |r| {
            match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Reply::json(422, too_long),
                _ if r.method == "PATCH" => Reply::json(200, &stored),
                _ => Reply::json(500, "{}"),
            }
        });
        let (mut kube, _token) = crate::kube::tests::client(&server);
        let mut app = entry("app", &["s/data/a", "s/data/b"], None);
        app.state = Some(state(&[
            ("s/data/a", Some(version(1, "t1"))),
            ("s/data/b", Some(version(1, "t1"))),
        ]));
        let id = app.id.clone();
        let mut index: Index = [app].into_iter().collect();
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(2, "t2"))),
            ("s/data/b", Lookup::Found(version(1, "t1"))),
        ]);
        let lookup = |s: &SecretRef| found.get(s);
        let applied = apply(
            &mut kube,
            &mut index,
            &id,
            &lookup,
            None,
            Patching {
                dry_run: false,
                limits: &workload::Limits::default(),
            },
        )
        .expect("rolled out on the second try");
        let (_, decision) = applied.rolled.expect("a rollout");
        assert_eq!(decision.changes.len(), 1);
        assert_eq!(applied.left_out, 2);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let bodies: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        let state_of = |body: &serde_json::Value| {
            State::decode(
                body["metadata"]["annotations"][state::ANNOTATION]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(state_of(&bodies[0]).versions.len(), 2);
        assert!(state_of(&bodies[1]).versions.is_empty());
        for body in &bodies {
            let count = &body["spec"]["template"]["metadata"]["annotations"]
                ["secrets-reloader.security.bank-vaults.io/secret-reload-count"];
            assert_eq!(count, "1", "both carry the rollout");
        }
    }

    #[test]
    fn a_renewal_another_leader_just_made_is_not_made_again_after_a_conflict() {
        use crate::http::fake_server::{self, Reply};
        let now = unix_now();
        let stored = |last: u64| {
            let state = State {
                last_reload: Some(last),
                ..State::default()
            };
            serde_json::json!({
                "metadata": {"name": "app", "namespace": "ns", "resourceVersion": "2",
                    "uid": "u", "annotations": {(state::ANNOTATION): state.encode()}},
                "spec": {"template": {"metadata": {"annotations": {
                    "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}}}}
            })
            .to_string()
        };
        let fresh = stored(now - 1);
        let server = fake_server::start(move |r| match r.method.as_str() {
            "PATCH" => Reply::json(409, r#"{"kind":"Status","code":409}"#),
            _ => Reply::json(200, &fresh),
        });
        let (mut kube, _token) = crate::kube::tests::client(&server);
        let mut app = entry("app", &[], None);
        app.state = Some(State {
            last_reload: Some(now - 15),
            ..State::default()
        });
        let settings = crate::renewal::Settings {
            lifetime: Duration::from_secs(20),
            percent: 67,
            first_sight: crate::renewal::FirstSight::Rollout,
            min_interval: None,
            jitter: 0,
        };
        let db = secret("database/creds/app");
        let (mut renewal, schedule, why) = dynamic::plan(&app, &settings, &db, now);
        assert!(schedule.due <= now);
        renewal.roll = Some(why);
        let id = app.id.clone();
        let mut index: Index = [app].into_iter().collect();
        let applied = apply(
            &mut kube,
            &mut index,
            &id,
            &|_| None,
            Some(&renewal),
            Patching {
                dry_run: false,
                limits: &workload::Limits::default(),
            },
        )
        .unwrap();
        assert!(applied.rolled.is_none(), "rolled twice: {applied:?}");
        let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["PATCH", "GET"], "nothing more to write");
    }

    #[test]
    fn a_workloads_own_vault_is_used_only_when_allowed() {
        let allowed = AllowList::parse("https://vault.team.svc:8200").unwrap();
        let addr = |text| Ok(Some(Addr::parse(text).unwrap()));
        let cases: [(Option<&AllowList>, Option<&str>, Route); 6] = [
            (None, Some("https://evil.example:8200"), Ok(None)),
            (Some(&allowed), None, Ok(None)),
            (
                Some(&allowed),
                Some("https://vault.team.svc:8200"),
                addr("https://vault.team.svc:8200"),
            ),
            (
                Some(&allowed),
                Some("https://evil.example:8200"),
                Err(
                    "Vault address https://evil.example:8200 is not in --allowed-vault-addrs"
                        .into(),
                ),
            ),
            (
                Some(&allowed),
                Some("http://vault.team.svc:8200"),
                Err(
                    "Vault address http://vault.team.svc:8200 is not in --allowed-vault-addrs"
                        .into(),
                ),
            ),
            (
                Some(&allowed),
                Some("https://vault.team.svc:8200@evil.example"),
                Err(
                    "its vault-addr annotation is unusable: only scheme://host[:port] is \
                     allowed (no path, query or user)"
                        .into(),
                ),
            ),
        ];
        for (allowed, vault_addr, want) in cases {
            assert_eq!(route(allowed, "ns", vault_addr), want, "{vault_addr:?}");
        }
        let refused: Route = Err("x".into());
        assert_eq!(Reloader::server(&refused, &secret("s/data/a")), None);
        let bao = SecretRef {
            provider: Provider::Bao,
            path: "s/data/a".into(),
        };
        assert_eq!(Reloader::server(&refused, &bao), Some(None));
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
        );
        assert_eq!(decision.deferred_until, Some(NOW + 600));
    }

    /// An opted-in Deployment `ns/NAME` using `refs`, naming `vault_addr`.
    fn entry(name: &str, refs: &[&str], vault_addr: Option<&str>) -> Entry {
        Entry {
            id: WorkloadId {
                kind: workload::Kind::Deployment,
                namespace: "ns".into(),
                name: name.into(),
            },
            resource_version: "1".into(),
            uid: "u".into(),
            prefix: workload::PREFIXES[0],
            reload_count: 0,
            refs: refs.iter().map(|p| secret(p)).collect(),
            min_reload_interval: None,
            vault_addr: vault_addr.map(String::from),
            state: None,
            state_budget: state::MAX_BYTES,
            unwatched: 0,
            refused: Default::default(),
            dynamic: None,
        }
    }

    /// A dry-run reloader whose clients send nothing (port 9), allowing
    /// workloads' own servers under `own.vault.svc`.
    fn reloader_with_own_servers() -> Reloader {
        let settings = crate::settings::VaultSettings {
            proxies: Default::default(),
            addr: "http://127.0.0.1:9".into(),
            auth: crate::settings::VaultAuth::Token(crate::settings::Redacted("t".into())),
            namespace: None,
            ca_file: None,
            ca_secret: None,
            skip_verify: false,
            timeout: Duration::from_secs(1),
            ignore_missing: false,
        };
        let make: ClientFactory = Box::new(move |addr| {
            let own = crate::settings::VaultSettings {
                addr: addr.to_string(),
                ..settings.clone()
            };
            Vault::new(&own, None, std::path::PathBuf::new())
        });
        let vault = make(&Addr::parse("http://127.0.0.1:9").unwrap()).unwrap();
        let allowed = AllowList::parse("https://own.vault.svc").unwrap();
        let per_workload = PerWorkload::new(make, allowed);
        Reloader::new((vault, false), None, Some(per_workload), true)
    }

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
}
