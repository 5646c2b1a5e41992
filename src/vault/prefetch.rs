//! Listing before looking up (`--list-secret-metadata`): before a pass, the
//! directories holding several of its secrets are listed with their
//! metadata (OpenBao's `detailed-metadata`), and the pass's lookups take
//! their versions from there. Whatever a listing did not settle is read one
//! secret at a time, as without listing. [`crate::vault::listing`] decides.

use super::{lookup_of, metadata_path, Lookup, Metadata, Vault, ANSWER_LIMIT};
use crate::error::Error;
use crate::io::http;
use crate::vault::listing::{self, Walk};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// What this pass's listings found, and which directories are not listed
/// for a while.
#[derive(Default)]
pub(super) struct Listing {
    /// Lookups the listings settled, by data path; each is taken once.
    found: HashMap<String, Lookup>,
    /// List paths read one secret at a time until then.
    paused: HashMap<String, Instant>,
    /// Mounts whose failed listing was logged (once each).
    said: HashSet<String>,
}

#[derive(Deserialize)]
struct PageAnswer {
    data: Page,
}

/// One page of a listing: its keys in order, and the metadata of each.
#[derive(Deserialize, Default)]
struct Page {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_info: BTreeMap<String, Option<Metadata>>,
}

/// A directory worth listing: its mount and the wanted keys with their
/// data paths.
type Wanted = (String, BTreeMap<String, String>);

/// The directories worth listing, by list path.
type Dirs = BTreeMap<String, Wanted>;

/// The directories a pass lists, in order ([`Vault::prefetch`]), and the
/// token they are listed with once one was needed.
#[derive(Default)]
pub struct Prefetch {
    due: std::vec::IntoIter<(String, Wanted)>,
    token: Option<String>,
}

impl Prefetch {
    /// The data paths the directories left to list hold.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let due = self.due.as_slice().iter();
        due.flat_map(|(_, (_, wanted))| wanted.values().map(String::as_str))
    }
}

impl Vault {
    /// Turns listing on: [`Vault::prefetch`] lists directories, which needs
    /// `list` on `MOUNT/detailed-metadata/*` (OpenBao only).
    pub fn with_listing(mut self) -> Vault {
        self.listing = Some(Listing::default());
        self
    }

    /// Forgets what the last pass's listings found.
    pub(super) fn forget_listed(&mut self) {
        if let Some(listing) = self.listing.as_mut() {
            listing.found.clear();
        }
    }

    /// This pass's listed lookup of `path`, taken out.
    pub(super) fn listed(&mut self, path: &str) -> Option<Lookup> {
        self.listing.as_mut()?.found.remove(path)
    }

    /// Before a pass's lookups of the data paths `paths`, with listing on:
    /// plans which directories to list — each
    /// holding at least [`listing::MIN_WANTED`] of them under a KV v2 mount
    /// Vault answered to an earlier lookup, and not paused. Sends nothing;
    /// [`Vault::list_next`] lists them one by one, a step each.
    pub fn prefetch(&mut self, paths: &[&str]) -> Prefetch {
        if self.listing.is_none() {
            return Prefetch::default();
        }
        let dirs = self.directories(paths);
        let Some(listing) = self.listing.as_mut() else {
            return Prefetch::default();
        };
        let now = Instant::now();
        listing.paused.retain(|_, until| *until > now);
        let due = dirs
            .into_iter()
            .filter(|(dir, (_, wanted))| {
                wanted.len() >= listing::MIN_WANTED && !listing.paused.contains_key(dir)
            })
            .collect::<Vec<_>>();
        Prefetch {
            due: due.into_iter(),
            token: None,
        }
    }

    /// Lists the next directory of `plan` and keeps what it settled for
    /// [`Vault::current_version`]; `None` when none is left. A directory
    /// whose listing is refused, not offered (HashiCorp Vault has no
    /// `detailed-metadata`), too large or costlier than single reads is
    /// paused for [`listing::PAUSE`]; a server failure (transport, 5xx) is
    /// returned and ends the plan, so that the server is not asked again
    /// this pass; any other failure is left to the lookups.
    pub fn list_next(&mut self, plan: &mut Prefetch) -> Option<Result<(), Error>> {
        let (dir, (mount, wanted)) = plan.due.next()?;
        let mut listing = self.listing.take()?;
        let listed = self.list_one(&mut listing, plan, dir, mount, wanted);
        self.listing = Some(listing);
        match listed {
            Err(e) if e.is_server_failure() => {
                plan.due = Vec::new().into_iter();
                Some(Err(e))
            }
            _ => Some(Ok(())),
        }
    }

