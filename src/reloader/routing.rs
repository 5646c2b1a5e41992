//! Which Vault server a workload's secrets are read from: the configured
//! one for its provider, or its own `vault-addr` where
//! `--allowed-vault-addrs` lets it.

use super::Reloader;
use crate::error::Error;
use crate::policy::allow::{Addr, AllowList};
use crate::policy::refs::{Provider, SecretRef};
use crate::policy::workload::Entry;
use crate::vault::Vault;
use std::collections::{hash_map, HashMap};

/// Makes a client for a workload's own Vault address.
pub type ClientFactory = Box<dyn Fn(&Addr) -> Result<Vault, Error>>;

/// Which server a secret is read from: a workload's own Vault address, or
/// `None` for the configured server of its provider.
pub(super) type Server = Option<Addr>;

/// Where a workload's `vault:` secrets are read, or why they are not read
/// at all (its `vault-addr` is unusable or not allowed).
pub(super) type Route = Result<Server, String>;

/// Workloads' own Vault servers (`--per-workload-vault-addr`).
pub struct PerWorkload {
    pub(super) make: ClientFactory,
    pub(super) allowed: AllowList,
    /// Clients made on first use, forgotten when no workload names them.
    pub(super) clients: HashMap<Addr, Vault>,
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

/// Where a workload in `namespace` naming `vault_addr` has its `vault:`
/// secrets read: the configured server when per-workload addresses are off
/// (`allowed` is `None`) or it names none; its own address only when
/// `allowed` lets it for that namespace.
pub(super) fn route(
    allowed: Option<&AllowList>,
    namespace: &str,
    vault_addr: Option<&str>,
) -> Route {
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

impl Reloader {
    /// Where `entry`'s `vault:` secrets are read.
    pub(super) fn route(&self, entry: &Entry) -> Route {
        let allowed = self.per_workload.as_ref().map(|pw| &pw.allowed);
        route(allowed, &entry.id.namespace, entry.vault_addr.as_deref())
    }

    /// The server `secret` is read from on `route`; `None`: not read.
    pub(super) fn server(route: &Route, secret: &SecretRef) -> Option<Server> {
        match (secret.provider, route) {
            (Provider::Vault, Ok(server)) => Some(server.clone()),
            (Provider::Vault, Err(_)) => None,
            (Provider::Bao, _) => Some(None),
        }
    }

    /// The client for a server, and whether a missing secret there is only
    /// a warning.
    pub(super) fn client(
        &mut self,
        server: &Server,
        provider: Provider,
    ) -> Result<(&mut Vault, bool), Error> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reloader::fixtures::*;

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
}
