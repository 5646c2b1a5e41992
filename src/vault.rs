//! The Vault (or OpenBao) client: login and token lifetime, KV mount lookup,
//! and the current version of a secret from its metadata. It never reads a
//! secret's data.

use crate::config::{Redacted, VaultAuth, VaultSettings};
use crate::error::Error;
use crate::http;
use crate::pace::Duties;
use crate::state::Version;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// The largest Vault answer read (login, token, mount, metadata): 1 MiB.
pub const ANSWER_LIMIT: u64 = 1024 * 1024;
/// The first wait before trying again to renew a fixed token after a
/// failure; it doubles with each failure in a row.
const RENEW_RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between two renewal attempts.
const RENEW_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// The longest token lifetime believed (a server-sent TTL): one year.
const MAX_TTL: u64 = 365 * 24 * 60 * 60;

/// What Vault says about one secret path.
#[derive(Debug)]
pub enum Lookup {
    /// The current version.
    Found(Version),
    /// The current version exists but cannot be read (soft-deleted, expired
    /// by `delete_version_after`, or destroyed): pods started now would not
    /// get it.
    Unreadable(Version, Unreadable),
    /// The path does not exist (404, or metadata without versions).
    Missing,
    /// The path can never have versions; the text says why.
    Unwatchable(&'static str),
    /// Vault could not be asked; try again next pass.
    Failed(Error),
}

/// Why a KV v2 version that exists cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Its deletion time has passed (`kv delete`, or `delete_version_after`).
    Deleted,
    /// Its data is gone for good (`kv destroy`).
    Destroyed,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unreadable::Deleted => "deleted",
            Unreadable::Destroyed => "destroyed",
        })
    }
}

/// Whether a version with these metadata fields can be read at `now`:
/// `None` when it can. A deletion time is set in advance by
/// `delete_version_after`, so only one that has passed makes it deleted;
/// one that cannot be read counts as passed (the Warning Event shows it).
pub fn unreadable(destroyed: bool, deletion_time: &str, now: SystemTime) -> Option<Unreadable> {
    if destroyed {
        return Some(Unreadable::Destroyed);
    }
    if deletion_time.is_empty() {
        return None;
    }
    match humantime::parse_rfc3339(deletion_time) {
        Ok(at) if at > now => None,
        _ => Some(Unreadable::Deleted),
    }
}

/// A client of one Vault server.
pub struct Vault {
    agent: ureq::Agent,
    addr: String,
    namespace: Option<String>,
    auth: VaultAuth,
    jwt_file: PathBuf,
    token: Option<Token>,
    mounts: Vec<Mount>,
    requests: http::Counts,
}

struct Token {
    value: String,
    schedule: Schedule,
}

/// When a token is refreshed, and what is known of its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Schedule {
    /// When to renew (fixed token) or log in again (login methods); `None`:
    /// never.
    refresh_at: Option<Instant>,
    /// When the token stops working, when known.
    expires_at: Option<Instant>,
    /// The wait after the last failed renewal; `None` while renewals work.
    retry: Option<Duration>,
}

impl Schedule {
    /// A token obtained or renewed at `now`, valid for `ttl` seconds (0: no
    /// expiry): refreshed at two thirds of its life. The TTL comes from the
    /// server, so it is clamped to [`MAX_TTL`] and the sums are checked.
    fn fresh(ttl: u64, now: Instant) -> Schedule {
        let ttl = ttl.min(MAX_TTL);
        let after = |secs: u64| (ttl > 0).then(|| now.checked_add(Duration::from_secs(secs)));
        Schedule {
            refresh_at: after(ttl * 2 / 3).flatten(),
            expires_at: after(ttl).flatten(),
            retry: None,
        }
    }

    /// Whether a refresh is due at `now`.
    fn due(&self, now: Instant) -> bool {
        self.refresh_at.is_some_and(|at| now >= at)
    }

