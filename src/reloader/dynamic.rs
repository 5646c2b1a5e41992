//! The reloader's dynamic-secret renewals. Per pass: the lifetime of each
//! distinct dynamic path the opted-in workloads use (asked of Vault without
//! ever reading the path itself), each workload's schedule, and which of
//! the due renewals roll out now. The decisions are pure functions; the
//! requests and Events are in `Reloader::plan_renewals`.

use super::decide::{Decision, LookupFn};
use super::fair::Cycles;
use super::notices::record_event;
use super::routing::Server;
use super::said::Said;
use super::{Reloader, Report};
use crate::collector::index::Index;
use crate::collector::steps::Steps;
use crate::error::Error;
use crate::kube::Kube;
use crate::policy::refs::SecretRef;
use crate::policy::renewal::{self, Candidate, Clock, Record, Schedule, Settings};
use crate::policy::workload::{Dynamic, Entry, MaxAge, WorkloadId, MAX_AGE};
use crate::vault::lifetime::Lifetime;
use crate::vault::{LifetimeError, Lookup};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// The daemon's dynamic-secret settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicSettings {
    /// `--dynamic-secret-default-max-age`: the lifetime of a dynamic
    /// reference whose lifetime cannot be read; `None`: no guessing.
    pub default_max_age: Option<Duration>,
    /// `--max-rollouts-per-pass`: at most this many renewal rollouts per
    /// pass; `None`: a share that keeps every workload inside its window.
    pub max_rollouts: Option<usize>,
    /// The reloader period: renewals whose deadline comes before the next
    /// pass go now.
    pub period: Duration,
    /// `--max-renewals-per-namespace-hour`.
    pub per_namespace_hour: usize,
}

impl Default for DynamicSettings {
    fn default() -> DynamicSettings {
        DynamicSettings {
            default_max_age: None,
            max_rollouts: None,
            period: Duration::ZERO,
            per_namespace_hour: renewal::PER_NAMESPACE_HOUR_DEFAULT,
        }
    }
}

/// What the reloader keeps about renewals between passes.
#[derive(Default)]
pub struct Memory {
    pub(super) settings: DynamicSettings,
    /// Workloads told their lifetime is unknown, and why.
    said_unknown: Said<WorkloadId, String>,
    /// Workloads told their min-reload-interval is longer than the renewal time.
    said_interval: Said<WorkloadId>,
    /// Sources used by workloads without the max-age annotation: only these
    /// are reported as not watchable (with a hint).
    pub(super) unannotated: HashSet<(Server, SecretRef)>,
    /// Renewal rollouts per namespace in the last hour.
    hourly: renewal::Hourly,
    /// Namespaces told their renewals are held, and when (Unix seconds):
    /// said once an hour.
    said_capped: Said<String, u64>,
}

/// A workload's renewal this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// What to store when it is not rolled out (a first sight or a baseline).
    pub record: Option<Record>,
    /// Why it is rolled out for its dynamic secrets this pass, if it is.
    pub roll: Option<String>,
    /// Its next due time should it be rolled out now (Unix seconds).
    pub due_after_rollout: u64,
    /// Its schedule's deadline (Unix seconds): 90% of the lifetime.
    pub deadline: u64,
    /// What it was planned from, to plan it again ([`Renewal::again`]).
    pub basis: Option<(Settings, SecretRef)>,
}

impl Renewal {
    /// This renewal planned again on `entry` as read again after a conflict
    /// at `now`: a rollout chosen this pass stays only while it is still
    /// due, since the conflict may have been another leader rolling it out.
    pub fn again(&self, entry: &Entry, now: u64) -> Renewal {
        let Some((settings, secret)) = &self.basis else {
            return self.clone();
        };
        let (mut fresh, schedule, why) = plan(entry, settings, secret, now);
        if self.roll.is_some() && schedule.due <= now {
            fresh.roll = Some(why);
        }
        fresh
    }
}

/// The lifetime of a workload's dynamic secrets, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadLifetime {
    /// It uses no dynamic secret (or none could be told apart from KV v1).
    NoDynamic,
    /// The shortest, and the reference it comes from.
    Known(Duration, SecretRef),
    /// Some cannot be read and there is no fallback: the permissions missing.
    Unknown(Vec<String>),
    /// Vault could not be asked about some: try again next pass.
    Failed,
}

/// What Vault said about a dynamic path's lifetime this pass.
pub type LifetimeFn<'a> = dyn Fn(&SecretRef) -> Option<&'a Result<Lifetime, LifetimeError>> + 'a;

/// The dynamic references of a workload with the max-age annotation: those
/// whose KV lookup said they have no versions or could not tell (the mount
/// lookup was refused, so the engine is unknown: the lifetime search then
/// says what is missing), and its write-on-inject ones.
pub fn dynamic_refs(entry: &Entry, dynamic: &Dynamic, lookup: &LookupFn) -> Vec<SecretRef> {
    let unwatchable = entry.refs.iter().filter(|s| {
        matches!(
            lookup(s),
            Some(Lookup::Unwatchable(_) | Lookup::Failed(Error::MountUnknown { .. }))
        )
    });
    let all: BTreeSet<SecretRef> = unwatchable.chain(&dynamic.written).cloned().collect();
    all.into_iter().collect()
}

