//! The collector: keeps the index of opted-in workloads up to date. Each
//! kind (per namespace with `--namespaces`) is listed once, page by page,
//! then followed by one long-lived watch stream whose events are applied as
//! they arrive: every turn of the loop reads what is there, never waiting.
//! A stream that ends is reopened from the last resourceVersion; `410 Gone`
//! (or any doubt) lists that scope again.

pub mod follow;
pub mod index;
pub mod steps;

use crate::collector::follow::{Follow, Happened, Say, Standing, FAILED_TRIES};
use crate::collector::index::{Index, SourceId, Update};
use crate::collector::steps::Steps;
use crate::error::Error;
use crate::io::poll::Interest;
use crate::io::stream::Flow;
use crate::kube::watch::Watched;
use crate::kube::watch::{Event, Watch};
use crate::kube::{Kube, Resource};
use crate::policy::sources::{ConfigMap, Held, Object, Secret};
use crate::policy::workload::{Entry, Kind, Listed, Source, Unreadable, Workload, WorkloadId};
use serde::de::DeserializeOwned;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The most ConfigMaps (and Secrets) read one by one in a turn (workloads that began to
/// name them); the rest wait for the next turns.
const READS_PER_TURN: usize = 10;

/// Items per list page, at first.
const PAGE_SIZE: u32 = 500;

/// The shortest time the server is asked to keep a watch open; scopes get
/// up to twice this, spread so that their reconnects do not come together.
const WATCH_SECONDS: u32 = 300;

/// How long past its `timeoutSeconds` a watch is trusted: a stream still
/// open then is a connection that died without a word, and is replaced.
const WATCH_GRACE: Duration = Duration::from_secs(30);

/// The next, smaller page size after a page passed its byte cap (large
/// objects: big annotations, many managed fields); `None` when a single
/// object did.
fn smaller_page(size: u32) -> Option<u32> {
    (size > 1).then_some(size / 2)
}

/// The `timeoutSeconds` of scope `i`'s watches: spread over
/// [`WATCH_SECONDS`, 2 × `WATCH_SECONDS`).
fn watch_seconds(i: usize) -> u32 {
    WATCH_SECONDS + (i as u32).wrapping_mul(61) % WATCH_SECONDS
}

/// One kind in one namespace (or all), and how it is followed.
struct Scope {
    resource: Resource,
    namespace: Option<String>,
    /// Where it stands ([`crate::collector::follow`]).
    follow: Follow,
    /// The open watch, while it stands [`Standing::Watching`].
    watch: Option<Watch>,
}

impl Scope {
    fn holds(&self, id: &WorkloadId) -> bool {
        let Resource::Workloads(kind) = self.resource else {
            return false;
        };
        crate::collector::index::holds(kind, self.namespace.as_deref(), id)
    }

    /// Steps its standing; the watch closes when it no longer watches.
    fn step(&mut self, happened: Happened) -> Say {
        let (follow, say) = self.follow.step(happened);
        self.follow = follow;
        if !matches!(self.follow.standing, Standing::Watching(_)) {
            self.watch = None;
        }
        say
    }
}

/// How a pass went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Scopes that could not be brought up to date.
    pub failures: u32,
    /// The pass was stopped by the loop before it finished.
    pub interrupted: bool,
    /// Watch events applied since the last pass.
    pub events: u64,
    /// Scopes followed by an open watch, of all scopes.
    pub watches: (usize, usize),
}

/// Keeps the index between passes.
pub struct Collector {
    scopes: Vec<Scope>,
    exclude: Vec<String>,
    /// A hash of the warnings last logged per workload, so an unchanged
    /// problem is reported once, not on every event.
    warned: HashMap<WorkloadId, u64>,
    /// The byte cap of one list page.
    page_bytes: u64,
    /// Whether scopes are followed by watches (not with `--once`).
    watching: bool,
    /// Events applied since the last pass.
    events: u64,
    /// What one workload may name.
    limits: crate::policy::workload::Limits,
    /// A hash of the warnings of the last join per workload (its
    /// ConfigMaps' and Secrets' references), logged once like `warned`.
    joined: HashMap<WorkloadId, u64>,
    /// Named objects whose reading failed: read again at the next pass.
    tried: BTreeSet<SourceId>,
    /// Workloads told once that the Secrets they take env from are not
    /// followed (without `--follow-secret-refs`).
    told: BTreeSet<WorkloadId>,
    /// The API server could not be reached: turns bring no scope up until
    /// the next pass tries again, so streams noticed cut one after the
    /// other cost one failed request, not one each.
    unreachable: bool,
}

