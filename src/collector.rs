//! The collector pass: keeps the index of opted-in workloads up to date.
//! The first pass lists every kind page by page; later passes only read what
//! changed since, with a watch that the server ends after a second.

use crate::error::Error;
use crate::kube::{Event, Kube};
use crate::pace::Duties;
use crate::workload::{Entry, Kind, Workload, WorkloadId};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// The opted-in workloads and what they use.
pub type Index = BTreeMap<WorkloadId, Entry>;

/// Items per list page.
const PAGE_SIZE: u32 = 500;

/// One kind in one namespace (or all), and where its watch resumes.
struct Scope {
    kind: Kind,
    namespace: Option<String>,
    /// `None` until a full list succeeded, and again after any doubt.
    resource_version: Option<String>,
}

impl Scope {
    fn holds(&self, id: &WorkloadId) -> bool {
        id.kind == self.kind && self.namespace.as_ref().is_none_or(|ns| *ns == id.namespace)
    }
}

/// How a pass went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Scopes that could not be brought up to date.
    pub failures: u32,
    /// The pass was stopped by the loop before it finished.
    pub interrupted: bool,
}

/// Keeps the index between passes.
pub struct Collector {
    scopes: Vec<Scope>,
    exclude: Vec<String>,
    /// A hash of the warnings last logged per workload, so an unchanged
    /// problem is reported once, not on every event.
    warned: HashMap<WorkloadId, u64>,
}

impl Collector {
    /// A collector of `kinds` over `namespaces` (empty: the whole cluster),
    /// never looking at `exclude`.
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
                    kind,
                    namespace: namespace.clone(),
                    resource_version: None,
                })
            })
            .collect();
        Collector {
            scopes,
            exclude: exclude.to_vec(),
            warned: HashMap::new(),
        }
    }

    /// Brings `index` up to date. A scope that fails keeps its entries and
    /// is retried next pass (with a full list when in doubt).
    pub fn pass(&mut self, kube: &mut Kube, index: &mut Index, duties: &mut dyn Duties) -> Report {
        let mut report = Report::default();
        for i in 0..self.scopes.len() {
            if self.scopes[i].resource_version.is_some() {
                if !duties.keep_going() {
                    report.interrupted = true;
                    return report;
                }
                match self.watch(i, kube, index) {
                    Ok(()) => continue,
                    Err(Error::Gone) => {
                        log::info!(
                            "{} changed too much since the last pass; listing again",
                            self.describe(i)
                        );
                    }
                    Err(e) => {
                        log::error!("watching {} failed: {e}", self.describe(i));
                        report.failures += 1;
                        self.scopes[i].resource_version = None;
                        if e.is_unreachable() {
                            return report;
                        }
                        continue;
                    }
                }
                self.scopes[i].resource_version = None;
            }
            match self.list(i, kube, index, duties) {
                Ok(true) => {}
                Ok(false) => {
                    report.interrupted = true;
                    return report;
                }
                Err(e) => {
                    log::error!("listing {} failed: {e}", self.describe(i));
                    report.failures += 1;
                    if e.is_unreachable() {
                        return report;
                    }
                }
            }
        }
        report
    }

    fn describe(&self, i: usize) -> String {
        let scope = &self.scopes[i];
        match &scope.namespace {
            Some(ns) => format!("{} in namespace {ns}", scope.kind.plural()),
            None => scope.kind.plural().to_string(),
        }
    }

    /// Lists one scope page by page and replaces its part of the index.
    /// `Ok(false)`: the loop asked to stop.
    fn list(
        &mut self,
        i: usize,
        kube: &mut Kube,
        index: &mut Index,
        duties: &mut dyn Duties,
    ) -> Result<bool, Error> {
        let kind = self.scopes[i].kind;
        let namespace = self.scopes[i].namespace.clone();
        let mut seen = Index::new();
        let mut continue_token: Option<String> = None;
        let resource_version = loop {
            if !duties.keep_going() {
                return Ok(false);
            }
            let page = kube.list(
                kind,
                namespace.as_deref(),
                PAGE_SIZE,
                continue_token.as_deref(),
            )?;
            for workload in page.items {
                if let Some(entry) = self.entry(kind, workload) {
                    seen.insert(entry.id.clone(), entry);
                }
            }
            if page.metadata.continue_token.is_empty() {
                break page.metadata.resource_version;
            }
            continue_token = Some(page.metadata.continue_token);
        };
        let scope = &self.scopes[i];
        index.retain(|id, _| !scope.holds(id));
        self.warned
            .retain(|id, _| !scope.holds(id) || seen.contains_key(id));
        log::debug!("listed {}: {} opted in", self.describe(i), seen.len());
        index.append(&mut seen);
        self.scopes[i].resource_version = Some(resource_version);
        Ok(true)
    }

    /// Applies the changes since the scope's resourceVersion.
    fn watch(&mut self, i: usize, kube: &mut Kube, index: &mut Index) -> Result<(), Error> {
        let kind = self.scopes[i].kind;
        let namespace = self.scopes[i].namespace.clone();
        let since = self.scopes[i].resource_version.clone().unwrap_or_default();
        let events = kube.watch(kind, namespace.as_deref(), &since)?;
        for event in events {
            let resource_version = match event {
                Event::Applied(workload) => {
                    let rv = workload.metadata.resource_version.clone();
                    let id = workload.id(kind);
                    match self.entry(kind, workload) {
                        Some(entry) => {
                            index.insert(id, entry);
                        }
                        None => {
                            index.remove(&id);
                        }
                    }
                    rv
                }
                Event::Deleted(workload) => {
                    let id = workload.id(kind);
                    index.remove(&id);
                    self.warned.remove(&id);
                    workload.metadata.resource_version
                }
                Event::Bookmark(rv) => rv,
            };
            if !resource_version.is_empty() {
                self.scopes[i].resource_version = Some(resource_version);
            }
        }
        Ok(())
    }

    /// The entry for a listed workload, logging its problems once; `None`
    /// when it is excluded or not opted in.
    fn entry(&mut self, kind: Kind, workload: Workload) -> Option<Entry> {
        if self.exclude.contains(&workload.metadata.namespace) {
            return None;
        }
        let id = workload.id(kind);
        let mut warnings = Vec::new();
        let entry = workload.into_entry(kind, &mut warnings);
        if warnings.is_empty() {
            self.warned.remove(&id);
        } else {
            let mut hasher = DefaultHasher::new();
            warnings.hash(&mut hasher);
            let digest = hasher.finish();
            if self.warned.insert(id, digest) != Some(digest) {
                for warning in &warnings {
                    log::warn!("{warning}");
                }
            }
        }
        entry
    }
}