    /// After a renewal failed at `now`: try again after a wait that starts at
    /// [`RENEW_RETRY_MIN`] and doubles up to [`RENEW_RETRY_MAX`], never past
    /// the known expiry; once expired, never again.
    fn failed(self, now: Instant) -> Schedule {
        let retry = self
            .retry
            .map_or(RENEW_RETRY_MIN, |wait| (wait * 2).min(RENEW_RETRY_MAX));
        let next = now.checked_add(retry);
        let refresh_at = match self.expires_at {
            Some(end) if now >= end => None,
            Some(end) => Some(next.map_or(end, |next| next.min(end))),
            None => next,
        };
        Schedule {
            refresh_at,
            expires_at: self.expires_at,
            retry: Some(retry),
        }
    }
}

/// A path's mount: as Vault answered, or guessed after the mount lookup was
/// refused with status `refused`.
enum MountFor {
    Known(Mount),
    Guessed { mount: Mount, refused: u16 },
}

/// A secrets engine mount, e.g. `team/kv/` of a KV v2 engine.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    path: String,
    kind: String,
    kv_version: String,
}

#[derive(Deserialize)]
struct AuthAnswer {
    auth: AuthInfo,
}

#[derive(Deserialize)]
struct AuthInfo {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
}

#[derive(Deserialize)]
struct LookupSelfAnswer {
    data: LookupSelf,
}