impl Collector {
    /// A collector of `kinds` over `namespaces` (empty: the whole cluster),
    /// never looking at `exclude`, following each scope with a watch.
    pub fn new(kinds: &[Kind], namespaces: &[String], exclude: &[String]) -> Collector {
        let namespaces: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let scopes = kinds
            .iter()
            .copied()
            .flat_map(|kind| {
                namespaces.iter().map(move |namespace| Scope {
                    resource: Resource::Workloads(kind),
                    namespace: namespace.clone(),
                    follow: Follow::default(),
                    watch: None,
                })
            })
            .collect();
        Collector {
            scopes,
            exclude: exclude.to_vec(),
            warned: HashMap::new(),
            joined: HashMap::new(),
            tried: BTreeSet::new(),
            told: BTreeSet::new(),
            page_bytes: crate::kube::ANSWER_LIMIT,
            watching: true,
            events: 0,
            limits: crate::policy::workload::Limits::default(),
            unreachable: false,
        }
    }

    /// The same collector holding workloads to `limits`.
    pub fn with_limits(mut self, limits: crate::policy::workload::Limits) -> Collector {
        self.limits = limits;
        self
    }

    /// The same collector following the ConfigMaps of its namespaces too,
    /// and their Secrets when its limits say `follow_secrets`, after the
    /// workloads (so that a first listing knows which are named).
    pub fn with_sources(mut self) -> Collector {
        let mut namespaces: Vec<Option<String>> =
            self.scopes.iter().map(|s| s.namespace.clone()).collect();
        namespaces.sort();
        namespaces.dedup();
        let mut sources = vec![Source::ConfigMap];
        if self.limits.follow_secrets {
            sources.push(Source::Secret);
        }
        for source in sources {
            let scopes = namespaces.iter().map(|namespace| Scope {
                resource: Resource::Sources(source),
                namespace: namespace.clone(),
                follow: Follow::default(),
                watch: None,
            });
            self.scopes.extend(scopes.collect::<Vec<_>>());
        }
        self
    }

    /// The same collector listing only, never watching (`--once`).
    pub fn without_watches(mut self) -> Collector {
        self.watching = false;
        self
    }

    /// Brings `index` up to date: applies what the watches delivered, and
    /// lists and watches each scope not followed yet (or any more). A scope
    /// that fails keeps its entries and is retried at the next pass.
    pub fn pass(&mut self, kube: &mut Kube, index: &mut Index, steps: &mut dyn Steps) -> Report {
        self.catch_up(kube, index);
        self.unreachable = false;
        let mut report = Report::default();
        for i in 0..self.scopes.len() {
            if self.scopes[i].watch.is_some() {
                continue;
            }
            match self.bring_up(i, kube, index, steps) {
                Ok(true) => {}
                Ok(false) => {
                    report.interrupted = true;
                    break;
                }
                Err(e) => {
                    report.failures += 1;
                    if e.is_unreachable() {
                        self.unreachable = true;
                        break;
                    }
                }
            }
        }
        if !self.unreachable && !report.interrupted {
            self.tried.clear();
            self.read_named(kube, index);
        }
        self.log_warnings(index);
        report.events = std::mem::take(&mut self.events);
        report.watches = self.watches();
        report
    }

    /// Scopes followed by an open watch, of all scopes.
    pub fn watches(&self) -> (usize, usize) {
        let open = self.scopes.iter().filter(|s| s.watch.is_some()).count();
        (open, self.scopes.len())
    }