/// The workload's lifetime over its dynamic references `refs`: a fixed
/// max-age when any of them is dynamic (not KV); with `auto`, the smallest
/// of their lifetimes (`max` in daemon mode when renewable, else `ttl`), a
/// reference that cannot be read counting as `default_max_age` when given.
/// Nothing is guessed: one unknown without a fallback makes it unknown, one
/// failed request makes it wait for the next pass.
pub fn workload_lifetime(
    dynamic: &Dynamic,
    refs: &[SecretRef],
    lifetime: &LifetimeFn,
    default_max_age: Option<Duration>,
) -> WorkloadLifetime {
    let mut shortest: Option<(Duration, &SecretRef)> = None;
    let (mut unknown, mut failed) = (Vec::new(), false);
    for secret in refs {
        let age = match (lifetime(secret), dynamic.max_age) {
            (None | Some(Err(LifetimeError::NotDynamic)), _) => continue,
            (Some(_), MaxAge::Fixed(age)) => Some(age),
            (Some(Ok(known)), MaxAge::Auto) => Some(known.effective(dynamic.daemon_mode)),
            (Some(Err(LifetimeError::Unknown(why))), MaxAge::Auto) => {
                default_max_age.or_else(|| {
                    unknown.push(format!("{}: {why}", secret.path));
                    None
                })
            }
            (Some(Err(LifetimeError::Failed(_))), MaxAge::Auto) => {
                failed = true;
                None
            }
        };
        if let Some(age) = age {
            if shortest.is_none_or(|(least, _)| age < least) {
                shortest = Some((age, secret));
            }
        }
    }
    match (shortest, failed, unknown.is_empty()) {
        (_, true, _) => WorkloadLifetime::Failed,
        (_, false, false) => WorkloadLifetime::Unknown(unknown),
        (Some((age, secret)), false, true) => WorkloadLifetime::Known(age, secret.clone()),
        (None, false, true) => WorkloadLifetime::NoDynamic,
    }
}

/// The schedule settings of `entry` for credentials living `lifetime`.
pub fn settings(entry: &Entry, dynamic: &Dynamic, lifetime: Duration) -> Settings {
    Settings {
        lifetime,
        percent: dynamic.percent,
        first_sight: dynamic.first_sight,
        min_interval: entry.min_reload_interval,
        jitter: renewal::jitter(&entry.uid, lifetime),
    }
}

/// The stored rollouts of `entry`.
pub fn clock(entry: &Entry) -> Clock {
    entry
        .state
        .as_ref()
        .map_or_else(Clock::default, |state| Clock {
            last_rollout: state.last_reload,
            first_seen: state.first_seen,
        })
}

/// Why a workload is rolled out for `secret` at `now`, for its Event and
/// its log line: `dynamic secret database/creds/app renewed (lifetime 20s,
/// rolled at 65%)`, or, once its lifetime has ended, how long ago (its pods
/// probably hold expired credentials: worth saying plainly).
pub fn reason(
    secret: &SecretRef,
    clock: Clock,
    schedule: &Schedule,
    lifetime: Duration,
    now: u64,
) -> String {
    let path = &secret.path;
    let life = renewal::format_duration(lifetime);
    match (clock.last_rollout, schedule.first_sight) {
        (Some(last), false) => match renewal::overdue(last, now, lifetime) {
            Some(late) => format!(
                "dynamic secret {path} renewed {} after its lifetime ended (lifetime {life}): \
                 its credentials have probably expired",
                renewal::format_duration(late)
            ),
            None => format!(
                "dynamic secret {path} renewed (lifetime {life}, rolled at {}%)",
                renewal::percent_at(last, now, lifetime)
            ),
        },
        _ => format!(
            "dynamic secret {path} renewed (lifetime {life}, first sight: its pods' age is unknown)"
        ),
    }
}

/// The schedule of `entry` under `settings` at `now`: its renewal (not
/// rolling yet: [`renewal::choose`] decides), its schedule, and the reason
/// a rollout now would give, naming `secret` (the dynamic reference with
/// the shortest lifetime).
pub fn plan(
    entry: &Entry,
    settings: &Settings,
    secret: &SecretRef,
    now: u64,
) -> (Renewal, Schedule, String) {
    let clock = clock(entry);
    let schedule = renewal::schedule(clock, settings, now);
    let rolled = Clock {
        last_rollout: Some(now),
        first_seen: None,
    };
    let renewal = Renewal {
        record: schedule.record,
        roll: None,
        due_after_rollout: renewal::schedule(rolled, settings, now).due,
        deadline: schedule.deadline,
        basis: Some((*settings, secret.clone())),
    };
    let why = reason(secret, clock, &schedule, settings.lifetime, now);
    (renewal, schedule, why)
}