#[derive(Deserialize)]
struct LookupSelf {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct MountAnswer {
    data: MountData,
}

#[derive(Deserialize)]
struct MountData {
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct MetadataAnswer {
    data: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    versions: BTreeMap<String, VersionInfo>,
}

#[derive(Deserialize)]
struct VersionInfo {
    #[serde(default)]
    created_time: String,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

/// The metadata path of the KV v2 data path `path` under `mount`
/// (`MOUNT/data/REST` → `MOUNT/metadata/REST`), or why it has none.
fn metadata_path(mount: &Mount, path: &str) -> Result<String, &'static str> {
    if mount.kind != "kv" && mount.kind != "generic" {
        return Err("it is not in a KV secrets engine");
    }
    if mount.kv_version != "2" {
        return Err("a KV v1 secret has no versions");
    }
    path.strip_prefix(mount.path.as_str())
        .and_then(|rest| rest.strip_prefix("data/"))
        .map(|rest| format!("{}metadata/{rest}", mount.path))
        .ok_or("it is not a KV v2 data path (MOUNT/data/...)")
}

impl Vault {
    /// A client for `settings`, trusting `ca_pem` when given; logs in with
    /// the service-account token in `jwt_file` when the auth method needs it.
    /// Nothing is sent until the first lookup.
    pub fn new(
        settings: &VaultSettings,
        ca_pem: Option<Vec<u8>>,
        jwt_file: PathBuf,
    ) -> Result<Vault, Error> {
        let tls = http::Tls {
            ca_pem,
            skip_verify: settings.skip_verify,
            client_cert: None,
        };
        Ok(Vault {
            agent: http::agent(settings.timeout, &tls)?,
            addr: settings.addr.clone(),
            namespace: settings.namespace.clone(),
            auth: settings.auth.clone(),
            jwt_file,
            token: None,
            mounts: Vec::new(),
            requests: http::Counts::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.addr)
    }

    /// The requests sent since the last call, by kind and status.
    pub fn take_requests(&mut self) -> http::Counts {
        std::mem::take(&mut self.requests)
    }

    /// Sends a GET, answering the loop's health checks first: a lookup may
    /// send several requests, and a health answer waits for one at most.
    fn get(
        &mut self,
        what: &'static str,
        path: &str,
        token: &str,
        duties: &mut dyn Duties,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        duties.serve();
        let mut request = self
            .agent
            .get(&self.url(path))
            .header("X-Vault-Token", token)
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        let result = http::check(request.call());
        http::count(&mut self.requests, what, &result);
        result
    }

    fn post(
        &mut self,
        what: &'static str,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
        duties: &mut dyn Duties,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        duties.serve();
        let mut request = self
            .agent
            .post(&self.url(path))
            .header("X-Vault-Request", "true")
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        let result = http::check(request.send(body.to_string().as_bytes()));
        http::count(&mut self.requests, what, &result);
        result
    }

    /// A token that is valid now: logs in, renews or logs in again as its
    /// lifetime requires.
    fn token(&mut self, duties: &mut dyn Duties) -> Result<String, Error> {
        let due = match &self.token {
            None => true,
            Some(token) => token.schedule.due(Instant::now()),
        };
        if due {
            self.token = Some(self.fresh_token(duties)?);
        }
        Ok(self
            .token
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default())
    }

    fn fresh_token(&mut self, duties: &mut dyn Duties) -> Result<Token, Error> {
        match self.auth.clone() {
            VaultAuth::Login {
                method,
                role,
                mount,
            } => {
                let jwt = std::fs::read_to_string(&self.jwt_file).map_err(|e| Error::File {
                    path: self.jwt_file.display().to_string(),
                    reason: e.to_string(),
                })?;
                let body = serde_json::json!({"role": role, "jwt": jwt.trim()});
                let response =
                    self.post("login", &format!("auth/{mount}/login"), None, &body, duties)?;
                let answer: AuthAnswer = http::read_json(response, ANSWER_LIMIT)?;
                log::info!(
                    "logged in to {} with the {method} auth method as role {role}; token valid for {}s",
                    self.addr,
                    answer.auth.lease_duration
                );
                Ok(Token {
                    value: answer.auth.client_token,
                    schedule: Schedule::fresh(answer.auth.lease_duration, Instant::now()),
                })
            }
            VaultAuth::Token(Redacted(fixed)) => {
                let schedule = match self.token.as_ref().map(|t| t.schedule) {
                    Some(due) => self.renew(&fixed, due, duties),
                    None => {
                        let response =
                            self.get("lookup-self", "auth/token/lookup-self", &fixed, duties)?;
                        let answer: LookupSelfAnswer = http::read_json(response, ANSWER_LIMIT)?;
                        let mut schedule = Schedule::fresh(answer.data.ttl, Instant::now());
                        if !answer.data.renewable {
                            schedule.refresh_at = None;
                        }
                        schedule
                    }
                };
                Ok(Token {
                    value: fixed,
                    schedule,
                })
            }
        }
    }

    /// Renews the fixed token `token` that was due under `before`, and says
    /// when to renew next. A failure keeps the token in use and tries again
    /// later (see [`Schedule::failed`]); only changes of state are logged.
    fn renew(&mut self, token: &str, before: Schedule, duties: &mut dyn Duties) -> Schedule {
        let now = Instant::now();
        let empty = serde_json::json!({});
        let renewed = self
            .post(
                "renew",
                "auth/token/renew-self",
                Some(token),
                &empty,
                duties,
            )
            .and_then(|response| http::read_json::<AuthAnswer>(response, ANSWER_LIMIT));
        match renewed {
            Ok(answer) => {
                let ttl = answer.auth.lease_duration;
                if before.retry.is_some() {
                    log::info!("renewed the Vault token again; valid for {ttl}s");
                } else {
                    log::debug!("renewed the Vault token for {ttl}s");
                }
                Schedule::fresh(ttl, now)
            }
            Err(e) => {
                let after = before.failed(now);
                match (before.retry, after.refresh_at) {
                    (_, None) => {
                        log::warn!("renewing the Vault token failed: {e}; it has expired and is not renewed again")
                    }
                    (None, Some(_)) => log::warn!(
                        "renewing the Vault token failed: {e}; trying again until it is renewed or expires"
                    ),
                    (Some(_), Some(_)) => log::debug!("renewing the Vault token failed again: {e}"),
                }
                after
            }
        }
    }

    /// The mount holding `path`: from the cache, else asked with
    /// `sys/internal/ui/mounts/PATH` (which Vault answers for any token with
    /// some access under the mount) and cached. If that is refused, the first
    /// segment is guessed to be a KV v2 mount; a guess is not cached, so the
    /// next lookup asks again.
    fn mount_for(
        &mut self,
        path: &str,
        token: &str,
        duties: &mut dyn Duties,
    ) -> Result<MountFor, Error> {
        if let Some(mount) = self.mounts.iter().find(|m| path.starts_with(&m.path)) {
            return Ok(MountFor::Known(mount.clone()));
        }
        let answer: MountAnswer = match self.get(
            "mount",
            &format!("sys/internal/ui/mounts/{path}"),
            token,
            duties,
        ) {
            Ok(response) => http::read_json(response, ANSWER_LIMIT)?,
            Err(e @ (Error::Denied(_) | Error::NotFound | Error::Status { code: 405, .. })) => {
                let first = path.split('/').next().unwrap_or_default();
                log::debug!("mount lookup for {path} refused ({e}); guessing KV v2 at {first}/");
                return Ok(MountFor::Guessed {
                    mount: Mount {
                        path: format!("{first}/"),
                        kind: "kv".into(),
                        kv_version: "2".into(),
                    },
                    refused: e.status().unwrap_or_default(),
                });
            }
            Err(other) => return Err(other),
        };
        let mut mount_path = answer.data.path;
        if !mount_path.ends_with('/') {
            mount_path.push('/');
        }
        let mount = Mount {
            path: mount_path,
            kind: answer.data.kind,
            kv_version: answer
                .data
                .options
                .and_then(|o| o.get("version").cloned())
                .unwrap_or_else(|| "1".into()),
        };
        // Longest first, so a nested mount wins over its parent.
        self.mounts.push(mount.clone());
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
        Ok(MountFor::Known(mount))
    }

    /// The current version of the KV v2 secret at `path` (as the webhook
    /// reads it, `MOUNT/data/REST`), from `MOUNT/metadata/REST`.
    /// `duties` are served before each request it sends.
    pub fn current_version(&mut self, path: &str, duties: &mut dyn Duties) -> Lookup {
        match self.try_current_version(path, duties) {
            Ok(lookup) => lookup,
            Err(Error::Denied(_)) if matches!(self.auth, VaultAuth::Login { .. }) => {
                // The token may have been revoked or expired early: log in again once.
                self.token = None;
                self.try_current_version(path, duties)
                    .unwrap_or_else(Lookup::Failed)
            }
            Err(e) => Lookup::Failed(e),
        }
    }

    /// The lookup of `path`. Only a mount Vault answered can make a path
    /// unwatchable or missing; under a guessed mount those outcomes are
    /// errors, so the caller keeps what it knew and asks again.
    fn try_current_version(
        &mut self,
        path: &str,
        duties: &mut dyn Duties,
    ) -> Result<Lookup, Error> {
        let token = self.token(duties)?;
        let (mount, refused) = match self.mount_for(path, &token, duties)? {
            MountFor::Known(mount) => (mount, None),
            MountFor::Guessed { mount, refused } => (mount, Some(refused)),
        };
        let guess_failed = |why| Error::MountUnknown {
            refused: refused.unwrap_or_default(),
            guess: mount.path.clone(),
            why,
        };
        let metadata_path = match (metadata_path(&mount, path), refused) {
            (Ok(metadata_path), _) => metadata_path,
            (Err(why), None) => return Ok(Lookup::Unwatchable(why)),
            (Err(_), Some(_)) => return Err(guess_failed("the path is not MOUNT/data/...")),
        };
        let answer: MetadataAnswer = match self.get("metadata", &metadata_path, &token, duties) {
            Ok(response) => http::read_json(response, ANSWER_LIMIT)?,
            Err(Error::NotFound | Error::Misrouted(_)) if refused.is_some() => {
                return Err(guess_failed("the metadata was not found"))
            }
            Err(Error::NotFound) => return Ok(Lookup::Missing),
            Err(e) => return Err(e),
        };
        let number = answer.data.current_version;
        if number == 0 {
            return Ok(Lookup::Missing);
        }
        let info = answer.data.versions.get(&number.to_string());
        let created = info.map(|v| v.created_time.clone()).unwrap_or_default();
        let version = Version { number, created };
        let why = info.and_then(|v| unreadable(v.destroyed, &v.deletion_time, SystemTime::now()));
        Ok(match why {
            Some(why) => Lookup::Unreadable(version, why),
            None => Lookup::Found(version),
        })
    }
}

/// Why a path's lifetime is not known (STUB for merge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifetimeError {
    /// The path is in a KV mount: not a dynamic secret.
    NotDynamic,
    /// Nothing about the mount or role could be read; the text names the permission missing.
    Unknown(String),
    /// Vault could not be asked: try again next pass.
    Failed(Error),
}

impl Vault {
    /// STUB for merge: the lifetime of credentials read from `path`.
    pub fn lifetime(
        &mut self,
        path: &str,
        _duties: &mut dyn Duties,
    ) -> Result<crate::lifetime::Lifetime, LifetimeError> {
        Err(LifetimeError::Unknown(format!(
            "read on the role of {path} (stub)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fake_server::{self, FakeServer, Reply, Request};
    use crate::pace::Unattended;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LOOKUP_SELF: &str = r#"{"data":{"ttl":3600,"renewable":true}}"#;
    const KV2: &str = r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#;
    const METADATA: &str = r#"{"data":{"current_version":3,"versions":{"3":{"created_time":"2024-01-01T00:00:00Z"}}}}"#;

    fn client(server: &FakeServer) -> Vault {
        let settings = VaultSettings {
            addr: server.url.clone(),
            auth: VaultAuth::Token(Redacted("s.fixed".into())),
            namespace: None,
            ca_file: None,
            ca_secret: None,
            skip_verify: false,
            timeout: Duration::from_secs(5),
            ignore_missing: false,
        };
        Vault::new(&settings, None, PathBuf::new()).unwrap()
    }

    /// A fake Vault: lookup-self and `secret/metadata/*` answer; mount
    /// lookups get `mounts`.
    fn fake_vault(mounts: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeServer {
        fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => mounts(r),
            p if p.starts_with("/v1/secret/metadata/") => Reply::json(200, METADATA),
            _ => Reply::json(404, r#"{"errors":[]}"#),
        })
    }

    fn found(lookup: Lookup) -> u64 {
        match lookup {
            Lookup::Found(version) => version.number,
            other => panic!("expected a version, got {other:?}"),
        }
    }

    #[test]
    fn a_redirect_is_an_error_and_the_token_does_not_follow() {
        let elsewhere = fake_server::start(|_| Reply::json(200, METADATA));
        let target = format!("{}/v1/secret/metadata/x", elsewhere.url);
        let location = target.clone();
        let server = fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => Reply {
                status: 302,
                headers: vec![("Location".into(), location.clone())],
                body: Vec::new(),
            },
        });
        let lookup = client(&server).current_version("secret/data/x", &mut Unattended);
        match lookup {
            Lookup::Failed(e @ Error::Redirect { code: 302, .. }) => assert_eq!(
                e.to_string(),
                format!("redirected (302) to {target}; redirects are not followed")
            ),
            other => panic!("expected a redirect error, got {other:?}"),
        }
        assert_eq!(elsewhere.connections(), 0);
    }

    #[test]
    fn an_answer_over_one_mib_fails_the_lookup() {
        let big = format!(
            r#"{{"pad":"{}","data":{{"current_version":1}}}}"#,
            "x".repeat(2 << 20)
        );
        let server = fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => Reply::json(200, &big),
        });
        let lookup = client(&server).current_version("secret/data/x", &mut Unattended);
        assert!(
            matches!(
                lookup,
                Lookup::Failed(Error::TooLarge {
                    limit: ANSWER_LIMIT
                })
            ),
            "{lookup:?}"
        );
    }

