//! The reloader pass: asks Vault once for each distinct secret
//! ([`lookups`]), namespaces in turn ([`fair`]), decides per workload what
//! to do ([`decide`], pure), and does it ([`patch`]). Which server a
//! workload is read from is [`routing`]'s; what is told about a workload
//! besides its rollouts, [`notices`]'; dynamic-secret renewals,
//! [`dynamic`]'s.

use crate::collector::index::Index;
use crate::collector::steps::Steps;
use crate::kube::Kube;
use crate::policy::allow::Addr;
use crate::policy::refs::SecretRef;
use crate::policy::workload::{self, WorkloadId};
use crate::vault::Vault;
use fair::{Cycles, Rounds, Source, Turn, Uses};
use lookups::ClientKey;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod checks;
pub mod decide;
pub mod dynamic;
mod fair;
#[cfg(test)]
mod fixtures;
mod lookups;
mod notices;
mod patch;
pub mod routing;
mod said;
pub mod waves;
mod windows;
pub use dynamic::DynamicSettings;
use notices::{record_event, Counted, Unavailable};
use patch::{apply, Patching};
use routing::Server;
pub use routing::{ClientFactory, PerWorkload};
use said::Said;

/// How a pass went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct secrets the workloads use.
    pub secrets: usize,
    /// Secrets asked about this pass (a namespace going on from the last
    /// pass asks only what it has left).
    pub lookups: usize,
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
    /// Namespaces whose secrets were not all asked about when the pass ran
    /// out of time, with how many are left: they go on next pass.
    pub carried: BTreeMap<String, usize>,
    /// Secrets used that were denied, missing or unreadable, by namespace
    /// and that reason, as each workload was last decided.
    pub unavailable: BTreeMap<(String, &'static str), u64>,
    /// Changed workloads left waiting for their turn
    /// (`--max-concurrent-rollouts`, `--canary-rollouts`, paused).
    pub pending: usize,
    /// Changed workloads held because a rollout of the same secret
    /// version failed ([`waves`]).
    pub held: usize,
    /// Workloads rolled out by this daemon whose rollout is in progress,
    /// as the pass ended.
    pub in_progress: usize,
    /// Namespaces whose secrets were all known this pass after a cycle
    /// begun on an earlier one: passes are still too short for them.
    pub late: usize,
}

/// What a pass keeps while it runs.
struct Running {
    /// Each namespace's cycle of lookups, taken from the reloader for the
    /// pass and given back when it ends.
    cycles: Cycles,
    /// Clients whose server failed this pass: not asked again.
    unreachable: HashSet<ClientKey>,
    /// The API server could not be reached: no more patches this pass.
    api_down: bool,
    /// Workloads with dynamic secrets whose namespace is done, with the
    /// first pass of its cycle: decided together at the end.
    renew: Vec<(WorkloadId, u64)>,
    /// The workloads decided.
    settled: Vec<WorkloadId>,
    /// Changed workloads waiting for their turn ([`waves`]).
    waiting: Vec<waves::Waiting>,
    /// Those rolled now from `waiting`, so not held again.
    releasing: bool,
    /// Those left waiting.
    pending: Vec<WorkloadId>,
}

