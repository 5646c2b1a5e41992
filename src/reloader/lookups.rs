//! Asking Vault about one namespace's secrets, a step at a time: the
//! directories worth listing first (with `--list-secret-metadata`), then
//! each secret not yet known. A server that fails is not asked again in
//! the same pass, by any namespace: one error, not one per secret.

use super::fair::{Source, Turn};
use super::{Reloader, Report, Running};
use crate::error::Error;
use crate::policy::refs::{Provider, SecretRef};
use crate::reloader::routing::Server;
use crate::vault::Lookup;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// The name of the listings' turn: no namespace is named so, and it comes
/// first in the order of the rounds.
pub(super) const LISTINGS: &str = "";

/// Which client asks about a secret: its server, and whether it is the
/// `bao:` client (`bao:` secrets share the Vault client without BAO_ADDR).
pub(super) type ClientKey = (Server, bool);

impl Reloader {
    /// The client that asks about `source`.
    fn client_key(&self, (server, secret): &Source) -> ClientKey {
        let bao = secret.provider == Provider::Bao && self.bao.is_some();
        (server.clone(), bao)
    }

    /// Plans the listings of the directories the namespaces' secrets are
    /// in, each directory once for all of them, as the steps of a turn of
    /// its own that takes its place in the rounds ([`LISTINGS`], first):
    /// listing is fair to the namespaces like their lookups. Each
    /// namespace asks about the secrets of a listed directory last, so
    /// that the listing has most often settled them by then; one not
    /// settled yet is read on its own, never waited for. Sends nothing.
    pub(super) fn plan_listings(&mut self, turns: &mut Vec<(String, Turn)>, began: u64) {
        let mut by_client: BTreeMap<ClientKey, BTreeSet<&str>> = BTreeMap::new();
        for source in turns.iter().flat_map(|(_, turn)| &turn.queue) {
            let key = self.client_key(source);
            by_client.entry(key).or_default().insert(&source.1.path);
        }
        // The paths listed, whichever server: a path listed on one server
        // and read on another is only asked later in its turn.
        let (mut lists, mut listed) = (Vec::new(), HashSet::new());
        for ((server, bao), paths) in by_client {
            let provider = if bao { Provider::Bao } else { Provider::Vault };
            let Ok((client, _)) = self.client(&server, provider) else {
                continue;
            };
            let paths: Vec<&str> = paths.into_iter().collect();
            let plan = client.prefetch(&paths);
            listed.extend(plan.paths().map(String::from));
            lists.push(((server, bao), plan));
        }
        if listed.is_empty() {
            return;
        }
        for (_, turn) in turns.iter_mut() {
            let (later, now): (VecDeque<Source>, VecDeque<Source>) =
                std::mem::take(&mut turn.queue)
                    .into_iter()
                    .partition(|(_, secret)| listed.contains(secret.path.as_str()));
            turn.queue = now.into_iter().chain(later).collect();
        }
        let listings = Turn {
            began,
            lists,
            queue: VecDeque::new(),
            workloads: Vec::new(),
            settle: None,
        };
        turns.insert(0, (LISTINGS.to_string(), listings));
    }

    /// Lists the next directory `turn` planned; `false` when none is left
    /// (nothing was sent).
    pub(super) fn list_step(&mut self, turn: &mut Turn, running: &mut Running) -> bool {
        while let Some(((server, bao), plan)) = turn.lists.last_mut() {
            let provider = if *bao { Provider::Bao } else { Provider::Vault };
            let key = (server.clone(), *bao);
            let listed = match (
                running.unreachable.contains(&key),
                self.client(server, provider),
            ) {
                (false, Ok((client, _))) => client.list_next(plan),
                _ => None,
            };
            match listed {
                None => {
                    turn.lists.pop();
                }
                Some(Ok(())) => return true,
                Some(Err(e)) => {
                    let at = at(&key.0);
                    log::error!(
                        "listing secrets{at} failed, not asking that server again this pass: {e}"
                    );
                    running.unreachable.insert(key);
                    turn.lists.pop();
                    return true;
                }
            }
        }
        false
    }

    /// Asks about `source` (unless its server failed this pass), counts a
    /// failure in `report` and logs what was found.
    pub(super) fn look_up(
        &mut self,
        source: &Source,
        running: &mut Running,
        report: &mut Report,
    ) -> Lookup {
        let (server, secret) = source;
        let key = self.client_key(source);
        let (lookup, ignore_missing) = match running.unreachable.contains(&key) {
            true => (
                Lookup::Failed(Error::Transport("not tried again this pass".into())),
                false,
            ),
            false => match self.client(server, secret.provider) {
                Ok((client, ignore)) => (client.current_version(&secret.path), ignore),
                Err(e) => (Lookup::Failed(e), false),
            },
        };
        report.lookups += 1;
        if let Lookup::Failed(e) = &lookup {
            if !matches!(e, Error::MountUnknown { .. }) {
                report.vault_failures += 1;
            }
        }
        let first_failure = match &lookup {
            Lookup::Failed(e) if e.is_server_failure() => running.unreachable.insert(key),
            _ => false,
        };
        self.log_lookup(server, secret, &lookup, ignore_missing, first_failure);
        lookup
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
        let at = at(server);
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
                        super::dynamic::hint(why)
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

/// " at ADDR" for a workload's own server, nothing for the configured one.
fn at(server: &Server) -> String {
    server
        .as_ref()
        .map(|a| format!(" at {a}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

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
}