    #[test]
    fn a_refused_mount_lookup_is_asked_again_next_time() {
        let server = fake_vault(|_| Reply::json(403, r#"{"errors":["permission denied"]}"#));
        let mut vault = client(&server);
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 2);
    }

    /// Counts how often the loop's duties were served.
    #[derive(Default)]
    struct Counting(usize);

    impl Duties for Counting {
        fn serve(&mut self) {
            self.0 += 1;
        }
        fn keep_going(&mut self) -> bool {
            true
        }
    }

    #[test]
    fn health_checks_are_served_before_every_request_of_a_lookup() {
        let server = fake_vault(|_| Reply::json(200, KV2));
        let mut duties = Counting::default();
        let lookup = client(&server).current_version("secret/data/x", &mut duties);
        assert_eq!(found(lookup), 3);
        // lookup-self, the mount, the metadata: three requests.
        assert_eq!(server.requests().len(), 3);
        assert_eq!(duties.0, 3);
    }

    #[test]
    fn an_answered_mount_is_asked_once() {
        let server = fake_vault(|_| Reply::json(200, KV2));
        let mut vault = client(&server);
        assert_eq!(
            found(vault.current_version("secret/data/a", &mut Unattended)),
            3
        );
        assert_eq!(
            found(vault.current_version("secret/data/b", &mut Unattended)),
            3
        );
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 1);
    }

