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

/// Items per list page, at first.
const PAGE_SIZE: u32 = 500;

/// The next, smaller page size after a page passed its byte cap (large
/// objects: big annotations, many managed fields); `None` when a single
/// object did.
fn smaller_page(size: u32) -> Option<u32> {
    (size > 1).then_some(size / 2)
}

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
    /// The byte cap of one list page.
    page_bytes: u64,
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
            page_bytes: crate::kube::ANSWER_LIMIT,
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
        let mut page_size = PAGE_SIZE;
        let resource_version = loop {
            if !duties.keep_going() {
                return Ok(false);
            }
            let page = match kube.list(
                kind,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KubeCredentials, KubeSettings};
    use crate::http::fake_server::{self, Reply};
    use crate::pace::Unattended;

    #[test]
    fn page_sizes_halve_down_to_one_object() {
        let cases = [(500, Some(250)), (3, Some(1)), (2, Some(1)), (1, None)];
        for (size, want) in cases {
            assert_eq!(smaller_page(size), want, "{size}");
        }
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
        let settings = KubeSettings {
            api_url: server.url.clone(),
            ca: None,
            skip_verify: false,
            credentials: KubeCredentials::None,
        };
        let mut kube = Kube::new(&settings).unwrap();
        let mut collector = Collector::new(&[Kind::Deployment], &[], &[]);
        collector.page_bytes = 1000;
        let mut index = Index::new();
        let report = collector.pass(&mut kube, &mut index, &mut Unattended);
        assert_eq!(report.failures, 0);
        let names: Vec<_> = index.keys().map(|id| id.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