    fn list_one(
        &mut self,
        listing: &mut Listing,
        plan: &mut Prefetch,
        dir: String,
        mount: String,
        wanted: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let token = match plan.token.clone() {
            Some(token) => token,
            None => plan.token.insert(self.token()?).clone(),
        };
        let now = Instant::now();
        let keys: BTreeSet<String> = wanted.keys().cloned().collect();
        let (walk, mut metadata) = match self.list_dir(&dir, keys, &token) {
            Ok(listed) => listed,
            Err(e) if e.is_server_failure() => return Err(e),
            Err(e) => {
                listing.paused.insert(dir.clone(), now + listing::PAUSE);
                if listing.said.insert(mount.clone()) {
                    log::info!(
                        "listing {dir} failed: {e}{}; the secrets of {mount} are read one \
                         at a time, and each directory is listed again after {}s",
                        hint(&e),
                        listing::PAUSE.as_secs()
                    );
                }
                return Ok(());
            }
        };
        for (key, path) in wanted {
            let lookup = match metadata.remove(&key) {
                Some(Some(metadata)) => lookup_of(&metadata),
                Some(None) => continue,
                None if walk.settled(&key) => Lookup::Missing,
                None => continue,
            };
            listing.found.insert(path, lookup);
        }
        if !walk.worth_it() {
            log::debug!("listing {dir} costs more than reading its secrets in use");
            listing.paused.insert(dir, now + listing::PAUSE);
        }
        Ok(())
    }

    /// The directories of `paths` that can be listed: KV v2 data paths
    /// under a mount already looked up (a lookup asks for the mounts it
    /// does not know; this asks for nothing).
    fn directories(&self, paths: &[&str]) -> Dirs {
        let mut dirs = Dirs::new();
        for path in paths {
            let Some(mount) = self.cached_mount(path) else {
                continue;
            };
            if metadata_path(mount, path).is_err() {
                continue;
            }
            if let Some((dir, key)) = listing::place(&mount.path, path) {
                let (_, wanted) = dirs
                    .entry(dir)
                    .or_insert_with(|| (mount.path.clone(), BTreeMap::new()));
                wanted.insert(key, path.to_string());
            }
        }
        dirs
    }

    /// Lists `dir` for the `wanted` keys, page by page as [`Walk`] says:
    /// the walk (what it settled) and each wanted key's metadata as listed
    /// (`None`: listed without any).
    fn list_dir(
        &mut self,
        dir: &str,
        wanted: BTreeSet<String>,
        token: &str,
    ) -> Result<(Walk, BTreeMap<String, Option<Metadata>>), Error> {
        let mut walk = Walk::new(wanted);
        let mut found = BTreeMap::new();
        loop {
            let path = format!("{dir}{}", walk.query());
            let mut page = match self.get("list", &path, token) {
                Ok(response) => http::read_json::<PageAnswer>(response, ANSWER_LIMIT)?.data,
                // OpenBao answers 404 past the last key. On the first page
                // that may as well be a server without `detailed-metadata`
                // (HashiCorp Vault): then nothing is settled.
                Err(Error::NotFound) if !walk.at_start() => Page::default(),
                Err(e) => return Err(e),
            };
            for key in &page.keys {
                if walk.wanted().contains(key) {
                    found.insert(key.clone(), page.key_info.remove(key).flatten());
                }
            }
            if !walk.take(&page.keys) {
                return Ok((walk, found));
            }
        }
    }
}