    #[test]
    fn a_failed_guess_is_a_failure_not_unwatchable_nor_missing() {
        let server = fake_vault(|_| Reply::json(403, "{}"));
        let mut vault = client(&server);
        // Really a nested mount `team/kv/`: the guess `team/` does not fit.
        let nested = vault.current_version("team/kv/data/x", &mut Unattended);
        assert!(
            matches!(
                nested,
                Lookup::Failed(Error::MountUnknown { refused: 403, .. })
            ),
            "{nested:?}"
        );
        // Fits the guess `team/`, but no metadata there.
        let absent = vault.current_version("team/data/x", &mut Unattended);
        assert!(
            matches!(absent, Lookup::Failed(Error::MountUnknown { .. })),
            "{absent:?}"
        );
    }

    #[test]
    fn an_answered_mount_can_make_a_path_unwatchable_or_missing() {
        let server = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            "/v1/sys/internal/ui/mounts/old/data/x" => {
                Reply::json(200, r#"{"data":{"path":"old/","type":"kv","options":{}}}"#)
            }
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => Reply::json(404, r#"{"errors":[]}"#),
        });
        let mut vault = client(&server);
        assert!(matches!(
            vault.current_version("old/data/x", &mut Unattended),
            Lookup::Unwatchable("a KV v1 secret has no versions")
        ));
        assert!(matches!(
            vault.current_version("secret/nodata/x", &mut Unattended),
            Lookup::Unwatchable(_)
        ));
        assert!(matches!(
            vault.current_version("secret/data/gone", &mut Unattended),
            Lookup::Missing
        ));
    }