/// Joins a workload's renewal to what its secret versions decided: one
/// rollout for both. A renewal that rolls sets the last rollout to `now`
/// and carries the secret changes with it (the renewal already waited for
/// min-reload-interval up to its deadline, and is not held back by an
/// unreadable version: the credentials would expire). Without a rollout,
/// a first sight or a baseline is recorded.
pub fn with_renewal(mut decision: Decision, renewal: &Renewal, now: u64) -> Decision {
    if let Some(why) = &renewal.roll {
        decision.deferred_until = None;
        decision.held_by.clear();
        decision.state.last_reload = Some(now);
        decision.state.first_seen = None;
        if decision.changes.is_empty() {
            decision.state.cause.clear();
        }
        decision.write_state = true;
        decision.renewal = Some(why.clone());
        return decision;
    }
    let rolls = !decision.changes.is_empty();
    let waits = decision.deferred_until.is_some() || !decision.held_by.is_empty();
    match renewal.record {
        Some(_) if rolls || waits => {}
        Some(Record::LastRollout(at)) => {
            decision.state.last_reload = Some(at);
            decision.state.first_seen = None;
            decision.write_state = true;
        }
        Some(Record::FirstSeen(at)) => {
            decision.state.first_seen = Some(at);
            decision.write_state = true;
        }
        None => {}
    }
    decision
}

/// Records a rollout of workload `id` (decided as `decision`) in the
/// report: a renewal, and its next due time, which any rollout resets.
pub(super) fn rolled_out(
    memory: &mut Memory,
    report: &mut Report,
    id: &WorkloadId,
    decision: &Decision,
    renewal: Option<&Renewal>,
) {
    if decision.renewal.is_some() {
        report.renewed.push(id.clone());
        memory.hourly.made(&id.namespace, super::unix_now());
    }
    if let Some(renewal) = renewal {
        report
            .next_renewal
            .insert(id.clone(), renewal.due_after_rollout);
    }
}

/// What to add to "cannot be watched" for a path outside any KV engine: it
/// may be a dynamic secret, which the max-age annotation renews.
pub(super) fn hint(why: &str) -> String {
    match why.contains("not in a KV secrets engine") {
        true => format!(
            "; if it is a dynamic secret, the pod-template annotation \
             {}{MAX_AGE}: auto rolls its workloads out before their credentials expire",
            crate::policy::workload::PREFIXES[0]
        ),
        false => String::new(),
    }
}

/// A workload with the max-age annotation and its dynamic references, each
/// with the server it is asked on.
type Wanted<'e> = (&'e Entry, &'e Dynamic, Vec<(Server, SecretRef)>);

/// One workload's outcome in the planning.
enum Outcome {
    /// Scheduled: its renewal (not rolling yet), due time, deadline and the
    /// reason a rollout now would give.
    Planned(Renewal, Schedule, String),
    /// Its lifetime cannot be determined: why.
    Unknown(Vec<String>),
    /// Nothing to schedule this pass.
    Nothing,
}

impl Reloader {
    /// The daemon's dynamic-secret settings (default: no fallback, no cap).
    pub fn with_dynamic(mut self, settings: DynamicSettings) -> Reloader {
        self.renewals.settings = settings;
        self
    }

    /// Notes the sources used by workloads without the max-age annotation,
    /// the only ones reported as not watchable.
    pub(super) fn note_unannotated(&mut self, index: &Index) {
        let sources = index
            .values()
            .filter(|entry| entry.dynamic.is_none())
            .flat_map(|entry| {
                let route = self.route(entry);
                entry
                    .refs
                    .iter()
                    .filter_map(move |s| Some((Self::server(&route, s)?, s.clone())))
            })
            .collect();
        self.renewals.unannotated = sources;
    }

    /// This pass's renewals, per workload with the max-age annotation:
    /// asks the lifetime of each distinct dynamic path once, schedules each
    /// workload, reports unknown lifetimes and too long intervals (once
    /// each), and chooses which due renewals roll now. Fills the report's
    /// renewal figures. `None` when the loop asked to stop.
    pub(super) fn plan_renewals(
        &mut self,
        kube: &mut Kube,
        index: &Index,
        (ids, cycles): (&[(WorkloadId, u64)], &Cycles),
        steps: &mut dyn Steps,
        report: &mut Report,
    ) -> Option<HashMap<WorkloadId, Renewal>> {
        let now = super::unix_now();
        let wanted = self.dynamic_sources(index, ids, cycles);
        let distinct: BTreeSet<(Server, SecretRef)> = wanted
            .iter()
            .flat_map(|(_, _, s)| s.iter().cloned())
            .collect();
        let lifetimes = self.lifetimes(distinct, steps)?;
        let fallback = self.renewals.settings.default_max_age;
        let (mut renewals, mut reasons, mut due) = (HashMap::new(), HashMap::new(), Vec::new());
        for (entry, dynamic, sources) in wanted {
            // A step: its notices are requests.
            if !steps.keep_going() {
                return None;
            }
            let server: HashMap<&SecretRef, &Server> =
                sources.iter().map(|(v, s)| (s, v)).collect();
            let lifetime = |s: &SecretRef| lifetimes.get(&((*server.get(s)?).clone(), s.clone()));
            let refs: Vec<SecretRef> = sources.iter().map(|(_, s)| s.clone()).collect();
            let found = workload_lifetime(dynamic, &refs, &lifetime, fallback);
            let id = entry.id.clone();
            match self.outcome(kube, entry, dynamic, found, now) {
                Outcome::Planned(renewal, schedule, reason) => {
                    report.next_renewal.insert(id.clone(), schedule.due);
                    if schedule.due <= now {
                        due.push(Candidate {
                            key: id.clone(),
                            deadline: schedule.deadline,
                            namespace: id.namespace.clone(),
                        });
                        reasons.insert(id.clone(), reason);
                    }
                    renewals.insert(id, renewal);
                }
                Outcome::Unknown(whys) => {
                    report.lifetime_unknown += 1;
                    self.report_lifetime_unknown(kube, entry, &whys);
                }
                Outcome::Nothing => {}
            }
        }
        self.forget_renewals(index);
        let settings = self.renewals.settings;
        let (due, held) = self
            .renewals
            .hourly
            .within(due, now, settings.per_namespace_hour);
        self.report_capped(kube, index, held, now);
        let period = settings.period.as_secs().max(1);
        for id in renewal::choose(due, now, period, settings.max_rollouts) {
            if let Some(renewal) = renewals.get_mut(&id) {
                renewal.roll = reasons.remove(&id);
            }
        }
        Some(renewals)
    }