/// What to do about a failed listing, when it is clear.
fn hint(error: &Error) -> &'static str {
    match error {
        Error::Denied(_) => " (the policy needs list on MOUNT/detailed-metadata/*)",
        Error::NotFound | Error::Misrouted(_) => {
            " (detailed-metadata is OpenBao's; without it, or in an empty directory, nothing is listed)"
        }
        Error::TooLarge { .. } => " (a page of its metadata passed the answer limit)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client, found, KV2, LOOKUP_SELF, METADATA};
    use super::*;
    use crate::io::http::fake_server::{self, FakeServer, Reply};
    use crate::vault::Unreadable;

    /// A page listing `a` (version 3), `b` (version 2, destroyed), the
    /// directory `c/` and `d` (listed without metadata).
    const PAGE: &str = r#"{"data":{"keys":["a","b","c/","d"],"key_info":{
        "a":{"current_version":3,"versions":{"3":{"created_time":"2024-01-01T00:00:00Z"}}},
        "b":{"current_version":2,"versions":{"2":{"created_time":"2024-02-01T00:00:00Z","destroyed":true}}},
        "c/":{"current_version":0},
        "d":null}}}"#;

    /// A KV v2 server at `secret/` whose listings of `secret/team/` get
    /// `list`; metadata reads get version 3.
    fn server(list: Reply) -> FakeServer {
        fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            p if p.starts_with(&format!(
                "/v1/secret/detailed-metadata/team/?list=true&limit={}",
                listing::PAGE
            )) =>
            {
                list.clone()
            }
            p if p.starts_with("/v1/secret/metadata/") => Reply::json(200, METADATA),
            _ => Reply::json(404, r#"{"errors":[]}"#),
        })
    }

    /// Lists every directory [`Vault::prefetch`] plans, as a pass does.
    fn prefetch(vault: &mut Vault, paths: &[&str]) -> Result<(), Error> {
        let mut plan = vault.prefetch(paths);
        while let Some(step) = vault.list_next(&mut plan) {
            step?;
        }
        Ok(())
    }

    /// `vault` once it has looked up the mount `secret/` (with a read of
    /// `secret/data/alone`).
    fn warmed(mut vault: Vault) -> Vault {
        assert_eq!(found(vault.current_version(PATHS[4])), 3);
        vault
    }

    const PATHS: [&str; 5] = [
        "secret/data/team/a",
        "secret/data/team/b",
        "secret/data/team/c",
        "secret/data/team/d",
        "secret/data/alone",
    ];

    #[test]
    fn one_listing_answers_the_secrets_of_a_directory() {
        let server = server(Reply::json(200, PAGE));
        let mut vault = warmed(client(&server).with_listing());
        prefetch(&mut vault, &PATHS).unwrap();
        assert_eq!(server.hits("/v1/secret/detailed-metadata/"), 1);
        assert_eq!(server.hits("/v1/secret/metadata/"), 1, "the warming read");
        let mut look_up = |path| vault.current_version(path);
        assert_eq!(found(look_up("secret/data/team/a")), 3);
        match look_up("secret/data/team/b") {
            Lookup::Unreadable(version, Unreadable::Destroyed) => assert_eq!(version.number, 2),
            other => panic!("b is destroyed: {other:?}"),
        }
        // Only the directory c/ is listed: the secret c is not there.
        assert!(matches!(look_up("secret/data/team/c"), Lookup::Missing));
        assert_eq!(server.hits("/v1/secret/metadata/"), 1);
        // Listed without metadata, and alone in its directory: read.
        assert_eq!(found(look_up("secret/data/team/d")), 3);
        assert_eq!(found(look_up("secret/data/alone")), 3);
        assert_eq!(server.hits("/v1/secret/metadata/"), 3);
        // A listing answers one pass: the next lookup reads.
        assert_eq!(found(look_up("secret/data/team/a")), 3);
        assert_eq!(server.hits("/v1/secret/metadata/"), 4);
    }

    #[test]
    fn a_mount_not_looked_up_yet_is_not_listed_and_nothing_is_asked() {
        let server = server(Reply::json(200, PAGE));
        let mut vault = client(&server).with_listing();
        prefetch(&mut vault, &PATHS).unwrap();
        assert_eq!(server.requests().len(), 0);
    }

    #[test]
    fn without_listing_nothing_is_listed() {
        let server = server(Reply::json(200, PAGE));
        let mut vault = warmed(client(&server));
        prefetch(&mut vault, &PATHS).unwrap();
        assert_eq!(found(vault.current_version(PATHS[0])), 3);
        assert_eq!(server.hits("/v1/secret/detailed-metadata/"), 0);
    }

    #[test]
    fn a_refused_or_unknown_listing_reads_each_secret_and_pauses_the_directory() {
        // 403: no list capability; 404 at the start: HashiCorp Vault's
        // answer (or an empty directory), never taken for missing secrets.
        let vault_404 =
            r#"{"data":null,"warnings":["Invalid path for a versioned K/V secrets engine."]}"#;
        for answer in [
            Reply::json(403, r#"{"errors":["permission denied"]}"#),
            Reply::json(404, vault_404),
        ] {
            let server = server(answer);
            let mut vault = warmed(client(&server).with_listing());
            for _ in 0..2 {
                prefetch(&mut vault, &PATHS).unwrap();
                for path in &PATHS[..3] {
                    assert_eq!(found(vault.current_version(path)), 3);
                }
            }
            assert_eq!(server.hits("/v1/secret/detailed-metadata/"), 1, "paused");
            assert_eq!(server.hits("/v1/secret/metadata/"), 1 + 6);
        }
    }

    #[test]
    fn a_directory_too_large_for_its_secrets_in_use_is_read_one_by_one_for_a_while() {
        // Full pages of keys before the wanted ones: the listing costs as
        // much as reading them before it reaches them.
        let keys: Vec<String> = (0..listing::PAGE).map(|i| format!("\"a{i:03}\"")).collect();
        let page = format!(
            r#"{{"data":{{"keys":[{}],"key_info":{{}}}}}}"#,
            keys.join(",")
        );
        let server = server(Reply::json(200, &page));
        let mut vault = warmed(client(&server).with_listing());
        prefetch(&mut vault, &PATHS).unwrap();
        let listed = server.hits("/v1/secret/detailed-metadata/");
        assert!(listed >= 1);
        assert_eq!(found(vault.current_version(PATHS[3])), 3);
        prefetch(&mut vault, &PATHS).unwrap();
        assert_eq!(
            server.hits("/v1/secret/detailed-metadata/"),
            listed,
            "paused"
        );
        assert_eq!(found(vault.current_version(PATHS[3])), 3);
        assert_eq!(server.hits("/v1/secret/metadata/"), 1 + 2);
    }

    #[test]
    fn a_server_failure_ends_the_prefetch_without_pausing() {
        let server = server(Reply::json(503, r#"{"errors":["sealed"]}"#));
        let mut vault = warmed(client(&server).with_listing());
        for _ in 0..2 {
            match prefetch(&mut vault, &PATHS) {
                Err(e @ Error::Status { code: 503, .. }) => assert!(e.is_server_failure()),
                other => panic!("the failure is returned: {other:?}"),
            }
        }
        assert_eq!(server.hits("/v1/secret/detailed-metadata/"), 2);
    }
}