    #[test]
    fn a_mount_lookup_server_error_fails_and_is_not_cached() {
        let server = fake_vault(|_| Reply::json(500, r#"{"errors":["sealed"]}"#));
        let mut vault = client(&server);
        for _ in 0..2 {
            let lookup = vault.current_version("secret/data/x", &mut Unattended);
            assert!(
                matches!(lookup, Lookup::Failed(Error::Status { code: 500, .. })),
                "{lookup:?}"
            );
        }
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 2);
    }

    fn make_due(vault: &mut Vault) {
        vault.token.as_mut().unwrap().schedule.refresh_at = Some(Instant::now());
    }

    #[test]
    fn a_failed_renewal_is_tried_again_and_the_token_kept() {
        let renewals = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&renewals);
        let server = fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            "/v1/auth/token/renew-self" => match seen.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::json(500, r#"{"errors":["busy"]}"#),
                _ => Reply::json(200, r#"{"auth":{"client_token":"","lease_duration":3600}}"#),
            },
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => Reply::json(200, METADATA),
        });
        let mut vault = client(&server);
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        make_due(&mut vault);
        let failed_at = Instant::now();
        // The renewal fails; the token still works and a retry is planned.
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        let schedule = vault.token.as_ref().unwrap().schedule;
        let retry_at = schedule.refresh_at.expect("a retry is planned");
        assert!(retry_at >= failed_at + RENEW_RETRY_MIN);
        assert!(retry_at <= schedule.expires_at.unwrap());
        // Not yet due: no request.
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        make_due(&mut vault);
        assert_eq!(
            found(vault.current_version("secret/data/x", &mut Unattended)),
            3
        );
        assert_eq!(renewals.load(Ordering::SeqCst), 2);
        let schedule = vault.token.as_ref().unwrap().schedule;
        assert_eq!(schedule.retry, None);
        assert!(schedule.refresh_at.unwrap() > Instant::now() + Duration::from_secs(2000));
        let requests = server.requests();
        assert!(requests
            .iter()
            .all(|r| r.header("x-vault-token") == Some("s.fixed")));
        assert!(requests
            .iter()
            .filter(|r| r.path == "/v1/auth/token/renew-self")
            .all(|r| r.method == "POST"));
    }

