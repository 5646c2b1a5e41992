//! Fair between namespaces: a pass serves the namespaces in turn, one step
//! each per round (a listed directory, a lookup, or one workload decided),
//! so a namespace naming thousands of secrets — missing, denied or slow —
//! delays another's rollout by a few steps, not by its whole size. A
//! namespace's workloads are decided as soon as its own secrets are known.
//! When a pass runs out of time, the namespaces not done keep what they
//! found ([`Cycles`]) and go on next pass, where the others start afresh.

use super::lookups::ClientKey;
use crate::policy::refs::SecretRef;
use crate::policy::workload::WorkloadId;
use crate::reloader::routing::Server;
use crate::vault::prefetch::Prefetch;
use crate::vault::Lookup;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// A secret on the server it is read from.
pub(super) type Source = (Server, SecretRef);

/// Each namespace's cycle of lookups, kept across passes: a cycle begins
/// on the pass after the last one ended, and ends when every secret the
/// namespace uses was asked about since it began. A lookup counts for a
/// namespace only when it was made on or after its cycle's first pass
/// (it is *fresh*), so a secret shared with a namespace still finishing
/// an older cycle is asked again, never taken stale.
#[derive(Debug, Default)]
pub(super) struct Cycles {
    /// The current pass's number (1 for the first).
    pass: u64,
    /// The first pass of each namespace's unfinished cycle.
    began: BTreeMap<String, u64>,
    /// Each secret's last lookup and the pass it was made on.
    found: HashMap<Source, (u64, Lookup)>,
    /// The namespace whose step was next when the last pass ran out of
    /// time: the next pass's rounds start there, so that when not even one
    /// round fits in a pass, every namespace still gets its turn.
    resume: Option<String>,
}

/// What one namespace's workloads use, as a pass starts.
#[derive(Debug, Default)]
pub(super) struct Uses {
    /// The secrets, each on its server.
    pub(super) sources: BTreeSet<Source>,
    /// The workloads.
    pub(super) workloads: Vec<WorkloadId>,
}

/// One namespace's work in one pass.
pub(super) struct Turn {
    /// The first pass of its cycle.
    pub(super) began: u64,
    /// Its directories to list first, per client.
    pub(super) lists: Vec<(ClientKey, Prefetch)>,
    /// Its secrets not yet asked about in this cycle, in a stable order.
    pub(super) queue: VecDeque<Source>,
    /// Its workloads as the pass started.
    pub(super) workloads: Vec<WorkloadId>,
    /// Its workloads left to decide, once its secrets are known.
    pub(super) settle: Option<VecDeque<WorkloadId>>,
}

impl Cycles {
    /// Starts a pass over the secrets each namespace's workloads use now:
    /// forgets lookups and namespaces no longer used, and gives each
    /// namespace its turn — what is left of its cycle, or a new cycle.
    pub(super) fn begin(&mut self, wanted: BTreeMap<String, Uses>) -> Vec<(String, Turn)> {
        self.pass += 1;
        self.began.retain(|ns, _| wanted.contains_key(ns));
        let used: HashSet<&Source> = wanted.values().flat_map(|uses| &uses.sources).collect();
        self.found.retain(|source, _| used.contains(source));
        let mut turns = Vec::with_capacity(wanted.len());
        for (namespace, uses) in wanted {
            let began = *self.began.entry(namespace.clone()).or_insert(self.pass);
            let queue = uses
                .sources
                .into_iter()
                .filter(|source| self.fresh(source, began).is_none())
                .collect();
            let turn = Turn {
                began,
                lists: Vec::new(),
                queue,
                workloads: uses.workloads,
                settle: None,
            };
            turns.push((namespace, turn));
        }
        turns
    }

    /// The lookup of `source` made since pass `since`, if any.
    pub(super) fn fresh(&self, source: &Source, since: u64) -> Option<&Lookup> {
        match self.found.get(source) {
            Some((pass, lookup)) if *pass >= since => Some(lookup),
            _ => None,
        }
    }

    /// The current pass's number.
    pub(super) fn pass(&self) -> u64 {
        self.pass
    }

    /// Keeps what `source` was found to be on this pass.
    pub(super) fn found(&mut self, source: Source, lookup: Lookup) {
        self.found.insert(source, (self.pass, lookup));
    }

    /// Where this pass's rounds start.
    pub(super) fn resume(&self) -> Option<&str> {
        self.resume.as_deref()
    }

    /// Where the next pass's rounds start ([`Rounds::next_up`] as this one
    /// ended).
    pub(super) fn resume_at(&mut self, namespace: Option<String>) {
        self.resume = namespace;
    }

    /// Ends `namespace`'s cycle: its next pass begins a new one.
    pub(super) fn ended(&mut self, namespace: &str) {
        self.began.remove(namespace);
    }
}

/// Whose step is next: each namespace's turn in order, round after round,
/// until each has said it is done.
#[derive(Debug)]
pub(super) struct Rounds<T> {
    active: Vec<(String, T)>,
    at: usize,
}

impl<T> Rounds<T> {
    /// Rounds over `turns` (sorted by namespace), starting at the first
    /// namespace not before `start`.
    pub(super) fn new(turns: Vec<(String, T)>, start: Option<&str>) -> Rounds<T> {
        let at = start.map_or(0, |start| {
            turns.partition_point(|(ns, _)| ns.as_str() < start)
        });
        Rounds { active: turns, at }
    }

