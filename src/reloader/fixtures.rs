//! What the reloader's tests share.

use super::*;
use crate::policy::allow::AllowList;
use crate::policy::refs::{Provider, SecretRef};
use crate::policy::state::{self, State, Version};
use crate::policy::workload::{self, Entry, WorkloadId};
use crate::vault::Lookup;
use std::collections::HashMap;
use std::time::Duration;

pub(super) const NOW: u64 = 1_795_851_811;

pub(super) fn secret(path: &str) -> SecretRef {
    SecretRef {
        provider: Provider::Vault,
        path: path.into(),
    }
}

pub(super) fn version(number: u64, created: &str) -> Version {
    Version {
        number,
        created: created.into(),
    }
}

pub(super) fn state(entries: &[(&str, Option<Version>)]) -> State {
    State {
        versions: entries
            .iter()
            .map(|(path, v)| (secret(path).key(), v.clone()))
            .collect(),
        last_reload: None,
        first_seen: None,
        cause: Vec::new(),
    }
}

pub(super) fn lookups(entries: Vec<(&str, Lookup)>) -> HashMap<SecretRef, Lookup> {
    entries.into_iter().map(|(p, l)| (secret(p), l)).collect()
}

/// An opted-in Deployment `ns/NAME` using `refs`, naming `vault_addr`.
pub(super) fn entry(name: &str, refs: &[&str], vault_addr: Option<&str>) -> Entry {
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
        check_now: None,
        paused: false,
        window: None,
        rolling: false,
        failed: false,
        releases_hold: None,
        sources: None,
    }
}

/// A dry-run reloader whose clients send nothing (port 9), allowing
/// workloads' own servers under `own.vault.svc`.
pub(super) fn reloader_with_own_servers() -> Reloader {
    let settings = crate::io::settings::VaultSettings {
        proxies: Default::default(),
        addr: "http://127.0.0.1:9".into(),
        auth: crate::io::settings::VaultAuth::Token(crate::io::settings::Redacted("t".into())),
        namespace: None,
        ca_file: None,
        ca_secret: None,
        skip_verify: false,
        timeout: Duration::from_secs(1),
        ignore_missing: false,
    };
    let make: ClientFactory = Box::new(move |addr| {
        let own = crate::io::settings::VaultSettings {
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