impl Running {
    fn new(cycles: Cycles) -> Running {
        Running {
            cycles,
            unreachable: HashSet::new(),
            api_down: false,
            renew: Vec::new(),
            settled: Vec::new(),
            waiting: Vec::new(),
            releasing: false,
            pending: Vec::new(),
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
    /// Paused workloads told their change waits.
    said_paused: Said<WorkloadId>,
    /// Workloads told their change waits for their window: when it opens.
    said_window: Said<WorkloadId, Option<i64>>,
    /// Held workloads told so: by which failed rollout of which version.
    said_held: Said<WorkloadId, (WorkloadId, waves::Cause)>,
    /// Secrets not watched or left out of the state, reported per
    /// workload: how many.
    said_counted: Said<(WorkloadId, Counted), usize>,
    /// Dynamic-secret settings and what was said about renewals.
    renewals: dynamic::Memory,
    dry_run: bool,
    /// What one workload may name, for the workloads read back.
    limits: workload::Limits,
    /// Where each namespace is in its lookups, across passes.
    cycles: Cycles,
    /// Check-now requests.
    checks: checks::Checks,
    /// Per workload, its secrets found denied, missing or unreadable when
    /// it was last decided, by namespace and reason
    /// ([`notices::count_unavailable`]): a namespace not decided this pass
    /// keeps its count.
    unavailable: HashMap<WorkloadId, UnavailableCounts>,
    /// How rollouts go in waves.
    waves: waves::Settings,
    /// Secret versions whose failed rollout an operator released, by the
    /// namespace released in.
    released: HashMap<String, HashSet<waves::Cause>>,
    /// `--reload-window`, for the workloads without their own.
    window: Option<crate::policy::window::Window>,
}

/// Counts of unavailable secrets by namespace and reason.
type UnavailableCounts = BTreeMap<(String, &'static str), u64>;

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
            said_paused: Said::default(),
            said_window: Said::default(),
            said_held: Said::default(),
            said_counted: Said::default(),
            renewals: dynamic::Memory::default(),
            dry_run,
            limits: workload::Limits::default(),
            cycles: Cycles::default(),
            checks: checks::Checks::default(),
            unavailable: HashMap::new(),
            waves: waves::Settings::default(),
            released: HashMap::new(),
            window: None,
        }
    }

    /// The same reloader holding the workloads it reads back to `limits`,
    /// as the collector does.
    pub fn with_limits(mut self, limits: workload::Limits) -> Reloader {
        self.limits = limits;
        self
    }