    /// The namespace whose step is next, and its turn; `None` when all are
    /// done.
    pub(super) fn next(&mut self) -> Option<(&str, &mut T)> {
        if self.active.is_empty() {
            return None;
        }
        self.at = self.at % self.active.len() + 1;
        let (namespace, turn) = &mut self.active[self.at - 1];
        Some((namespace, turn))
    }

    /// The namespace just served has nothing left this pass.
    pub(super) fn done(&mut self) {
        self.at -= 1;
        self.active.remove(self.at);
    }

    /// The namespace whose step would be next.
    pub(super) fn next_up(&self) -> Option<String> {
        let len = self.active.len();
        (len > 0).then(|| self.active[self.at % len].0.clone())
    }

    /// The turns not done.
    pub(super) fn left(&self) -> impl Iterator<Item = &(String, T)> {
        self.active.iter()
    }
}

/// The secrets each namespace had left to ask about when its pass ran
/// out of time (`turns`: those not done).
pub(super) fn carried<'a>(
    turns: impl Iterator<Item = &'a (String, Turn)>,
) -> BTreeMap<String, usize> {
    turns
        .filter(|(_, turn)| turn.settle.is_none() && !turn.queue.is_empty())
        .map(|(ns, turn)| (ns.clone(), turn.queue.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reloader::fixtures::{secret, version};

    fn source(path: &str) -> Source {
        (None, secret(path))
    }

    fn found(n: u64) -> Lookup {
        Lookup::Found(version(n, &format!("t{n}")))
    }

    fn wanted(list: &[(&str, &[&str])]) -> BTreeMap<String, Uses> {
        list.iter()
            .map(|(ns, paths)| {
                let sources = paths.iter().map(|p| source(p)).collect();
                let uses = Uses {
                    sources,
                    workloads: Vec::new(),
                };
                (ns.to_string(), uses)
            })
            .collect()
    }

    fn queue<'a>(turns: &'a [(String, Turn)], namespace: &str) -> Vec<&'a str> {
        let (_, turn) = turns.iter().find(|(ns, _)| ns == namespace).unwrap();
        turn.queue.iter().map(|(_, s)| s.path.as_str()).collect()
    }

    #[test]
    fn rounds_serve_each_namespace_once_per_round_until_it_is_done() {
        // evil has 4 steps, good 1, quiet none.
        let turns = vec![("evil".into(), 4), ("good".into(), 1), ("quiet".into(), 0)];
        let mut rounds = Rounds::new(turns, None);
        let mut served = Vec::new();
        while let Some((ns, left)) = rounds.next() {
            if *left == 0 {
                rounds.done();
                continue;
            }
            *left -= 1;
            served.push(ns.to_string());
        }
        assert_eq!(served, ["evil", "good", "evil", "evil", "evil"]);
    }

    #[test]
    fn rounds_start_where_the_last_pass_stopped() {
        let turns = || vec![("a".to_string(), ()), ("b".into(), ()), ("d".into(), ())];
        let order = |start| {
            let mut rounds = Rounds::new(turns(), start);
            let mut served = Vec::new();
            for _ in 0..4 {
                served.push(rounds.next().unwrap().0.to_string());
            }
            (served.join(""), rounds.next_up())
        };
        assert_eq!(order(None), ("abda".into(), Some("b".into())));
        assert_eq!(order(Some("b")), ("bdab".into(), Some("d".into())));
        // A namespace gone since: the one after it.
        assert_eq!(order(Some("c")), ("dabd".into(), Some("a".into())));
        assert_eq!(order(Some("z")), ("abda".into(), Some("b".into())));
    }

    #[test]
    fn an_unfinished_cycle_goes_on_and_a_finished_one_starts_afresh() {
        let mut cycles = Cycles::default();
        let wanted = || wanted(&[("evil", &["e1", "e2", "shared"]), ("good", &["shared"])]);
        let turns = cycles.begin(wanted());
        assert_eq!(queue(&turns, "evil"), ["e1", "e2", "shared"]);
        // Pass 1: good asks the shared secret, evil only e1; good is done.
        cycles.found(source("shared"), found(1));
        cycles.found(source("e1"), found(1));
        cycles.ended("good");
        // Pass 2: evil goes on with what it has not asked about (the shared
        // secret was asked on its cycle's first pass); good starts afresh.
        let turns = cycles.begin(wanted());
        assert_eq!(queue(&turns, "evil"), ["e2"]);
        assert_eq!(queue(&turns, "good"), ["shared"]);
        let began: Vec<u64> = turns.iter().map(|(_, t)| t.began).collect();
        assert_eq!(began, [1, 2]);
        let left = carried(turns.iter());
        assert_eq!(left, [("evil".to_string(), 1), ("good".into(), 1)].into());
        // A lookup older than a cycle is not fresh for it.
        assert!(cycles.fresh(&source("shared"), 1).is_some());
        assert!(cycles.fresh(&source("shared"), 2).is_none());
    }

    #[test]
    fn what_no_namespace_uses_is_forgotten() {
        let mut cycles = Cycles::default();
        cycles.begin(wanted(&[("a", &["x"]), ("b", &["y"])]));
        cycles.found(source("x"), found(1));
        cycles.found(source("y"), found(1));
        let turns = cycles.begin(wanted(&[("a", &["x"])]));
        let namespaces: Vec<&str> = turns.iter().map(|(ns, _)| ns.as_str()).collect();
        assert_eq!(namespaces, ["a"]);
        assert!(cycles.fresh(&source("y"), 0).is_none());
        assert!(cycles.fresh(&source("x"), 0).is_some());
        assert_eq!(cycles.began.keys().collect::<Vec<_>>(), ["a"]);
    }
}