    /// Each workload of `ids` with the max-age annotation, with its
    /// dynamic references (as the lookups made since the first pass of its
    /// namespace's cycle tell) and the server each is asked on.
    fn dynamic_sources<'e>(
        &self,
        index: &'e Index,
        ids: &[(WorkloadId, u64)],
        cycles: &Cycles,
    ) -> Vec<Wanted<'e>> {
        let mut wanted = Vec::new();
        for (id, began) in ids {
            let Some(entry) = index.get(id) else {
                continue;
            };
            let Some(dynamic) = &entry.dynamic else {
                continue;
            };
            let route = self.route(entry);
            let lookup =
                |s: &SecretRef| cycles.fresh(&(Self::server(&route, s)?, s.clone()), *began);
            let sources = dynamic_refs(entry, dynamic, &lookup)
                .into_iter()
                .filter_map(|s| Some((Self::server(&route, &s)?, s)))
                .collect();
            wanted.push((entry, dynamic, sources));
        }
        wanted
    }

    /// The schedule of one workload whose lifetime search `found` ended so.
    fn outcome(
        &mut self,
        kube: &mut Kube,
        entry: &Entry,
        dynamic: &Dynamic,
        found: WorkloadLifetime,
        now: u64,
    ) -> Outcome {
        let (lifetime, secret) = match found {
            WorkloadLifetime::Known(lifetime, secret) => (lifetime, secret),
            WorkloadLifetime::Unknown(whys) => return Outcome::Unknown(whys),
            WorkloadLifetime::NoDynamic | WorkloadLifetime::Failed => return Outcome::Nothing,
        };
        self.renewals.said_unknown.forget(&entry.id);
        let settings = settings(entry, dynamic, lifetime);
        self.report_interval(kube, entry, &settings);
        let (renewal, schedule, why) = plan(entry, &settings, &secret, now);
        Outcome::Planned(renewal, schedule, why)
    }

    /// Asks each server the lifetime of each of its dynamic paths once.
    /// `None` when the loop asked to stop.
    fn lifetimes(
        &mut self,
        distinct: BTreeSet<(Server, SecretRef)>,
        steps: &mut dyn Steps,
    ) -> Option<HashMap<(Server, SecretRef), Result<Lifetime, LifetimeError>>> {
        let mut found = HashMap::with_capacity(distinct.len());
        for (server, secret) in distinct {
            if !steps.keep_going() {
                return None;
            }
            let result = match self.client(&server, secret.provider) {
                Ok((client, _)) => client.lifetime(&secret.path),
                Err(e) => Err(LifetimeError::Failed(e)),
            };
            match &result {
                Ok(lifetime) => log::debug!("{secret}: {lifetime:?}"),
                Err(LifetimeError::NotDynamic) => log::debug!("{secret} is not a dynamic secret"),
                Err(LifetimeError::Unknown(why)) => {
                    log::debug!("{secret}: lifetime unknown: {why}")
                }
                Err(LifetimeError::Failed(e)) => {
                    log::error!("asking the lifetime of {secret} failed: {e}")
                }
            }
            found.insert((server, secret), result);
        }
        Some(found)
    }

    /// One warning and one Warning Event an hour for a namespace whose
    /// renewals are `held` by `--max-renewals-per-namespace-hour`, on the
    /// first workload held.
    fn report_capped(
        &mut self,
        kube: &mut Kube,
        index: &Index,
        held: Vec<Candidate<WorkloadId>>,
        now: u64,
    ) {
        let cap = self.renewals.settings.per_namespace_hour;
        for candidate in held {
            let Some(entry) = index.get(&candidate.key) else {
                continue;
            };
            let said = &mut self.renewals.said_capped;
            if said
                .last(&candidate.namespace)
                .is_some_and(|at| now.saturating_sub(*at) < 3600)
            {
                continue;
            }
            said.said(candidate.namespace.clone(), now);
            let message = format!(
                "its dynamic-secret renewal is held: namespace {} had {cap} renewal rollouts in \
                 the last hour (--max-renewals-per-namespace-hour); its credentials may expire \
                 before it is renewed",
                candidate.namespace
            );
            log::warn!("{}: {message}", entry.id);
            if !self.dry_run {
                let event = (true, "RenewalsCapped", message.as_str());
                record_event(kube, &entry.id, &entry.uid, event);
            }
        }
    }

    /// One warning and one Warning Event for a workload whose dynamic
    /// secrets' lifetime cannot be determined, until the reason changes.
    fn report_lifetime_unknown(&mut self, kube: &mut Kube, entry: &Entry, whys: &[String]) {
        let why = whys.join("; ");
        if !self.renewals.said_unknown.is_news(&entry.id, &why) {
            return;
        }
        let message = format!(
            "the lifetime of its dynamic secrets cannot be determined (missing {why}); they are \
             not renewed: grant that read, set {}{MAX_AGE} to a duration, or start the reloader \
             with --dynamic-secret-default-max-age",
            entry.prefix
        );
        log::warn!("{}: {message}", entry.id);
        let event = (true, "DynamicSecretLifetimeUnknown", message.as_str());
        if self.dry_run || record_event(kube, &entry.id, &entry.uid, event) {
            self.renewals.said_unknown.said(entry.id.clone(), why);
        }
    }

    /// One warning and one Warning Event for a workload whose
    /// min-reload-interval is longer than its renewal time, until it is not.
    fn report_interval(&mut self, kube: &mut Kube, entry: &Entry, settings: &Settings) {
        if !renewal::interval_too_long(settings) {
            self.renewals.said_interval.forget(&entry.id);
            return;
        }
        if !self.renewals.said_interval.news(entry.id.clone(), ()) {
            return;
        }
        let message = format!(
            "{}/min-reload-interval is longer than the renewal time ({}% of the {} lifetime of \
             its dynamic secrets): renewals wait for it, up to {}% of the lifetime",
            entry.prefix,
            settings.percent,
            renewal::format_duration(settings.lifetime),
            renewal::DEADLINE_PERCENT
        );
        log::warn!("{}: {message}", entry.id);
        if !self.dry_run {
            let event = (true, "MinReloadIntervalTooLong", message.as_str());
            record_event(kube, &entry.id, &entry.uid, event);
        }
    }

    /// Drops what was said about workloads gone or no longer renewed.
    fn forget_renewals(&mut self, index: &Index) {
        let renewed = |id: &WorkloadId| index.get(id).is_some_and(|e| e.dynamic.is_some());
        self.renewals.said_unknown.retain(renewed);
        self.renewals.said_interval.retain(renewed);
        let namespaces: HashSet<&str> = index.keys().map(|id| id.namespace.as_str()).collect();
        self.renewals
            .said_capped
            .retain(|ns| namespaces.contains(ns.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::policy::refs::Provider;
    use crate::policy::renewal::FirstSight;
    use crate::policy::state::{State, Version};
    use crate::policy::workload::{Kind, PREFIXES};
    use crate::vault::lifetime::Source;

    const NOW: u64 = 1_800_000_000;

    fn secret(path: &str) -> SecretRef {
        SecretRef {
            provider: Provider::Vault,
            path: path.into(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn dynamic(max_age: MaxAge, daemon_mode: bool) -> Dynamic {
        Dynamic {
            max_age,
            percent: 67,
            first_sight: FirstSight::Rollout,
            daemon_mode,
            written: Vec::new(),
        }
    }

    fn lifetime(ttl: u64, max: u64, renewable: bool) -> Result<Lifetime, LifetimeError> {
        Ok(Lifetime {
            ttl: secs(ttl),
            max: secs(max),
            renewable,
            source: Source::Role,
        })
    }

    fn entry(uid: &str, state: Option<State>) -> Entry {
        Entry {
            id: WorkloadId {
                kind: Kind::Deployment,
                namespace: "ns".into(),
                name: uid.into(),
            },
            resource_version: "1".into(),
            uid: uid.into(),
            prefix: PREFIXES[0],
            reload_count: 0,
            refs: vec![secret("database/creds/app"), secret("secret/data/a")],
            min_reload_interval: None,
            vault_addr: None,
            state,
            state_budget: crate::policy::state::MAX_BYTES,
            unwatched: 0,
            refused: Default::default(),
            dynamic: Some(dynamic(MaxAge::Auto, false)),
            check_now: None,
            paused: false,
            window: None,
            rolling: false,
            failed: false,
            releases_hold: None,
            sources: None,
        }
    }

    #[test]
    fn dynamic_refs_are_the_unwatchable_and_the_written() {
        let mut e = entry("u", None);
        let mut d = dynamic(MaxAge::Auto, false);
        d.written = vec![secret("pki/issue/web"), secret("database/creds/app")];
        let unwatchable = Lookup::Unwatchable("it is not in a KV secrets engine");
        let found = Lookup::Found(Version {
            number: 1,
            created: "t".into(),
        });
        let hidden = Lookup::Failed(Error::MountUnknown {
            refused: 403,
            guess: "hidden-db/".into(),
            why: "the path is not MOUNT/data/...",
        });
        let down = Lookup::Failed(Error::Transport("refused".into()));
        let lookup = |s: &SecretRef| match s.path.as_str() {
            "database/creds/app" => Some(&unwatchable),
            "hidden-db/creds/app" => Some(&hidden),
            "aws/creds/x" => Some(&down),
            "secret/data/a" => Some(&found),
            _ => None,
        };
        e.refs
            .extend([secret("hidden-db/creds/app"), secret("aws/creds/x")]);
        assert_eq!(
            dynamic_refs(&e, &d, &lookup),
            [
                secret("database/creds/app"),
                secret("hidden-db/creds/app"),
                secret("pki/issue/web")
            ]
        );
        e.refs.clear();
        d.written.clear();
        assert!(dynamic_refs(&e, &d, &lookup).is_empty());
    }

    #[test]
    fn the_workload_lifetime_is_the_shortest_known() {
        let (db, pki, kv1, down) = (
            secret("database/creds/app"),
            secret("pki/issue/web"),
            secret("kv1/app"),
            secret("aws/creds/x"),
        );
        let answers: HashMap<SecretRef, Result<Lifetime, LifetimeError>> = [
            (db.clone(), lifetime(20, 60, true)),
            (pki.clone(), lifetime(30, 30, false)),
            (kv1.clone(), Err(LifetimeError::NotDynamic)),
            (
                down.clone(),
                Err(LifetimeError::Failed(Error::Transport("x".into()))),
            ),
        ]
        .into();
        let unknown = secret("database/creds/secret-role");
        let not_asked = secret("x/creds/y");
        let denied = Err(LifetimeError::Unknown(
            "read on database/roles/secret-role".into(),
        ));
        let lookup = |s: &SecretRef| match s == &unknown {
            true => Some(&denied),
            false => answers.get(s),
        };
        let known = |n, s: &SecretRef| WorkloadLifetime::Known(secs(n), s.clone());
        let auto = dynamic(MaxAge::Auto, false);
        let daemon = dynamic(MaxAge::Auto, true);
        let fixed = dynamic(MaxAge::Fixed(secs(45)), false);
        // name, settings, references, fallback, lifetime
        type Case<'a> = (
            &'a str,
            &'a Dynamic,
            Vec<&'a SecretRef>,
            Option<u64>,
            WorkloadLifetime,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("the default ttl without daemon mode", &auto, vec![&db, &pki], None, known(20, &db)),
            ("daemon mode: the max of what renews, the ttl of a certificate", &daemon, vec![&db, &pki], None, known(30, &pki)),
            ("daemon mode alone", &daemon, vec![&db], None, known(60, &db)),
            ("KV v1 is not dynamic", &auto, vec![&kv1], None, WorkloadLifetime::NoDynamic),
            ("nothing dynamic", &auto, vec![], None, WorkloadLifetime::NoDynamic),
            ("not asked (refused route)", &auto, vec![&not_asked], None, WorkloadLifetime::NoDynamic),
            ("unknown: no guessing", &auto, vec![&db, &unknown], None,
             WorkloadLifetime::Unknown(vec!["database/creds/secret-role: read on database/roles/secret-role".into()])),
            ("unknown with a fallback", &auto, vec![&db, &unknown], Some(10), known(10, &unknown)),
            ("a longer fallback", &auto, vec![&db, &unknown], Some(3600), known(20, &db)),
            ("a failure waits for the next pass", &auto, vec![&db, &down], None, WorkloadLifetime::Failed),
            ("fixed overrides auto", &fixed, vec![&db, &unknown, &down], None, known(45, &db)),
            ("fixed but only KV v1", &fixed, vec![&kv1], None, WorkloadLifetime::NoDynamic),
        ];
        for (name, d, refs, fallback, want) in cases {
            let refs: Vec<SecretRef> = refs.into_iter().cloned().collect();
            let got = workload_lifetime(d, &refs, &lookup, fallback.map(secs));
            assert_eq!(got, want, "{name}");
        }
    }

    fn rolled(last: Option<u64>, first: Option<u64>) -> State {
        State {
            last_reload: last,
            first_seen: first,
            ..State::default()
        }
    }

    fn decision(state: State, changes: usize, deferred: bool) -> Decision {
        let change = super::super::decide::Change {
            secret: secret("secret/data/a"),
            old: None,
            new: Version {
                number: 2,
                created: "t".into(),
            },
        };
        Decision {
            changes: vec![change; changes],
            state,
            write_state: changes > 0 && !deferred,
            deferred_until: deferred.then_some(NOW + 60),
            held_by: Vec::new(),
            renewal: None,
            left_out: 0,
        }
    }

    #[test]
    fn a_renewal_joins_the_secret_decision() {
        let roll = Renewal {
            record: None,
            roll: Some("dynamic secret database/creds/app renewed".into()),
            due_after_rollout: NOW + 13,
            deadline: NOW + 13,
            basis: None,
        };
        let first = Renewal {
            record: Some(Record::FirstSeen(NOW)),
            ..Renewal::default()
        };
        let baseline = Renewal {
            record: Some(Record::LastRollout(NOW)),
            ..Renewal::default()
        };
        let old = rolled(Some(NOW - 100), None);
        // name, decision, renewal, rolls out, written, stored r and f
        type Case = (
            &'static str,
            Decision,
            Renewal,
            bool,
            bool,
            (Option<u64>, Option<u64>),
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("a renewal alone", decision(old.clone(), 0, false), roll.clone(), true, true, (Some(NOW), None)),
            ("a renewal takes deferred changes along: one rollout", decision(old.clone(), 1, true), roll.clone(), true, true, (Some(NOW), None)),
            ("a renewal ends a first sight", decision(rolled(None, Some(NOW - 5)), 0, false), roll, true, true, (Some(NOW), None)),
            ("a first sight is recorded", decision(State::default(), 0, false), first.clone(), false, true, (None, Some(NOW))),
            ("a baseline is recorded", decision(State::default(), 0, false), baseline.clone(), false, true, (Some(NOW), None)),
            ("a change rolls out, the record is not needed", decision(rolled(Some(NOW), None), 1, false), first.clone(), true, true, (Some(NOW), None)),
            ("nothing is written while changes wait", decision(old.clone(), 1, true), baseline, false, false, (Some(NOW - 100), None)),
            ("nothing to do", decision(old, 0, false), Renewal::default(), false, false, (Some(NOW - 100), None)),
        ];
        for (name, before, renewal, rolls, written, (r, f)) in cases {
            let after = with_renewal(before, &renewal, NOW);
            assert_eq!(after.rolls_out(), rolls, "{name}: rolls out");
            assert_eq!(after.write_state, written, "{name}: written");
            assert_eq!(
                after.deferred_until.is_some(),
                !rolls && !after.changes.is_empty(),
                "{name}: deferred"
            );
            assert_eq!(
                (after.state.last_reload, after.state.first_seen),
                (r, f),
                "{name}: r, f"
            );
        }
    }

    #[test]
    fn a_renewal_planned_again_after_a_conflict_rolls_only_while_due() {
        let db = secret("database/creds/app");
        let s = settings(&entry("u", None), &dynamic(MaxAge::Auto, false), secs(20));
        let old = entry("u", Some(rolled(Some(NOW - 15), None)));
        let (mut chosen, schedule, why) = plan(&old, &s, &db, NOW);
        assert!(schedule.due <= NOW, "due: 15 s of a 20 s lifetime");
        chosen.roll = Some(why);
        // Read again: another leader rolled it out a second ago.
        let renewed = entry("u", Some(rolled(Some(NOW - 1), None)));
        let again = chosen.again(&renewed, NOW);
        assert_eq!(again.roll, None);
        assert_eq!(again.record, None);
        // Read again, nothing new: still due, still rolled.
        let same = chosen.again(&old, NOW);
        assert!(same.roll.is_some(), "{same:?}");
        // Not chosen this pass (the budget): not rolled, even though due.
        let (waiting, ..) = plan(&old, &s, &db, NOW);
        assert_eq!(waiting.again(&old, NOW).roll, None);
    }

    #[test]
    fn the_event_says_why() {
        let db = secret("database/creds/app");
        let mut d = decision(rolled(Some(NOW - 13), None), 0, false);
        let s = settings(&entry("u", None), &dynamic(MaxAge::Auto, false), secs(20));
        let e = entry("u", Some(rolled(Some(NOW - 13), None)));
        let (_, _, why) = plan(&e, &s, &db, NOW);
        assert_eq!(
            why,
            "dynamic secret database/creds/app renewed (lifetime 20s, rolled at 65%)"
        );
        let (_, schedule, first) = plan(&entry("u", None), &s, &db, NOW);
        assert!(schedule.first_sight);
        assert_eq!(
            first,
            "dynamic secret database/creds/app renewed (lifetime 20s, first sight: its pods' age \
             is unknown)"
        );
        d.renewal = Some(why);
        assert_eq!(
            d.reason(),
            "dynamic secret database/creds/app renewed (lifetime 20s, rolled at 65%)"
        );
        d.changes = decision(State::default(), 1, false).changes;
        assert_eq!(
            d.reason(),
            "Rolled out for new secret versions: vault:secret/data/a missing → v2; dynamic secret \
             database/creds/app renewed (lifetime 20s, rolled at 65%)"
        );
    }

    #[test]
    fn the_reason_says_how_far_into_the_lifetime_or_how_late() {
        let db = secret("database/creds/app");
        let on_schedule = Schedule {
            due: NOW,
            deadline: NOW,
            record: None,
            first_sight: false,
        };
        let first_sight = Schedule {
            first_sight: true,
            ..on_schedule
        };
        let rows = [
            (
                Some(NOW - 13),
                &on_schedule,
                20,
                "renewed (lifetime 20s, rolled at 65%)",
            ),
            (
                Some(NOW - 20),
                &on_schedule,
                20,
                "renewed (lifetime 20s, rolled at 100%)",
            ),
            (
                Some(NOW - 487),
                &on_schedule,
                15,
                "renewed 7m52s after its lifetime ended (lifetime 15s): its credentials have \
                 probably expired",
            ),
            (
                Some(NOW - 7200),
                &on_schedule,
                3600,
                "renewed 1h after its lifetime ended (lifetime 1h): its credentials have probably \
                 expired",
            ),
            (
                None,
                &first_sight,
                20,
                "renewed (lifetime 20s, first sight: its pods' age is unknown)",
            ),
            (
                Some(NOW - 9999),
                &first_sight,
                20,
                "renewed (lifetime 20s, first sight: its pods' age is unknown)",
            ),
        ];
        for (last_rollout, schedule, lifetime, expected) in rows {
            let clock = Clock {
                last_rollout,
                first_seen: None,
            };
            let said = reason(&db, clock, schedule, secs(lifetime), NOW);
            assert_eq!(
                said,
                format!("dynamic secret database/creds/app {expected}")
            );
        }
    }

    #[test]
    fn the_hint_names_the_annotation_only_outside_kv() {
        assert!(hint("it is not in a KV secrets engine")
            .contains("secrets-reloader.security.bank-vaults.io/dynamic-secret-max-age: auto"));
        assert_eq!(hint("a KV v1 secret has no versions"), "");
    }

    /// One reloader pass at `now` over workloads whose only memory is their
    /// state annotation (decoded from its text, as after a restart): which
    /// were rolled out.
    fn simulated_pass(
        states: &mut [String],
        lifetime: u64,
        now: u64,
        max: Option<usize>,
    ) -> Vec<usize> {
        let d = dynamic(MaxAge::Auto, false);
        let db = secret("database/creds/app");
        let entries: Vec<Entry> = states
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let state = (!text.is_empty()).then(|| State::decode(text).unwrap());
                entry(&format!("uid-{i}"), state)
            })
            .collect();
        let mut renewals = Vec::new();
        let mut due = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let (renewal, schedule, why) = plan(e, &settings(e, &d, secs(lifetime)), &db, now);
            if schedule.due <= now {
                due.push(Candidate {
                    key: i,
                    deadline: schedule.deadline,
                    namespace: e.id.namespace.clone(),
                });
            }
            renewals.push((renewal, why));
        }
        for i in renewal::choose(due, now, 1, max) {
            renewals[i].0.roll = Some(renewals[i].1.clone());
        }
        let mut rolled = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let secrets = super::super::decide::decide(
                &[],
                e.state.as_ref(),
                &|_| None,
                None,
                now,
                crate::policy::state::MAX_BYTES,
                false,
            );
            let after = with_renewal(secrets, &renewals[i].0, now);
            if after.rolls_out() {
                rolled.push(i);
            }
            if after.write_state {
                states[i] = after.state.encode();
            }
        }
        rolled
    }

    #[test]
    fn renewals_repeat_inside_the_lifetime_across_restarts() {
        let mut states = vec![String::new()];
        let rollouts: Vec<u64> = (0..200)
            .filter(|t| !simulated_pass(&mut states, 20, NOW + t, None).is_empty())
            .map(|t| NOW + t)
            .collect();
        let jitter = renewal::jitter("uid-0", secs(20));
        assert_eq!(
            rollouts[0],
            NOW + jitter,
            "first sight: within the jitter window"
        );
        for pair in rollouts[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert_eq!(gap, 13 - jitter, "67% of 20s less the jitter");
        }
        assert!(rollouts.len() >= 200 / 13, "{rollouts:?}");
    }

    #[test]
    fn a_baseline_waits_a_full_renewal_time() {
        let mut e = entry("uid-0", None);
        e.dynamic.as_mut().unwrap().first_sight = FirstSight::Baseline;
        let s = settings(&e, e.dynamic.as_ref().unwrap(), secs(20));
        let (renewal, schedule, _) = plan(&e, &s, &secret("database/creds/app"), NOW);
        assert_eq!(renewal.record, Some(Record::LastRollout(NOW)));
        assert_eq!(schedule.due, NOW + 13 - s.jitter);
        let after = with_renewal(
            super::super::decide::decide(
                &[],
                None,
                &|_| None,
                None,
                NOW,
                crate::policy::state::MAX_BYTES,
                false,
            ),
            &renewal,
            NOW,
        );
        assert!(!after.rolls_out());
        assert_eq!(after.state.encode(), format!(r#"{{"v":{{}},"r":{NOW}}}"#));
    }

    #[test]
    fn twenty_workloads_seen_at_once_are_spread() {
        let mut states = vec![String::new(); 20];
        let mut per_pass = Vec::new();
        let mut first = vec![None; 20];
        for t in 0..60 {
            let rolled = simulated_pass(&mut states, 600, NOW + t, None);
            for i in &rolled {
                first[*i].get_or_insert(t);
            }
            per_pass.push(rolled.len());
        }
        // A 600s lifetime has a 60s jitter window: every one is rolled out
        // inside it, never many in one pass.
        assert!(first.iter().all(|t| t.is_some_and(|t| t < 60)), "{first:?}");
        assert!(per_pass.iter().all(|n| *n <= 3), "{per_pass:?}");
        let capped = {
            let mut states = vec![String::new(); 20];
            simulated_pass(&mut states, 20, NOW, Some(1));
            simulated_pass(&mut states, 20, NOW + 2, Some(1))
        };
        assert!(capped.len() <= 1, "{capped:?}");
    }
}