    /// The same reloader rolling out in waves ([`waves`]).
    pub fn with_waves(mut self, waves: waves::Settings) -> Reloader {
        self.waves = waves;
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

    /// Forgets how far each namespace's lookups went: when this replica
    /// stops leading, as what it found may be stale when it leads again.
    pub fn forget_progress(&mut self) {
        self.cycles = Cycles::default();
        self.checks.cycles = Cycles::default();
    }

    /// Revokes the Vault tokens the clients logged in for: at shutdown.
    pub fn revoke_tokens(&mut self) {
        self.clients().for_each(Vault::revoke);
    }

    /// One pass over the workloads in `index`, fair between namespaces
    /// ([`fair`]): each namespace in turn takes one step — a directory
    /// listed, a secret asked about, one workload decided and patched — and
    /// its workloads are decided as soon as its own secrets are known; the
    /// dynamic-secret renewals of the namespaces done come last. Between
    /// two steps the watch events are applied to `index` ([`Steps`]), so
    /// each workload is decided as it is then. Past its period
    /// ([`Steps::in_time`]) the pass ends, and the namespaces not done go
    /// on next pass from where they were.
    pub fn pass(&mut self, kube: &mut Kube, index: &mut Index, steps: &mut dyn Steps) -> Report {
        let mut report = Report::default();
        self.clients().for_each(Vault::begin_pass);
        let wanted = self.wanted(index, |_| true);
        let sources: BTreeSet<&Source> = wanted.values().flat_map(|uses| &uses.sources).collect();
        self.forget_what_is_gone(index, &sources);
        report.secrets = sources.len();
        drop(sources);
        self.note_unannotated(index);
        // An interrupted pass leaves no progress behind: the next leader,
        // or this one later, starts every namespace afresh.
        let cycles = std::mem::take(&mut self.cycles);
        let Some(mut running) = self.take_turns(wanted, cycles, (kube, index), steps, &mut report)
        else {
            report.interrupted = true;
            return report;
        };
        if !self.renew(kube, index, steps, &mut report, &mut running) {
            report.interrupted = true;
            return report;
        }
        self.cycles = running.cycles;
        report.in_progress = self.in_progress(index);
        for counts in self.unavailable.values() {
            for (key, n) in counts {
                *report.unavailable.entry(key.clone()).or_default() += n;
            }
        }
        report
    }

    /// Serves the check-now requests due ([`checks`]): looks up the
    /// secrets of the workloads asking, namespaces in turn, and decides
    /// each (renewals wait for the pass), with a Normal Event on each one
    /// it did not roll out saying so. `None` when none is due.
    pub fn check(
        &mut self,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
    ) -> Option<Report> {
        let now = std::time::Instant::now();
        let due: HashSet<WorkloadId> = self.checks.due(index, now).into_iter().collect();
        if due.is_empty() {
            return None;
        }
        let mut report = Report::default();
        self.clients().for_each(Vault::begin_pass);
        let wanted = self.wanted(index, |id| due.contains(id));
        let cycles = std::mem::take(&mut self.checks.cycles);
        let Some(mut running) = self.take_turns(wanted, cycles, (kube, index), steps, &mut report)
        else {
            report.interrupted = true;
            return Some(report);
        };
        for (id, began) in std::mem::take(&mut running.renew) {
            self.settle(kube, index, (&id, began), None, &mut report, &mut running);
        }
        let pending: HashSet<WorkloadId> = running.pending.iter().cloned().collect();
        for id in std::mem::take(&mut running.settled)
            .into_iter()
            .chain(pending.iter().cloned())
        {
            let Some(entry) = index.get(&id) else {
                continue;
            };
            self.checks.served(&id, now);
            if !report.reloaded.contains(&id) {
                let found = match pending.contains(&id) {
                    true => {
                        "a new version, whose rollout waits (reload-paused, reload-window, \
                         --max-concurrent-rollouts, --canary-rollouts, or held after a \
                         failed rollout)"
                    }
                    false => "no new version to roll out",
                };
                let message = format!(
                    "checked its {} secrets now ({}{}): {found}",
                    entry.refs.len(),
                    entry.prefix,
                    workload::CHECK_NOW
                );
                log::info!("{id}: {message}");
                record_event(
                    kube,
                    &id,
                    &entry.uid,
                    (false, "SecretsChecked", message.as_str()),
                );
            }
        }
        self.checks.cycles = running.cycles;
        Some(report)
    }

    /// Serves `wanted`'s namespaces in rounds ([`Reloader::step`]) from
    /// where `cycles` left them, until all are done or the time is up.
    /// `None` when the loop asked to stop.
    fn take_turns(
        &mut self,
        wanted: BTreeMap<String, Uses>,
        cycles: Cycles,
        (kube, index): (&mut Kube, &mut Index),
        steps: &mut dyn Steps,
        report: &mut Report,
    ) -> Option<Running> {
        let mut running = Running::new(cycles);
        let mut turns = running.cycles.begin(wanted);
        self.plan_listings(&mut turns, running.cycles.pass());
        let mut rounds = Rounds::new(turns, running.cycles.resume());
        loop {
            if !steps.keep_going() {
                return None;
            }
            if !steps.in_time() {
                break;
            }
            let Some((namespace, turn)) = rounds.next() else {
                break;
            };
            steps.catch_up(kube, index);
            if !self.step(namespace, turn, (kube, index), report, &mut running) {
                rounds.done();
            }
        }
        report.carried = fair::carried(rounds.left());
        running.cycles.resume_at(rounds.next_up());
        self.release(kube, index, report, &mut running);
        Some(running)
    }

    /// The secrets and the workloads of each namespace in `index`, of the
    /// workloads `which` takes.
    fn wanted(&self, index: &Index, which: impl Fn(&WorkloadId) -> bool) -> BTreeMap<String, Uses> {
        let mut wanted: BTreeMap<String, Uses> = BTreeMap::new();
        for entry in index.values().filter(|entry| which(&entry.id)) {
            let route = self.route(entry);
            let uses = wanted.entry(entry.id.namespace.clone()).or_default();
            uses.workloads.push(entry.id.clone());
            let sources = entry
                .refs
                .iter()
                .filter_map(|s| Some((Self::server(&route, s)?, s.clone())));
            uses.sources.extend(sources);
        }
        wanted
    }

    /// One step of `namespace`'s `turn`: a directory listed, a secret
    /// asked about, or one of its workloads decided (patched, told) once
    /// all its secrets are known. `false` when it has nothing left to do
    /// this pass.
    fn step(
        &mut self,
        namespace: &str,
        turn: &mut Turn,
        (kube, index): (&mut Kube, &mut Index),
        report: &mut Report,
        running: &mut Running,
    ) -> bool {
        if self.list_step(turn, running) {
            return true;
        }
        while let Some(source) = turn.queue.pop_front() {
            if running.cycles.fresh(&source, turn.began).is_none() {
                let lookup = self.look_up(&source, running, report);
                running.cycles.found(source, lookup);
                return true;
            }
        }
        if turn.settle.is_none() {
            report.late += usize::from(turn.began < running.cycles.pass());
            running.cycles.ended(namespace);
            turn.settle = Some(self.known(index, turn, running));
        }
        if running.api_down {
            return false;
        }
        let Some(id) = turn.settle.as_mut().and_then(VecDeque::pop_front) else {
            return false;
        };
        self.settle(kube, index, (&id, turn.began), None, report, running);
        true
    }

    /// The workloads of `turn` still there whose secrets were all asked
    /// about in its cycle: those to decide now. One created meanwhile is
    /// decided on its namespace's next cycle; those with dynamic secrets
    /// are left to [`Reloader::renew`].
    fn known(&self, index: &Index, turn: &Turn, running: &mut Running) -> VecDeque<WorkloadId> {
        let mut now = VecDeque::new();
        for id in &turn.workloads {
            let Some(entry) = index.get(id) else {
                continue;
            };
            let route = self.route(entry);
            let all_known = entry.refs.iter().all(|s| match Self::server(&route, s) {
                Some(server) => running
                    .cycles
                    .fresh(&(server, s.clone()), turn.began)
                    .is_some(),
                None => true,
            });
            match (all_known, entry.dynamic.is_some()) {
                (false, _) => {}
                (true, false) => now.push_back(id.clone()),
                (true, true) => running.renew.push((id.clone(), turn.began)),
            }
        }
        now
    }

    /// Decides workload `id` on the lookups made since pass `began`, with
    /// its dynamic-secret `renewal` if any: tells what cannot be checked,
    /// patches it, and records its rollout in `report`. An API server that
    /// cannot be reached ends the pass's patches: the rest would fail alike,
    /// and their changes wait for the next pass.
    fn settle(
        &mut self,
        kube: &mut Kube,
        index: &mut Index,
        (id, began): (&WorkloadId, u64),
        renewal: Option<&dynamic::Renewal>,
        report: &mut Report,
        running: &mut Running,
    ) {
        let Some(entry) = index.get(id) else {
            return;
        };
        let route = &self.route(entry);
        let cycles = &running.cycles;
        let fresh = |secret: &SecretRef| {
            cycles.fresh(&(Self::server(route, secret)?, secret.clone()), began)
        };
        // Each secret is asked about several times below (the notices, the
        // decision): found once here; a workload read again after a
        // conflict may name others.
        let mut found: Vec<(SecretRef, Option<&crate::vault::Lookup>)> =
            entry.refs.iter().map(|s| (s.clone(), fresh(s))).collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let lookup = |secret: &SecretRef| match found.binary_search_by(|(s, _)| s.cmp(secret)) {
            Ok(at) => found[at].1,
            Err(_) => fresh(secret),
        };
        let renews = renewal.filter(|r| r.roll.is_some());
        if let Some(renewal) = renews {
            if !self.renewal_goes(kube, index, entry, renewal) {
                running.pending.push(id.clone());
                report.pending += 1;
                return;
            }
        }
        if renews.is_none() && !running.releasing {
            match self.must_wait(entry, &lookup) {
                Some(waves::Wait::Turn(oldest, causes)) => {
                    let id = id.clone();
                    let waiting = waves::Waiting {
                        oldest,
                        id,
                        began,
                        causes,
                    };
                    running.waiting.push(waiting);
                    return;
                }
                Some(waves::Wait::Paused) => {
                    self.report_paused(kube, entry);
                    running.pending.push(id.clone());
                    report.pending += 1;
                    return;
                }
                Some(waves::Wait::Window(opens)) => {
                    self.report_window(kube, entry, opens);
                    running.pending.push(id.clone());
                    report.pending += 1;
                    return;
                }
                None => {}
            }
        }
        if !entry.paused {
            self.said_paused.forget(id);
        }
        self.said_window.forget(id);
        self.said_held.forget(id);
        running.settled.push(id.clone());
        if let Err(why) = route {
            self.report_refused(kube, entry, why);
        }
        self.report_unavailable(kube, entry, &lookup);
        self.report_unreadable(kube, entry, &lookup);
        let mut unavailable = UnavailableCounts::new();
        notices::count_unavailable(&mut unavailable, entry, &lookup);
        match unavailable.is_empty() {
            true => self.unavailable.remove(id),
            false => self.unavailable.insert(id.clone(), unavailable),
        };
        self.report_counted(kube, entry, (Counted::Unwatched, entry.unwatched));
        self.report_counted(kube, entry, (Counted::Refused, entry.refused.count));
        let patching = Patching {
            dry_run: self.dry_run,
            limits: &self.limits,
        };
        match apply(kube, index, id, &lookup, renewal, patching) {
            Ok(applied) => {
                if let Some(entry) = index.get(id) {
                    self.report_counted(kube, entry, (Counted::LeftOut, applied.left_out));
                }
                if let Some((uid, decision)) = applied.rolled {
                    let message = decision.reason();
                    record_event(kube, id, &uid, (false, "SecretsReloaded", message.as_str()));
                    dynamic::rolled_out(&mut self.renewals, report, id, &decision, renewal);
                    report.reloaded.push(id.clone());
                }
            }
            Err(e) => {
                report.patch_failures += 1;
                log::error!("updating {id} failed: {e}");
                running.api_down = e.is_unreachable();
            }
        }
    }

    /// The dynamic-secret renewals of the namespaces done this pass: plans
    /// them together ([`Reloader::plan_renewals`], which shares the budget
    /// between namespaces), then decides each workload, a step each.
    /// `false` when the loop asked to stop.
    fn renew(
        &mut self,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
        report: &mut Report,
        running: &mut Running,
    ) -> bool {
        let wanted = std::mem::take(&mut running.renew);
        let planned = (wanted.as_slice(), &running.cycles);
        let Some(renewals) = self.plan_renewals(kube, index, planned, steps, report) else {
            return false;
        };
        for (id, began) in wanted {
            if !steps.keep_going() {
                return false;
            }
            steps.catch_up(kube, index);
            if running.api_down {
                break;
            }
            let renewal = renewals.get(&id);
            self.settle(kube, index, (&id, began), renewal, report, running);
        }
        true
    }

    /// Drops what is kept about workloads, secrets and servers no longer in
    /// the index, so nothing grows with workloads that came and went.
    fn forget_what_is_gone(&mut self, index: &Index, sources: &BTreeSet<&Source>) {
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
            said.retain(|source| sources.contains(&source));
        }
        self.said_refused.retain(|id| refused.contains(id));
        self.said_paused.retain(|id| index.contains_key(id));
        self.said_window.retain(|id| index.contains_key(id));
        self.said_held.retain(|id| index.contains_key(id));
        self.said_counted.retain(|(id, _)| index.contains_key(id));
        self.unavailable.retain(|id, _| index.contains_key(id));
        if let Some(per_workload) = self.per_workload.as_mut() {
            let used: HashSet<&Addr> = sources.iter().filter_map(|(s, _)| s.as_ref()).collect();
            per_workload.clients.retain(|addr, _| used.contains(addr));
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
    use crate::collector::steps::Unattended;
    use crate::policy::refs::Provider;
    use fixtures::*;

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
        let kept = (None, secret("s/data/a"));
        let sources = [&kept].into();
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

    /// A loop that gives a pass `steps` steps of time.
    struct Budget {
        steps: usize,
        taken: usize,
    }

    impl Steps for Budget {
        fn keep_going(&mut self) -> bool {
            self.taken += 1;
            true
        }

        fn in_time(&self) -> bool {
            self.taken <= self.steps
        }
    }

    /// `ns/name` using `paths`, recorded at version 2 of each.
    fn workload(namespace: &str, name: &str, paths: &[&str]) -> workload::Entry {
        let mut entry = entry(name, paths, None);
        entry.id.namespace = namespace.into();
        let versions: Vec<(&str, Option<_>)> =
            paths.iter().map(|p| (*p, Some(version(2, "t2")))).collect();
        entry.state = Some(state(&versions));
        entry
    }

    #[test]
    fn namespaces_take_turns_and_one_too_large_goes_on_next_pass() {
        use crate::io::http::fake_server::{self, Reply};
        // Every good/ secret is at version 3; evil's paths do not exist.
        let vault = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, r#"{"data":{"ttl":3600}}"#),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(
                200,
                r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#,
            ),
            p if p.starts_with("/v1/secret/metadata/good/") => Reply::json(
                200,
                r#"{"data":{"current_version":3,"versions":{"3":{"created_time":"t3"}}}}"#,
            ),
            _ => Reply::json(404, r#"{"errors":[]}"#),
        });
        let kube_server = fake_server::start(|r| match r.method.as_str() {
            // The workload as patched: still using good's secret.
            "PATCH" => Reply::json(
                200,
                r#"{"metadata":{"name":"app","namespace":"good","uid":"u","resourceVersion":"2"},
                "spec":{"template":{"metadata":{"annotations":{
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change":"true"}},
                "spec":{"containers":[{"name":"c","env":[
                {"name":"P","value":"vault:secret/data/good/db#password"}]}]}}}}"#,
            ),
            _ => Reply::json(201, "{}"),
        });
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault);
        let mut reloader = Reloader::new((client, false), None, None, false);
        let evil: Vec<String> = (0..10).map(|n| format!("secret/data/evil/{n}")).collect();
        let evil: Vec<&str> = evil.iter().map(String::as_str).collect();
        let mut index: Index = [
            workload("evil", "w", &evil),
            workload("good", "app", &["secret/data/good/db"]),
        ]
        .into_iter()
        .collect();
        let asked = |from: usize| -> Vec<String> {
            let requests = vault.requests();
            let metadata = requests
                .iter()
                .filter_map(|r| r.path.strip_prefix("/v1/secret/metadata/"));
            metadata.skip(from).map(String::from).collect()
        };
        // Pass 1 has time for 5 steps: good's secret is asked second, and
        // good is rolled before evil's secrets are known.
        let mut budget = Budget { steps: 5, taken: 0 };
        let report = reloader.pass(&mut kube, &mut index, &mut budget);
        assert_eq!(asked(0), ["evil/0", "good/db", "evil/1", "evil/2"]);
        let rolled: Vec<&str> = report.reloaded.iter().map(|id| id.name.as_str()).collect();
        assert_eq!(rolled, ["app"]);
        assert_eq!(report.carried, [("evil".to_string(), 7)].into());
        assert_eq!(report.late, 0);
        // Pass 2 starts with good, whose turn was next; evil goes on where
        // it was, and good is asked afresh.
        let mut budget = Budget { steps: 5, taken: 0 };
        let report = reloader.pass(&mut kube, &mut index, &mut budget);
        assert_eq!(asked(4), ["good/db", "evil/3", "evil/4"]);
        assert_eq!(report.carried, [("evil".to_string(), 5)].into());
        // With time enough, evil finishes; nothing it asked before is
        // asked again, and its missing secrets are told in one go.
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(
            asked(7),
            ["evil/5", "good/db", "evil/6", "evil/7", "evil/8", "evil/9"]
        );
        assert!(report.carried.is_empty());
        assert_eq!(report.late, 1, "evil's cycle began two passes ago");
        let missing: UnavailableCounts = [(("evil".to_string(), "missing"), 10)].into();
        assert_eq!(report.unavailable, missing);
        let events: Vec<String> = kube_server
            .requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/namespaces/evil/events")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0]
            .contains("10 Vault secret paths not found: secret/data/evil/0, secret/data/evil/1, "));
        reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(kube_server.hits("/api/v1/namespaces/evil/events"), 1);
        // A pass that does not get to decide evil keeps its count.
        let mut budget = Budget { steps: 2, taken: 0 };
        let report = reloader.pass(&mut kube, &mut index, &mut budget);
        assert!(!report.carried.is_empty());
        assert_eq!(report.unavailable, missing);
    }

    #[test]
    fn a_directory_several_namespaces_use_is_listed_once_a_pass() {
        use crate::io::http::fake_server::{self, Reply};
        // secret/team/ lists a (v3), b (destroyed), c/ and d (without
        // metadata); every metadata read answers version 3.
        const PAGE: &str = r#"{"data":{"keys":["a","b","c/","d"],"key_info":{
            "a":{"current_version":3,"versions":{"3":{"created_time":"2024-01-01T00:00:00Z"}}},
            "b":{"current_version":2,"versions":{"2":{"created_time":"2024-02-01T00:00:00Z","destroyed":true}}},
            "c/":{"current_version":0},"d":null}}}"#;
        let vault = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, r#"{"data":{"ttl":3600}}"#),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(
                200,
                r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#,
            ),
            p if p.starts_with("/v1/secret/detailed-metadata/team/") => Reply::json(200, PAGE),
            _ => Reply::json(
                200,
                r#"{"data":{"current_version":3,"versions":{"3":{"created_time":"t3"}}}}"#,
            ),
        });
        let kube_server = fake_server::start(|_| Reply::json(201, "{}"));
        let (mut kube, _token) = crate::kube::tests::client(&kube_server);
        let client = crate::vault::tests::client(&vault).with_listing();
        let mut reloader = Reloader::new((client, false), None, None, true);
        let x = workload(
            "x",
            "w",
            &[
                "secret/data/team/a",
                "secret/data/team/b",
                "secret/data/x/1",
            ],
        );
        let y = workload("y", "w", &["secret/data/team/d", "secret/data/y/1"]);
        let mut index: Index = [x, y].into_iter().collect();
        // The first pass learns the mount; the second lists.
        reloader.pass(&mut kube, &mut index, &mut Unattended);
        let read_before = vault.hits("/v1/secret/metadata/");
        let report = reloader.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(
            vault.hits("/v1/secret/detailed-metadata/"),
            1,
            "one listing for both"
        );
        let read: Vec<String> = vault
            .requests()
            .into_iter()
            .filter_map(|r| {
                r.path
                    .strip_prefix("/v1/secret/metadata/")
                    .map(String::from)
            })
            .skip(read_before)
            .collect();
        // Each namespace asks its own directory's secret first; team/d was
        // listed without metadata, so it is read.
        assert_eq!(read, ["x/1", "y/1", "team/d"]);
        assert_eq!(report.lookups, 5);
    }
}