    #[test]
    fn whether_the_current_version_is_readable() {
        let now = humantime::parse_rfc3339("2026-11-29T14:00:00Z").unwrap();
        use Unreadable::*;
        #[rustfmt::skip]
        let cases: &[(&str, bool, &str, Option<Unreadable>)] = &[
            ("written, never deleted", false, "", None),
            ("kv delete: deletion time passed", false, "2026-11-29T13:59:59.123456789Z", Some(Deleted)),
            ("deleted exactly now", false, "2026-11-29T14:00:00Z", Some(Deleted)),
            ("delete_version_after: deletion time ahead, still readable", false, "2026-11-29T15:00:00.5Z", None),
            ("delete_version_after expired", false, "2026-11-29T13:00:00Z", Some(Deleted)),
            ("kv destroy", true, "", Some(Destroyed)),
            ("deleted, then destroyed", true, "2026-11-29T13:00:00Z", Some(Destroyed)),
            ("an unreadable deletion time counts as passed", false, "yesterday", Some(Deleted)),
        ];
        for (name, destroyed, deletion_time, want) in cases {
            assert_eq!(unreadable(*destroyed, deletion_time, now), *want, "{name}");
        }
    }

    #[test]
    fn a_deleted_current_version_is_unreadable_and_names_its_version() {
        const DELETED: &str = r#"{"data":{"current_version":2,"versions":{
            "1":{"created_time":"2024-01-01T00:00:00Z","deletion_time":"","destroyed":false},
            "2":{"created_time":"2024-01-02T00:00:00Z","deletion_time":"2024-01-03T00:00:00Z","destroyed":false}}}}"#;
        let server = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => Reply::json(200, DELETED),
        });
        match client(&server).current_version("secret/data/x", &mut Unattended) {
            Lookup::Unreadable(version, Unreadable::Deleted) => {
                assert_eq!(version.number, 2);
                assert_eq!(version.created, "2024-01-02T00:00:00Z");
            }
            other => panic!("expected an unreadable version, got {other:?}"),
        }
    }

    #[test]
    fn a_404_naming_another_cause_fails_the_lookup_instead_of_missing() {
        let server = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            "/v1/secret/metadata/gone" => Reply::json(404, r#"{"errors":[]}"#),
            _ => Reply::json(404, r#"{"errors":["namespace not found"]}"#),
        });
        let mut vault = client(&server);
        assert!(matches!(
            vault.current_version("secret/data/gone", &mut Unattended),
            Lookup::Missing
        ));
        let lookup = vault.current_version("secret/data/x", &mut Unattended);
        assert!(
            matches!(&lookup, Lookup::Failed(Error::Misrouted(cause)) if cause == "namespace not found"),
            "{lookup:?}"
        );
    }

    #[test]
    fn renewal_schedule() {
        let now = Instant::now();
        let at = |secs: u64| Some(now + Duration::from_secs(secs));
        let wait = |secs: u64| Some(Duration::from_secs(secs));
        let year = MAX_TTL;
        let fresh = |refresh, expires| Schedule {
            refresh_at: at(refresh),
            expires_at: at(expires),
            retry: None,
        };
        let failing = |refresh: Option<Instant>, expires, retry| Schedule {
            refresh_at: refresh,
            expires_at: at(expires),
            retry: wait(retry),
        };
        let never = Schedule::default();
        #[rustfmt::skip]
        let cases: &[(&str, Schedule, Schedule)] = &[
            ("ttl 0: no expiry, no refresh", Schedule::fresh(0, now), never),
            ("ttl 3600: refresh at 2400", Schedule::fresh(3600, now), fresh(2400, 3600)),
            ("ttl 1: refresh now", Schedule::fresh(1, now), fresh(0, 1)),
            ("ttl u64::MAX: clamped to a year", Schedule::fresh(u64::MAX, now), fresh(year * 2 / 3, year)),
            ("first failure: 5 s", fresh(0, 3600).failed(now), failing(at(5), 3600, 5)),
            ("second failure: 10 s", failing(None, 3600, 5).failed(now), failing(at(10), 3600, 10)),
            ("backoff stops at 5 min", failing(None, 3600, 240).failed(now), failing(at(300), 3600, 300)),
            ("never past the expiry", failing(None, 7, 5).failed(now), failing(at(7), 7, 10)),
            ("expired: never again", failing(None, 0, 5).failed(now), failing(None, 0, 10)),
            ("no known expiry: keeps trying", never.failed(now), Schedule { refresh_at: at(5), expires_at: None, retry: wait(5) }),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        assert!(fresh(0, 1).due(now));
        assert!(!fresh(1, 1).due(now));
        assert!(!never.due(now));
    }
}