    /// One turn of the loop: applies what the watches delivered, without
    /// waiting, then reopens the watches that ended (listing again after a
    /// 410) — requests, but only when a stream ended. When the server
    /// cannot be reached the others wait for the next pass, so streams cut
    /// together (the API server restarting) cost one failed request, not
    /// one each.
    pub fn turn(&mut self, kube: &mut Kube, index: &mut Index, steps: &mut dyn Steps) {
        self.catch_up(kube, index);
        if self.unreachable {
            return;
        }
        for i in 0..self.scopes.len() {
            if !std::mem::take(&mut self.scopes[i].follow.resume) {
                continue;
            }
            match self.bring_up(i, kube, index, steps) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) if e.is_unreachable() => {
                    self.unreachable = true;
                    return;
                }
                Err(_) => {}
            }
        }
        self.read_named(kube, index);
    }

    /// What the open watches wait for: bytes to read.
    pub fn interests(&self, out: &mut Vec<Interest>) {
        let watches = self.scopes.iter().filter_map(|s| s.watch.as_ref());
        out.extend(watches.map(|watch| Interest::Read(watch.fd())));
    }

    /// Stops following: closes every watch and forgets where they were, so
    /// the next pass lists again (leadership lost: the index will be stale).
    pub fn stop_watching(&mut self) {
        for scope in &mut self.scopes {
            scope.step(Happened::Stopped);
        }
    }

    fn describe(&self, i: usize) -> String {
        let scope = &self.scopes[i];
        match &scope.namespace {
            Some(ns) => format!("{} in namespace {ns}", scope.resource.plural()),
            None => scope.resource.plural().to_string(),
        }
    }

    /// Lists scope `i` when needed and opens its watch, logging a failure.
    /// `Ok(false)`: the loop asked to stop.
    fn bring_up(
        &mut self,
        i: usize,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
    ) -> Result<bool, Error> {
        self.scopes[i].follow.resume = false;
        let polled = self.scopes[i].follow.standing == Standing::Polled;
        if self.scopes[i].follow.since().is_none() || !self.watching {
            match self.list(i, kube, index, steps) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    log::error!("listing {} failed: {e}", self.describe(i));
                    return Err(e);
                }
            }
        }
        if polled || !self.watching {
            return Ok(true);
        }
        if !steps.keep_going() {
            return Ok(false);
        }
        let scope = &self.scopes[i];
        let since = scope.follow.since().unwrap_or_default().to_string();
        match kube.open_watch(
            scope.resource,
            scope.namespace.as_deref(),
            &since,
            watch_seconds(i),
        ) {
            Ok(watch) => {
                self.scopes[i].step(Happened::Opened);
                self.scopes[i].watch = Some(watch);
                Ok(true)
            }
            Err(e) => {
                log::error!("watching {} failed: {e}", self.describe(i));
                Err(e)
            }
        }
    }

    /// Lists one scope page by page and replaces its part of the index.
    /// `Ok(false)`: the loop asked to stop.
    fn list(
        &mut self,
        i: usize,
        kube: &mut Kube,
        index: &mut Index,
        steps: &mut dyn Steps,
    ) -> Result<bool, Error> {
        let namespace = self.scopes[i].namespace.clone();
        let (update, resource_version) = match self.scopes[i].resource {
            Resource::Workloads(kind) => {
                let mut seen = BTreeMap::new();
                let each = |this: &mut Collector, item: Listed| {
                    let entry = match item.0 {
                        Ok(workload) => this.entry(kind, workload),
                        Err(unreadable) => this.unreadable(kind, unreadable),
                    };
                    if let Some(entry) = entry {
                        seen.insert(entry.id.clone(), entry);
                    }
                };
                let Some(rv) = self.pages(i, kube, steps, each)? else {
                    return Ok(false);
                };
                let scope = &self.scopes[i];
                let kept = |id: &WorkloadId| !scope.holds(id) || seen.contains_key(id);
                self.warned.retain(|id, _| kept(id));
                self.joined.retain(|id, _| kept(id));
                log::debug!("listed {}: {} opted in", self.describe(i), seen.len());
                let entries = seen;
                (
                    Update::Listed {
                        kind,
                        namespace,
                        entries,
                    },
                    rv,
                )
            }
            Resource::Sources(Source::ConfigMap) => {
                match self.list_sources::<ConfigMap>(i, kube, index, steps)? {
                    Some(listed) => listed,
                    None => return Ok(false),
                }
            }
            Resource::Sources(Source::Secret) => {
                match self.list_sources::<Secret>(i, kube, index, steps)? {
                    Some(listed) => listed,
                    None => return Ok(false),
                }
            }
        };
        index.apply(update);
        self.scopes[i].step(Happened::Listed(&resource_version));
        Ok(true)
    }

    /// Reads scope `i` page by page, handing each item to `each`; the
    /// list's resourceVersion, or `None` when the loop asked to stop.
    fn pages<T: serde::de::DeserializeOwned>(
        &mut self,
        i: usize,
        kube: &mut Kube,
        steps: &mut dyn Steps,
        mut each: impl FnMut(&mut Collector, T),
    ) -> Result<Option<String>, Error> {
        let (resource, namespace) = (self.scopes[i].resource, self.scopes[i].namespace.clone());
        let mut continue_token: Option<String> = None;
        let mut page_size = PAGE_SIZE;
        loop {
            if !steps.keep_going() {
                return Ok(None);
            }
            let page = match kube.list(
                resource,
                namespace.as_deref(),
                page_size,
                continue_token.as_deref(),
                self.page_bytes,
            ) {
                Ok(page) => page,
                Err(e @ Error::TooLarge { .. }) => {
                    page_size = smaller_page(page_size).ok_or(e)?;
                    log::debug!("{}: asking for {page_size} per page", self.describe(i));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for item in page.items {
                each(self, item);
            }
            if page.metadata.continue_token.is_empty() {
                return Ok(Some(page.metadata.resource_version));
            }
            continue_token = Some(page.metadata.continue_token);
        }
    }

    /// Lists scope `i` of ConfigMaps or Secrets: the update keeping the
    /// named ones and its resourceVersion; `None` when the loop asked to stop.
    fn list_sources<T: Object + DeserializeOwned>(
        &mut self,
        i: usize,
        kube: &mut Kube,
        index: &Index,
        steps: &mut dyn Steps,
    ) -> Result<Option<(Update, String)>, Error> {
        let mut found = BTreeMap::new();
        let each = |this: &mut Collector, item: T| {
            if let Some((id, held)) = this.held(index, item) {
                found.insert(id, held);
            }
        };
        let Some(rv) = self.pages(i, kube, steps, each)? else {
            return Ok(None);
        };
        log::debug!("listed {}: {} named", self.describe(i), found.len());
        let namespace = self.scopes[i].namespace.clone();
        let source = T::SOURCE;
        Ok(Some((
            Update::SourcesListed {
                source,
                namespace,
                found,
            },
            rv,
        )))
    }

    /// What is kept of `item`: `None` when no workload names it (or it is
    /// in an excluded namespace).
    fn held<T: Object>(&self, index: &Index, item: T) -> Option<(SourceId, Held)> {
        let (meta, values) = item.parts();
        let id = SourceId {
            source: T::SOURCE,
            namespace: meta.namespace,
            name: meta.name,
        };
        if self.exclude.contains(&id.namespace) || !index.names(&id) {
            return None;
        }
        let held = Held::read(values, &id.namespace, self.limits.allowed_paths.as_ref());
        Some((id, held))
    }

    /// Applies the events every open watch has delivered, without waiting
    /// and without a request, and decides what follows a watch that ended
    /// (reopening it is the next [`Collector::turn`]'s).
    pub fn catch_up(&mut self, kube: &mut Kube, index: &mut Index) {
        for i in 0..self.scopes.len() {
            let Some(age) = self.scopes[i].watch.as_ref().map(Watch::age) else {
                continue;
            };
            let result = match self.scopes[i].resource {
                Resource::Workloads(kind) => {
                    let (events, result) = self.take_events(i);
                    for event in events {
                        let rv = self.apply(kind, event, index);
                        self.delivered(i, &rv);
                    }
                    result
                }
                Resource::Sources(Source::ConfigMap) => self.source_events::<ConfigMap>(i, index),
                Resource::Sources(Source::Secret) => self.source_events::<Secret>(i, index),
            };
            self.log_warnings(index);
            match result {
                Ok(Flow::Open)
                    if age <= Duration::from_secs(watch_seconds(i).into()) + WATCH_GRACE => {}
                Ok(Flow::Open) => {
                    log::warn!(
                        "the watch of {} outlived its timeout; opening it again",
                        self.describe(i)
                    );
                    self.scopes[i].step(Happened::Outlived);
                }
                Ok(Flow::Ended) => {
                    log::debug!(
                        "the watch of {} ended after {} s",
                        self.describe(i),
                        age.as_secs()
                    );
                    self.scopes[i].step(Happened::Ended(age));
                }
                Err(e) => self.watch_failed(i, e, age, kube),
            }
        }
    }

    /// A watch failed: 410 lists the scope again at once, a forbidden watch
    /// lists it at the next pass (at every pass once forbidden again and
    /// again), anything else resumes from the last version (and lists
    /// again after failing again and again).
    fn watch_failed(&mut self, i: usize, error: Error, age: Duration, kube: &mut Kube) {
        kube.watch_failed(&error);
        let happened = match error {
            Error::Gone => Happened::Gone,
            Error::Denied(403) => Happened::Forbidden,
            _ => Happened::Failed(age),
        };
        let what = self.describe(i);
        match self.scopes[i].step(happened) {
            Say::Nothing => {}
            Say::Gone => {
                log::info!("{what} changed too much since its watch began; listing again")
            }
            Say::ForbiddenOnce => log::debug!(
                "watching {what} was forbidden; listing it and watching again at the next pass"
            ),
            Say::Polled => log::warn!(
                "watching {what} is forbidden (RBAC allows list but not watch): listing it \
                 every collector period instead"
            ),
            Say::Resuming => {
                log::warn!("the watch of {what} failed: {error}; resuming from the last version")
            }
            Say::Relisting { first } => {
                let text = format!(
                    "the watch of {what} failed {FAILED_TRIES} times in a row ({error}); \
                     listing it again at the next pass"
                );
                match first {
                    true => log::warn!("{text}"),
                    false => log::debug!("{text}"),
                }
            }
        }
    }

    /// Scope `i`'s watch delivered an event up to `resource_version`.
    fn delivered(&mut self, i: usize, resource_version: &str) {
        self.events += 1;
        self.scopes[i].step(Happened::Delivered(resource_version));
    }

    /// Applies one event of a watch of `kind`; its resourceVersion.
    fn apply(&mut self, kind: Kind, event: Event, index: &mut Index) -> String {
        match event {
            Event::Applied(workload) => {
                let rv = workload.metadata.resource_version.clone();
                let id = workload.id(kind);
                let entry = self.entry(kind, workload);
                index.apply(Update::Stored(id, entry));
                rv
            }
            Event::Deleted(workload) => {
                let id = workload.id(kind);
                self.warned.remove(&id);
                self.joined.remove(&id);
                index.apply(Update::Deleted(id));
                workload.metadata.resource_version
            }
            Event::Bookmark(rv) => rv,
            Event::Unreadable(unreadable) => {
                let rv = unreadable.resource_version.clone();
                let id = WorkloadId {
                    kind,
                    namespace: unreadable.namespace.clone(),
                    name: unreadable.name.clone(),
                };
                let entry = self.unreadable(kind, unreadable);
                index.apply(Update::Stored(id, entry));
                rv
            }
        }
    }

    /// The events scope `i`'s watch has delivered, and how it stands.
    fn take_events<T: Watched>(&mut self, i: usize) -> (Vec<Event<T>>, Result<Flow, Error>) {
        let mut events = Vec::new();
        let result = match self.scopes[i].watch.as_mut() {
            Some(watch) => watch.events(&mut events),
            None => Ok(Flow::Ended),
        };
        (events, result)
    }

    /// Reads and applies the events scope `i`'s watch of ConfigMaps or
    /// Secrets has delivered.
    fn source_events<T: Object + Watched>(
        &mut self,
        i: usize,
        index: &mut Index,
    ) -> Result<Flow, Error> {
        let (events, result) = self.take_events::<T>(i);
        for event in events {
            let rv = self.apply_source(event, index);
            self.delivered(i, &rv);
        }
        result
    }

    /// Applies one event of a watch of ConfigMaps or Secrets; its
    /// resourceVersion.
    fn apply_source<T: Object + Watched>(&mut self, event: Event<T>, index: &mut Index) -> String {
        let id = |namespace, name| SourceId {
            source: T::SOURCE,
            namespace,
            name,
        };
        match event {
            Event::Applied(item) => {
                let rv = item.resource_version().to_string();
                if let Some((id, held)) = self.held(index, item) {
                    index.apply(Update::Source(id, Some(held)));
                }
                rv
            }
            Event::Deleted(item) => {
                let (meta, _) = item.parts();
                index.apply(Update::Source(id(meta.namespace, meta.name), None));
                meta.resource_version
            }
            Event::Bookmark(rv) => rv,
            // Its data is a map of strings to the API server: seen only of
            // an object that is not one, which the webhook cannot read.
            Event::Unreadable(unreadable) => {
                let named = id(unreadable.namespace, unreadable.name);
                index.apply(Update::Source(named, None));
                unreadable.resource_version
            }
        }
    }

    /// Reads the ConfigMaps and Secrets some workload names that no listing
    /// or event brought yet (a workload that began to name them), once
    /// each: one not found is missing, the watch says when it comes.
    fn read_named(&mut self, kube: &mut Kube, index: &mut Index) {
        let listed = |id: &SourceId| {
            self.scopes.iter().any(|s| {
                s.resource == Resource::Sources(id.source)
                    && s.follow.since().is_some()
                    && s.namespace.as_deref().is_none_or(|ns| ns == id.namespace)
            })
        };
        let unread: Vec<SourceId> = index
            .unread_sources()
            .filter(|id| listed(id) && !self.tried.contains(*id))
            .take(READS_PER_TURN)
            .cloned()
            .collect();
        for id in unread {
            let read = match id.source {
                Source::ConfigMap => self.read_one::<ConfigMap>(kube, index, &id),
                Source::Secret => self.read_one::<Secret>(kube, index, &id),
            };
            match read {
                Ok(held) => index.apply(Update::Source(id, held)),
                Err(Error::NotFound) => index.apply(Update::Source(id, None)),
                Err(e) => {
                    let kind = id.source.name();
                    log::warn!("reading {kind} {}/{} failed: {e}", id.namespace, id.name);
                    self.tried.insert(id);
                }
            }
        }
        self.log_warnings(index);
    }

    /// What is kept of object `id`, as it is now.
    fn read_one<T: Object + DeserializeOwned>(
        &self,
        kube: &mut Kube,
        index: &Index,
        id: &SourceId,
    ) -> Result<Option<Held>, Error> {
        let item: T = kube.get_source(id.source, &id.namespace, &id.name)?;
        Ok(self.held(index, item).map(|(_, held)| held))
    }

    /// Logs the warnings of the index's joins, each once.
    fn log_warnings(&mut self, index: &mut Index) {
        for (id, warnings) in index.take_warnings() {
            let mut hasher = DefaultHasher::new();
            warnings.hash(&mut hasher);
            let digest = hasher.finish();
            if warnings.is_empty() {
                self.joined.remove(&id);
            } else if self.joined.insert(id, digest) != Some(digest) {
                for warning in &warnings {
                    log::warn!("{warning}");
                }
            }
        }
    }

    /// Nothing for an object that does not decode as a workload, after one
    /// warning naming it (until its problem goes away).
    fn unreadable(&mut self, kind: Kind, unreadable: Unreadable) -> Option<Entry> {
        if self.exclude.contains(&unreadable.namespace) {
            return None;
        }
        let id = WorkloadId {
            kind,
            namespace: unreadable.namespace,
            name: unreadable.name,
        };
        let warning = format!(
            "{id} does not read as a workload (a field has an unexpected type); it is skipped"
        );
        self.warn_once(id, vec![warning]);
        None
    }

    /// The entry for a listed workload, logging its problems once; `None`
    /// when it is excluded or not opted in.
    fn entry(&mut self, kind: Kind, workload: Workload) -> Option<Entry> {
        if self.exclude.contains(&workload.metadata.namespace) {
            return None;
        }
        let id = workload.id(kind);
        let takes_secrets = !self.limits.follow_secrets && workload.takes_secrets();
        let mut warnings = Vec::new();
        let entry = workload.into_entry(kind, &self.limits, &mut warnings);
        if takes_secrets && entry.is_some() && self.told.insert(id.clone()) {
            log::info!(
                "{id} takes env from a Secret (envFrom); vault: references in Secrets are not \
                 followed (--follow-secret-refs does)"
            );
        }
        self.warn_once(id, warnings);
        entry
    }

    /// Logs `warnings` about workload `id` unless they are the ones logged
    /// last for it.
    fn warn_once(&mut self, id: WorkloadId, warnings: Vec<String>) {
        if warnings.is_empty() {
            self.warned.remove(&id);
            return;
        }
        let mut hasher = DefaultHasher::new();
        warnings.hash(&mut hasher);
        let digest = hasher.finish();
        if self.warned.insert(id, digest) != Some(digest) {
            for warning in &warnings {
                log::warn!("{warning}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::steps::Unattended;
    use crate::io::http::fake_server::{self, Reply};
    use crate::io::settings::{KubeCredentials, KubeSettings};

    #[test]
    fn page_sizes_halve_down_to_one_object() {
        let cases = [(500, Some(250)), (3, Some(1)), (2, Some(1)), (1, None)];
        for (size, want) in cases {
            assert_eq!(smaller_page(size), want, "{size}");
        }
    }

    #[test]
    fn watch_timeouts_are_spread() {
        let seconds: Vec<u32> = (0..300).map(watch_seconds).collect();
        assert!(
            seconds.iter().all(|s| (300..600).contains(s)),
            "{seconds:?}"
        );
        let distinct: std::collections::BTreeSet<_> = seconds.iter().collect();
        assert!(
            distinct.len() > 250,
            "spread, not bunched: {}",
            distinct.len()
        );
    }

    /// A client of the API server at `url`, without credentials.
    fn client(url: &str) -> Kube {
        let settings = KubeSettings {
            proxies: Default::default(),
            api_url: url.to_string(),
            ca: None,
            skip_verify: false,
            credentials: KubeCredentials::None,
        };
        Kube::new(&settings).unwrap()
    }

    /// A client of a fake API server that lists Deployment `a` at version 5
    /// and answers watches with `watch`.
    fn cluster(watch: Reply) -> (fake_server::FakeServer, Kube) {
        let server = fake_server::start(move |r| {
            if r.path.contains("watch=1") {
                return watch.clone();
            }
            let body = serde_json::json!({"items": [deployment("a", 0)],
                "metadata": {"resourceVersion": "5", "continue": ""}});
            Reply::json(200, &body.to_string())
        });
        let kube = client(&server.url);
        (server, kube)
    }

    /// Turns of the loop until `requests` were sent (at most 5 s).
    fn turn_until(
        collector: &mut Collector,
        kube: &mut Kube,
        index: &mut Index,
        server: &fake_server::FakeServer,
        requests: usize,
    ) {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while server.requests().len() < requests && std::time::Instant::now() < until {
            collector.turn(kube, index, &mut Unattended);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        collector.turn(kube, index, &mut Unattended);
    }

    /// What was asked: `list`, or `watch@<resourceVersion>`.
    fn asked(server: &fake_server::FakeServer) -> Vec<String> {
        let asked =
            server
                .requests()
                .into_iter()
                .map(|r| match r.path.split_once("resourceVersion=") {
                    Some((_, rv)) => format!("watch@{rv}"),
                    None => "list".to_string(),
                });
        asked.collect()
    }

    fn events(lines: &[serde_json::Value]) -> Reply {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        Reply::json(200, &body)
    }

    #[test]
    fn events_are_applied_and_the_next_watch_resumes_after_them() {
        let watch = events(&[
            serde_json::json!({"type": "ADDED", "object": deployment("b", 0)}),
            serde_json::json!({"type": "DELETED", "object": deployment("a", 0)}),
            serde_json::json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}),
        ]);
        let (server, mut kube) = cluster(watch);
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        let mut index = Index::new();
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((report.failures, report.watches), (0, (1, 1)));
        turn_until(&mut collector, &mut kube, &mut index, &server, 2);
        let names: Vec<_> = index.keys().map(|id| id.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        // That watch ended at once: it is reopened by the pass, not the turn.
        assert_eq!(asked(&server), ["list", "watch@5"]);
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(report.events, 3);
        turn_until(&mut collector, &mut kube, &mut index, &server, 3);
        assert_eq!(asked(&server)[..3], ["list", "watch@5", "watch@9"]);
    }

    #[test]
    fn a_410_lists_again_at_once() {
        let gone = serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "code": 410}});
        let (server, mut kube) = cluster(events(&[gone]));
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        let mut index = Index::new();
        collector.pass(&mut kube, &mut index, &mut Unattended);
        turn_until(&mut collector, &mut kube, &mut index, &server, 4);
        assert_eq!(asked(&server)[..4], ["list", "watch@5", "list", "watch@5"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_watch_forbidden_again_and_again_falls_back_to_a_list_at_every_pass() {
        let (server, mut kube) = cluster(Reply::json(403, r#"{"code":403}"#));
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        let mut index = Index::new();
        for tries in 1..=3 {
            collector.pass(&mut kube, &mut index, &mut Unattended);
            turn_until(&mut collector, &mut kube, &mut index, &server, 2 * tries);
        }
        for _ in 0..2 {
            let report = collector.pass(&mut kube, &mut index, &mut Unattended);
            assert_eq!((report.failures, report.watches), (0, (0, 1)));
        }
        let tried = ["list", "watch@5"].repeat(3);
        assert_eq!(asked(&server), [&tried[..], &["list", "list"]].concat());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_watch_failing_again_and_again_is_listed_again_after_three_tries() {
        let (server, mut kube) = cluster(Reply::json(500, r#"{"code":500}"#));
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        let mut index = Index::new();
        for tries in 1..=5 {
            collector.pass(&mut kube, &mut index, &mut Unattended);
            turn_until(
                &mut collector,
                &mut kube,
                &mut index,
                &server,
                tries + 1 + tries / 4,
            );
        }
        assert_eq!(
            asked(&server),
            ["list", "watch@5", "watch@5", "watch@5", "list", "watch@5", "watch@5"]
        );
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_watch_forbidden_once_is_watched_again() {
        // An API server that has just started denies everything until its
        // RBAC caches are filled.
        let watches = std::sync::atomic::AtomicUsize::new(0);
        let server = fake_server::start(move |r| {
            if r.path.contains("watch=1") {
                return match watches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Reply::json(403, r#"{"code":403}"#),
                    _ => Reply::json(200, ""),
                };
            }
            let body = serde_json::json!({"items": [deployment("a", 0)],
                "metadata": {"resourceVersion": "5", "continue": ""}});
            Reply::json(200, &body.to_string())
        });
        let mut kube = client(&server.url);
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        let mut index = Index::new();
        collector.pass(&mut kube, &mut index, &mut Unattended);
        turn_until(&mut collector, &mut kube, &mut index, &server, 2);
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((report.failures, report.watches), (0, (1, 1)));
        turn_until(&mut collector, &mut kube, &mut index, &server, 4);
        assert_eq!(asked(&server), ["list", "watch@5", "list", "watch@5"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn an_unreachable_server_costs_one_request_per_turn_not_one_per_scope() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut kube = client(&format!("http://127.0.0.1:{port}"));
        let namespaces = ["a", "b", "c"].map(String::from);
        let mut collector = Collector::new(&[Kind::Deployment], &namespaces, &[]);
        for scope in &mut collector.scopes {
            scope.step(Happened::Listed("5"));
            scope.follow.resume = true;
        }
        let mut index = Index::new();
        for _ in 0..3 {
            collector.turn(&mut kube, &mut index, &mut Unattended);
            // Streams noticed cut later, one by one, wait too.
            collector.scopes[2].follow.resume = true;
        }
        let requests: u64 = kube.take_requests().values().sum();
        assert_eq!(requests, 1, "the others wait for the next pass");
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((report.failures, report.watches), (1, (0, 3)));
        collector.turn(&mut kube, &mut index, &mut Unattended);
        let requests: u64 = kube.take_requests().values().sum();
        assert_eq!(requests, 1, "the pass's one, and no turn after it");
    }

    /// ConfigMap `name` in namespace `ns` with `data`.
    fn config_map(name: &str, rv: &str, data: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "data": data})
    }

    #[test]
    fn config_maps_are_listed_once_then_watched_and_joined_into_their_workloads() {
        let server = fake_server::start(|r| {
            let configmaps = r.path.contains("/configmaps");
            match (configmaps, r.path.contains("watch=1")) {
                (false, false) => {
                    let mut app = deployment("app", 0);
                    app["spec"]["template"]["spec"] = serde_json::json!({"containers": [
                        {"name": "c", "envFrom": [{"configMapRef": {"name": "shared"}}]}]});
                    let body = serde_json::json!({"items": [app],
                        "metadata": {"resourceVersion": "5", "continue": ""}});
                    Reply::json(200, &body.to_string())
                }
                (true, false) => {
                    let shared = config_map(
                        "shared",
                        "6",
                        serde_json::json!({
                        "DB_PASS": "vault:secret/data/shared/db#password", "PLAIN": "x"}),
                    );
                    let other = config_map(
                        "other",
                        "6",
                        serde_json::json!({
                        "K": "vault:secret/data/other#k"}),
                    );
                    let body = serde_json::json!({"items": [shared, other],
                        "metadata": {"resourceVersion": "6", "continue": ""}});
                    Reply::json(200, &body.to_string())
                }
                (false, true) => Reply::json(200, ""),
                (true, true) => events(&[serde_json::json!({"type": "MODIFIED",
                    "object": config_map("shared", "7", serde_json::json!({
                        "DB_PASS": "vault:secret/data/shared/db#password",
                        "API": "vault:secret/data/shared/api#key"}))})]),
            }
        });
        let mut kube = client(&server.url);
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]).with_sources();
        let mut index = Index::new();
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((report.failures, report.watches), (0, (2, 2)));
        let paths = |index: &Index| -> Vec<String> {
            let entry = index.values().next().unwrap();
            entry.refs.iter().map(|r| r.path.clone()).collect()
        };
        assert_eq!(paths(&index), ["secret/data/shared/db"]);
        assert_eq!(
            index.sources(Source::ConfigMap),
            1,
            "the one no workload names is not kept"
        );
        turn_until(&mut collector, &mut kube, &mut index, &server, 4);
        assert_eq!(
            paths(&index),
            ["secret/data/shared/api", "secret/data/shared/db"]
        );
        let asked: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
        let lists = asked
            .iter()
            .filter(|p| p.starts_with("/api/v1/configmaps?limit"));
        assert_eq!(lists.count(), 1, "{asked:?}");
        assert!(asked.iter().all(|p| !p.contains("/secrets")), "{asked:?}");
    }

    #[test]
    fn with_follow_secrets_the_secrets_named_are_followed_too() {
        use base64::Engine;
        let server = fake_server::start(|r| {
            if r.path.contains("watch=1") {
                return Reply::json(200, "");
            }
            let items = if r.path.starts_with("/api/v1/secrets") {
                let value = base64::engine::general_purpose::STANDARD
                    .encode("vault:secret/data/from-secret#k");
                serde_json::json!([{"metadata": {"name": "creds", "namespace": "ns"},
                    "data": {"K": value}}])
            } else if r.path.starts_with("/api/v1/configmaps") {
                serde_json::json!([])
            } else {
                let mut app = deployment("app", 0);
                app["spec"]["template"]["spec"] = serde_json::json!({"containers": [
                    {"name": "c", "envFrom": [{"secretRef": {"name": "creds"}}]}]});
                serde_json::json!([app])
            };
            let body = serde_json::json!({"items": items,
                "metadata": {"resourceVersion": "5", "continue": ""}});
            Reply::json(200, &body.to_string())
        });
        let mut kube = client(&server.url);
        let limits = crate::policy::workload::Limits {
            follow_secrets: true,
            ..Default::default()
        };
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[])
            .with_limits(limits)
            .with_sources();
        let mut index = Index::new();
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!((report.failures, report.watches.1), (0, 3));
        let entry = index.values().next().unwrap();
        assert_eq!(entry.refs[0].path, "secret/data/from-secret");
        assert_eq!(index.sources(Source::Secret), 1);
    }

    #[test]
    fn a_config_map_a_workload_begins_to_name_is_read_once() {
        let server = fake_server::start(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/configmaps/shared" => Reply::json(404, r#"{"code":404}"#),
            p if p.contains("watch=1") => Reply::json(200, ""),
            _ => Reply::json(
                200,
                r#"{"items": [], "metadata": {"resourceVersion": "5", "continue": ""}}"#,
            ),
        });
        let mut kube = client(&server.url);
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[])
            .with_sources()
            .without_watches();
        let mut index = Index::new();
        collector.pass(&mut kube, &mut index, &mut Unattended);
        let mut app = deployment("app", 0);
        app["spec"]["template"]["spec"] = serde_json::json!({"containers": [
            {"name": "c", "envFrom": [{"configMapRef": {"name": "shared"}}]}]});
        let workload: Workload = serde_json::from_value(app).unwrap();
        let rv = collector.apply(Kind::Deployment, Event::Applied(workload), &mut index);
        assert_eq!(rv, "5");
        for _ in 0..3 {
            collector.turn(&mut kube, &mut index, &mut Unattended);
        }
        let gets = server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/shared"))
            .count();
        assert_eq!(gets, 1, "missing is known, not asked again");
        assert_eq!(index.unread_sources().count(), 0);
    }

    #[test]
    fn without_watches_a_pass_only_lists() {
        let (server, mut kube) = cluster(Reply::json(500, "{}"));
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]).without_watches();
        let mut index = Index::new();
        collector.pass(&mut kube, &mut index, &mut Unattended);
        collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(asked(&server), ["list", "list"]);
    }

    /// A Deployment that opted in, padded with an unrelated annotation.
    fn deployment(name: &str, padding: usize) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "5",
                         "annotations": {"big": "x".repeat(padding)}},
            "spec": {"template": {"metadata": {"annotations": {
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"
            }}}}
        })
    }

    #[test]
    fn a_page_too_large_is_asked_for_again_in_smaller_pages() {
        // Three objects of about 600 bytes each; pages are capped at 1000
        // bytes, so two of them never fit in one page.
        let server = fake_server::start(|r| {
            let query = |name: &str| -> usize {
                let query = r.path.split_once('?').map_or("", |(_, q)| q);
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            let (limit, from) = (query("limit"), query("continue"));
            let names = ["a", "b", "c"];
            let items: Vec<_> = names
                .iter()
                .skip(from)
                .take(limit.max(1))
                .map(|n| deployment(n, 400))
                .collect();
            let next = from + items.len();
            let token = if next < names.len() {
                next.to_string()
            } else {
                String::new()
            };
            let body = serde_json::json!({"items": items,
                "metadata": {"resourceVersion": "9", "continue": token}});
            Reply::json(200, &body.to_string())
        });
        let mut kube = client(&server.url);
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        collector.page_bytes = 1000;
        let mut index = Index::new();
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(report.failures, 0);
        let names: Vec<_> = index.keys().map(|id| id.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
