//! The Vault (or OpenBao) client: login and token lifetime, KV mount lookup,
//! the current version of a secret from its metadata, and the lifetime of
//! dynamic credentials from their mount and role. It never reads a secret's
//! data and never requests a dynamic path (no lease is ever created).

use crate::error::Error;
use crate::io::http;
use crate::io::settings::{Redacted, VaultAuth, VaultSettings};
use crate::policy::state::Version;
use lifetime::{Lifetime, Source, Ttls};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

pub mod lifetime;
pub mod listing;
pub mod prefetch;

/// The largest Vault answer read (login, token, mount, metadata): 1 MiB.
pub const ANSWER_LIMIT: u64 = 1024 * 1024;
/// The first wait before trying again to renew a fixed token, or to get a
/// token at all, after a failure; it doubles with each failure in a row.
const RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between two renewal or login attempts.
const RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// How long revoking the token may take at shutdown, whatever
/// `VAULT_CLIENT_TIMEOUT` says: the daemon exits within a few seconds.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);
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
    /// The policy refuses the token this path (403) while the token itself
    /// works: the path's own answer, never a reason to log in again.
    Denied,
    /// The path can never have versions; the text says why.
    Unwatchable(&'static str),
    /// Vault could not be asked; try again next pass.
    Failed(Error),
}

/// Why a path's lifetime is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifetimeError {
    /// The path is in a KV mount (it has versions, or is KV v1) or another
    /// engine of stored secrets (cubbyhole): not a dynamic secret.
    NotDynamic,
    /// Nothing about the mount or role could be read; the text names the
    /// permission missing, e.g. "read on database/roles/app or
    /// sys/mounts/database/tune" (never a token or a value).
    Unknown(String),
    /// Vault could not be asked (transport, 5xx, …): try again next pass.
    Failed(Error),
}

impl fmt::Display for LifetimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifetimeError::NotDynamic => f.write_str("not a dynamic secret"),
            LifetimeError::Unknown(missing) => write!(f, "lifetime unknown: needs {missing}"),
            LifetimeError::Failed(e) => write!(f, "lifetime not read: {e}"),
        }
    }
}

/// What a role or tune endpoint answered for a lifetime.
enum Read {
    /// Its `data` object.
    Data(serde_json::Value),
    /// Not there (404), or no such endpoint for the path.
    Absent,
    /// Refused (401, 403): the policy does not allow it.
    Refused,
}

/// Engines whose paths hold stored secrets, never leased credentials.
const STORED: &[&str] = &["kv", "generic", "cubbyhole"];

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
    requests: crate::policy::metrics::Counts,
    /// With `--list-secret-metadata`: what listings found this pass.
    listing: Option<prefetch::Listing>,
    /// What this pass learned of the token after a 403 ([`Vault::begin_pass`]
    /// forgets it).
    checked: Checked,
    /// When a token may be asked for again after failing to get one.
    backoff: Backoff,
}

/// Whether the token works, as `auth/token/lookup-self` said after a 403.
#[derive(Debug, Clone, Default)]
enum Checked {
    /// Not asked this pass.
    #[default]
    Not,
    /// It works (or was just replaced): a 403 is the path's answer.
    Alive,
    /// It was refused and none could replace it: every lookup fails so.
    Dead(Error),
}

/// When to try again to get a token (log in, or look up a fixed one) after
/// failures: once per pass at most, and not before a wait that starts at
/// [`RETRY_MIN`] and doubles up to [`RETRY_MAX`]. A pure value: `now` is
/// always given.
#[derive(Debug, Clone, Default)]
struct Backoff {
    /// The last failure, given again to lookups until a try succeeds.
    failure: Option<Error>,
    /// Not before then.
    not_before: Option<Instant>,
    /// The wait set by the last failure.
    wait: Option<Duration>,
    /// A try failed in this pass.
    failed_this_pass: bool,
}

impl Backoff {
    /// Whether a try is allowed at `now`.
    fn allows(&self, now: Instant) -> bool {
        !self.failed_this_pass && self.not_before.is_none_or(|at| now >= at)
    }

    /// After a try failed at `now` with `error`.
    fn failed(self, error: Error, now: Instant) -> Backoff {
        let wait = self.wait.map_or(RETRY_MIN, |w| (w * 2).min(RETRY_MAX));
        Backoff {
            failure: Some(error),
            not_before: now.checked_add(wait),
            wait: Some(wait),
            failed_this_pass: true,
        }
    }

    /// The error lookups get while no try is allowed.
    fn error(&self) -> Error {
        let cause = self.failure.clone();
        Error::Token(Box::new(
            cause.unwrap_or(Error::Transport("no token yet".into())),
        ))
    }
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
    /// [`RETRY_MIN`] and doubles up to [`RETRY_MAX`], never past
    /// the known expiry; once expired, never again.
    fn failed(self, now: Instant) -> Schedule {
        let retry = self
            .retry
            .map_or(RETRY_MIN, |wait| (wait * 2).min(RETRY_MAX));
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
    /// The lease TTLs of its config (unset when guessed).
    ttls: Ttls,
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
    #[serde(default)]
    config: serde_json::Value,
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

/// What a secret's metadata says of its current version: none (`Missing`),
/// readable (`Found`) or not.
fn lookup_of(metadata: &Metadata) -> Lookup {
    let number = metadata.current_version;
    if number == 0 {
        return Lookup::Missing;
    }
    let info = metadata.versions.get(&number.to_string());
    let created = info.map(|v| v.created_time.clone()).unwrap_or_default();
    let version = Version { number, created };
    let why = info.and_then(|v| unreadable(v.destroyed, &v.deletion_time, SystemTime::now()));
    match why {
        Some(why) => Lookup::Unreadable(version, why),
        None => Lookup::Found(version),
    }
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
            agent: http::agent(
                settings.timeout,
                &tls,
                settings.proxies.for_url(&settings.addr),
            )?,
            addr: settings.addr.clone(),
            namespace: settings.namespace.clone(),
            auth: settings.auth.clone(),
            jwt_file,
            token: None,
            mounts: Vec::new(),
            requests: crate::policy::metrics::Counts::new(),
            listing: None,
            checked: Checked::Not,
            backoff: Backoff::default(),
        })
    }

    /// Starts a pass: what a 403 taught about the token, a failed try to
    /// get one, and what the listings found count for one pass only.
    pub fn begin_pass(&mut self) {
        self.checked = Checked::Not;
        self.backoff.failed_this_pass = false;
        self.forget_listed();
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.addr)
    }

    /// The requests sent since the last call, by kind and status.
    pub fn take_requests(&mut self) -> crate::policy::metrics::Counts {
        std::mem::take(&mut self.requests)
    }

    /// `request` with the headers every Vault request carries.
    fn headers<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        token: Option<&str>,
    ) -> ureq::RequestBuilder<B> {
        let mut request = request.header("X-Vault-Request", "true");
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        request
    }

    /// Sends a GET (its waits answer health checks:
    /// [`crate::io::reactor::wait_for`]).
    fn get(
        &mut self,
        what: &'static str,
        path: &str,
        token: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let request = self.headers(self.agent.get(&self.url(path)), Some(token));
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
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let request = self.agent.post(&self.url(path));
        self.send(what, request, token, body)
    }

    /// Sends `request` with a JSON `body`.
    fn send(
        &mut self,
        what: &'static str,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let request = self
            .headers(request, token)
            .header("Content-Type", "application/json");
        let result = http::check(request.send(body.to_string().as_bytes()));
        http::count(&mut self.requests, what, &result);
        result
    }

    /// A token that is valid now: logs in, renews or logs in again as its
    /// lifetime requires. A failure to get one keeps the current token
    /// while it has not expired (a fixed token is always kept: only the
    /// server can say it is dead); it is tried again as [`Backoff`]
    /// allows, once per pass at most. A login token replaced by a new one
    /// is revoked.
    fn token(&mut self) -> Result<String, Error> {
        let now = Instant::now();
        let due = self.token.as_ref().is_none_or(|t| t.schedule.due(now));
        if due && self.backoff.allows(now) {
            match self.fresh_token() {
                Ok(fresh) => {
                    self.backoff = Backoff::default();
                    if let Some(old) = self.token.replace(fresh) {
                        self.revoke_replaced(&old);
                    }
                }
                Err(e) => {
                    let backoff = std::mem::take(&mut self.backoff).failed(e.clone(), now);
                    let wait = backoff.wait.unwrap_or_default().as_secs();
                    log::warn!("getting a Vault token from {} failed: {e}; trying again in {wait}s at the earliest", self.addr);
                    self.backoff = backoff;
                }
            }
        }
        let fixed = matches!(self.auth, VaultAuth::Token(_));
        match &self.token {
            Some(t) if fixed || t.schedule.expires_at.is_none_or(|end| now < end) => {
                Ok(t.value.clone())
            }
            _ => Err(self.backoff.error()),
        }
    }

    /// Revokes `old`, a login token just replaced by a new one, so tokens
    /// do not pile up in Vault until their TTL ends. A fixed token is the
    /// operator's: never revoked. A failure is only logged.
    fn revoke_replaced(&mut self, old: &Token) {
        if matches!(self.auth, VaultAuth::Login { .. }) && old.value != self.current() {
            self.revoke_token(&old.value);
        }
    }

    /// The token in use, or an empty string.
    fn current(&self) -> String {
        self.token
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default()
    }

    /// `auth/token/revoke-self` with `token`, within [`REVOKE_TIMEOUT`].
    fn revoke_token(&mut self, token: &str) {
        let request = self
            .agent
            .post(&self.url("auth/token/revoke-self"))
            .config()
            .timeout_global(Some(REVOKE_TIMEOUT))
            .build();
        let result = self.send("revoke", request, Some(token), &serde_json::json!({}));
        match result.and_then(|response| http::discard(response, ANSWER_LIMIT)) {
            Ok(_) => log::debug!("revoked a Vault token no longer used"),
            Err(e) => log::warn!(
                "revoking a Vault token no longer used failed: {e}; it ends with its TTL"
            ),
        }
    }

    /// Revokes the token this client logged in for, at shutdown (a fixed
    /// token is the operator's and is kept).
    pub fn revoke(&mut self) {
        if !matches!(self.auth, VaultAuth::Login { .. }) {
            return;
        }
        if let Some(token) = self.token.take() {
            self.revoke_token(&token.value);
        }
    }

    fn fresh_token(&mut self) -> Result<Token, Error> {
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
                let response = self.post("login", &format!("auth/{mount}/login"), None, &body)?;
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
                    Some(due) => self.renew(&fixed, due),
                    None => {
                        let response = self.get("lookup-self", "auth/token/lookup-self", &fixed)?;
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
    fn renew(&mut self, token: &str, before: Schedule) -> Schedule {
        let now = Instant::now();
        let empty = serde_json::json!({});
        let renewed = self
            .post("renew", "auth/token/renew-self", Some(token), &empty)
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

    /// The mount holding `path`, if it was looked up before.
    fn cached_mount(&self, path: &str) -> Option<&Mount> {
        self.mounts.iter().find(|m| path.starts_with(&m.path))
    }

    /// The mount holding `path`: from the cache, else asked with
    /// `sys/internal/ui/mounts/PATH` (which Vault answers for any token with
    /// some access under the mount) and cached. If that is refused, the first
    /// segment is guessed to be a KV v2 mount; a guess is not cached, so the
    /// next lookup asks again.
    fn mount_for(&mut self, path: &str, token: &str) -> Result<MountFor, Error> {
        if let Some(mount) = self.cached_mount(path) {
            return Ok(MountFor::Known(mount.clone()));
        }
        let answer: MountAnswer =
            match self.get("mount", &format!("sys/internal/ui/mounts/{path}"), token) {
                Ok(response) => http::read_json(response, ANSWER_LIMIT)?,
                Err(e @ (Error::Denied(_) | Error::NotFound | Error::Status { code: 405, .. })) => {
                    let first = path.split('/').next().unwrap_or_default();
                    log::debug!(
                        "mount lookup for {path} refused ({e}); guessing KV v2 at {first}/"
                    );
                    return Ok(MountFor::Guessed {
                        mount: Mount {
                            path: format!("{first}/"),
                            kind: "kv".into(),
                            kv_version: "2".into(),
                            ttls: Ttls::default(),
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
            ttls: lifetime::mount_ttls(&answer.data.config),
        };
        // Longest first, so a nested mount wins over its parent.
        self.mounts.push(mount.clone());
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
        Ok(MountFor::Known(mount))
    }

    /// The current version of the KV v2 secret at `path` (as the webhook
    /// reads it, `MOUNT/data/REST`), from `MOUNT/metadata/REST`, or from
    /// this pass's listing of its directory ([`Vault::prefetch`]).
    pub fn current_version(&mut self, path: &str) -> Lookup {
        if let Some(listed) = self.listed(path) {
            return listed;
        }
        if let Checked::Dead(e) = &self.checked {
            return Lookup::Failed(e.clone());
        }
        let denied = match self.try_current_version(path) {
            Err(Error::Denied(_)) => self.after_denial(),
            other => return other.unwrap_or_else(Lookup::Failed),
        };
        match denied {
            Ok(Checked::Alive) => Lookup::Denied,
            // A new token replaced a dead one: ask again, once.
            Ok(_) => match self.try_current_version(path) {
                Err(Error::Denied(_)) => Lookup::Denied,
                other => other.unwrap_or_else(Lookup::Failed),
            },
            Err(e) => Lookup::Failed(e),
        }
    }

    /// After a 403 on a path: whether the token still works, from
    /// `auth/token/lookup-self`, asked once per pass. `Alive`: the 403 was
    /// the path's answer. `Not`: the token was dead and a login replaced it
    /// (ask the path again). An error: the token is dead and could not be
    /// replaced, or Vault could not be asked.
    fn after_denial(&mut self) -> Result<Checked, Error> {
        match &self.checked {
            Checked::Alive => return Ok(Checked::Alive),
            Checked::Dead(e) => return Err(e.clone()),
            Checked::Not => {}
        }
        let token = self.current();
        let refused = match self.get("lookup-self", "auth/token/lookup-self", &token) {
            Ok(response) => {
                http::discard(response, ANSWER_LIMIT)?;
                self.checked = Checked::Alive;
                return Ok(Checked::Alive);
            }
            Err(Error::Denied(code)) => code,
            Err(e) => return Err(e),
        };
        log::warn!(
            "Vault refused its own token ({refused} on auth/token/lookup-self): it was revoked \
             or expired early"
        );
        if let VaultAuth::Token(_) = self.auth {
            let dead = Error::Token(Box::new(Error::Denied(refused)));
            self.checked = Checked::Dead(dead.clone());
            return Err(dead);
        }
        self.token = None;
        match self.token() {
            Ok(_) => {
                self.checked = Checked::Alive;
                Ok(Checked::Not)
            }
            Err(e) => {
                self.checked = Checked::Dead(e.clone());
                Err(e)
            }
        }
    }

    /// The lookup of `path`. Only a mount Vault answered can make a path
    /// unwatchable or missing; under a guessed mount those outcomes are
    /// errors, so the caller keeps what it knew and asks again.
    fn try_current_version(&mut self, path: &str) -> Result<Lookup, Error> {
        let token = self.token()?;
        let (mount, refused) = match self.mount_for(path, &token)? {
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
        let answer: MetadataAnswer = match self.get("metadata", &metadata_path, &token) {
            Ok(response) => http::read_json(response, ANSWER_LIMIT)?,
            Err(Error::NotFound | Error::Misrouted(_)) if refused.is_some() => {
                return Err(guess_failed("the metadata was not found"))
            }
            Err(Error::NotFound) => return Ok(Lookup::Missing),
            Err(e) => return Err(e),
        };
        Ok(lookup_of(&answer.data))
    }

    /// The lifetime of credentials read from `path` (e.g.
    /// `database/creds/app`), never reading the path itself: the mount's
    /// type and config from `sys/internal/ui/mounts/PATH` (cached with the
    /// mount), its effective TTLs from `sys/mounts/MOUNT/tune` when readable,
    /// the role's TTLs from [`lifetime::role_path`] when readable. A refused
    /// or missing role or tune is skipped; the lifetime is unknown when the
    /// mount cannot be looked up, or when a role exists to be read but
    /// neither it nor the tune can be.
    pub fn lifetime(&mut self, path: &str) -> Result<Lifetime, LifetimeError> {
        let token = self.token().map_err(LifetimeError::Failed)?;
        let mount = match self.mount_for(path, &token) {
            Ok(MountFor::Known(mount)) => mount,
            Ok(MountFor::Guessed { refused, .. }) => {
                return Err(LifetimeError::Unknown(format!(
                    "some access under the mount of {path} (e.g. read on its roles/*), as \
                     sys/internal/ui/mounts/{path} was refused ({refused})"
                )))
            }
            Err(e) => return Err(LifetimeError::Failed(e)),
        };
        if STORED.contains(&mount.kind.as_str()) {
            return Err(LifetimeError::NotDynamic);
        }
        let role_path = lifetime::role_path(&mount.kind, &mount.path, path);
        let role = match &role_path {
            Some(role_path) => self.optional("role", role_path, &token)?,
            None => Read::Absent,
        };
        let tune_path = format!("sys/mounts/{}tune", mount.path);
        let tune = self.optional("tune", &tune_path, &token)?;
        let role_data = match &role {
            Read::Data(data) => Some(data),
            _ => None,
        };
        let role_ttls = role_data.and_then(|data| lifetime::role_ttls(&mount.kind, data));
        let renewable = lifetime::renewable(&mount.kind, role_data);
        let (mount_ttls, mount_source) = match (&tune, &role) {
            (Read::Data(data), _) => (lifetime::mount_ttls(data), Source::Tune),
            // The role may well set its own TTLs: the mount's say nothing then.
            (_, Read::Refused) => {
                return Err(LifetimeError::Unknown(format!(
                    "read on {} or {tune_path}",
                    role_path.unwrap_or_default()
                )))
            }
            _ => (mount.ttls, Source::MountConfig),
        };
        let source = match role_ttls {
            Some(_) => Source::Role,
            None => mount_source,
        };
        Ok(lifetime::combine(mount_ttls, role_ttls, renewable, source))
    }

    /// The `data` of the answer at `path`, read for a lifetime; a missing
    /// (404) or refused (401, 403) one is logged at debug level and skipped.
    /// Any other failure fails the lifetime.
    fn optional(
        &mut self,
        what: &'static str,
        path: &str,
        token: &str,
    ) -> Result<Read, LifetimeError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            data: serde_json::Value,
        }
        let skipped = |e: &Error| log::debug!("{what} {path} not used for a lifetime: {e}");
        match self.get(what, path, token) {
            Ok(response) => {
                let answer: Answer =
                    http::read_json(response, ANSWER_LIMIT).map_err(LifetimeError::Failed)?;
                Ok(Read::Data(answer.data))
            }
            Err(e @ (Error::NotFound | Error::Misrouted(_))) => {
                skipped(&e);
                Ok(Read::Absent)
            }
            Err(e @ Error::Denied(_)) => {
                skipped(&e);
                Ok(Read::Refused)
            }
            Err(e) => Err(LifetimeError::Failed(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::http::fake_server::{self, FakeServer, Reply, Request};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(super) const LOOKUP_SELF: &str = r#"{"data":{"ttl":3600,"renewable":true}}"#;
    pub(super) const KV2: &str =
        r#"{"data":{"path":"secret/","type":"kv","options":{"version":"2"}}}"#;
    pub(super) const METADATA: &str = r#"{"data":{"current_version":3,"versions":{"3":{"created_time":"2024-01-01T00:00:00Z"}}}}"#;

    pub(crate) fn client(server: &FakeServer) -> Vault {
        let settings = VaultSettings {
            proxies: Default::default(),
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

    pub(super) fn found(lookup: Lookup) -> u64 {
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
        let lookup = client(&server).current_version("secret/data/x");
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
        let lookup = client(&server).current_version("secret/data/x");
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
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 2);
    }

    #[test]
    fn an_answered_mount_is_asked_once() {
        let server = fake_vault(|_| Reply::json(200, KV2));
        let mut vault = client(&server);
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        assert_eq!(found(vault.current_version("secret/data/b")), 3);
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 1);
    }

    #[test]
    fn a_failed_guess_is_a_failure_not_unwatchable_nor_missing() {
        let server = fake_vault(|_| Reply::json(403, "{}"));
        let mut vault = client(&server);
        // Really a nested mount `team/kv/`: the guess `team/` does not fit.
        let nested = vault.current_version("team/kv/data/x");
        assert!(
            matches!(
                nested,
                Lookup::Failed(Error::MountUnknown { refused: 403, .. })
            ),
            "{nested:?}"
        );
        // Fits the guess `team/`, but no metadata there.
        let absent = vault.current_version("team/data/x");
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
            vault.current_version("old/data/x"),
            Lookup::Unwatchable("a KV v1 secret has no versions")
        ));
        assert!(matches!(
            vault.current_version("secret/nodata/x"),
            Lookup::Unwatchable(_)
        ));
        assert!(matches!(
            vault.current_version("secret/data/gone"),
            Lookup::Missing
        ));
    }

    #[test]
    fn a_mount_lookup_server_error_fails_and_is_not_cached() {
        let server = fake_vault(|_| Reply::json(500, r#"{"errors":["sealed"]}"#));
        let mut vault = client(&server);
        for _ in 0..2 {
            let lookup = vault.current_version("secret/data/x");
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
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
        make_due(&mut vault);
        let failed_at = Instant::now();
        // The renewal fails; the token still works and a retry is planned.
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        let schedule = vault.token.as_ref().unwrap().schedule;
        let retry_at = schedule.refresh_at.expect("a retry is planned");
        assert!(retry_at >= failed_at + RETRY_MIN);
        assert!(retry_at <= schedule.expires_at.unwrap());
        // Not yet due: no request.
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        make_due(&mut vault);
        assert_eq!(found(vault.current_version("secret/data/x")), 3);
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
        match client(&server).current_version("secret/data/x") {
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
            vault.current_version("secret/data/gone"),
            Lookup::Missing
        ));
        let lookup = vault.current_version("secret/data/x");
        assert!(
            matches!(&lookup, Lookup::Failed(Error::Misrouted(cause)) if cause == "namespace not found"),
            "{lookup:?}"
        );
    }

    const DATABASE: &str = r#"{"data":{"path":"database/","type":"database","options":null,
        "config":{"default_lease_ttl":0,"force_no_cache":false,"max_lease_ttl":300}}}"#;
    const PKI: &str = r#"{"data":{"path":"pki/","type":"pki","options":null,
        "config":{"default_lease_ttl":0,"max_lease_ttl":0}}}"#;
    const ROLE: &str = r#"{"data":{"db_name":"none","default_ttl":20,"max_ttl":60}}"#;
    const TUNE: &str = r#"{"default_lease_ttl":40,"max_lease_ttl":120,"data":{"default_lease_ttl":40,"max_lease_ttl":120}}"#;
    const DENIED: &str = r#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#;

    /// A status and a body.
    type Answer = (u16, &'static str);
    type Outcome = Result<Lifetime, LifetimeError>;

    /// A fake Vault with a `database/` mount (or a `pki/` one for `pki/`
    /// paths) whose role `app`/`web` answers `role` and whose tune answers
    /// `tune`; every request for a dynamic path fails the test's check.
    fn dynamic_vault(role: Answer, tune: Answer) -> FakeServer {
        fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/pki/") => Reply::json(200, PKI),
            p if p.starts_with("/v1/sys/internal/ui/mounts/secret/") => Reply::json(200, KV2),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, DATABASE),
            "/v1/database/roles/app" | "/v1/pki/roles/web" => Reply::json(role.0, role.1),
            "/v1/sys/mounts/database/tune" | "/v1/sys/mounts/pki/tune" => {
                Reply::json(tune.0, tune.1)
            }
            _ => Reply::json(404, r#"{"errors":[]}"#),
        })
    }

    fn lifetime_of(server: &FakeServer, path: &str) -> Result<Lifetime, LifetimeError> {
        let lifetime = client(server).lifetime(path);
        let dynamic = ["/creds/", "/issue/", "/sign/"];
        for request in server.requests() {
            let to_path = request.path.strip_prefix("/v1/").unwrap_or_default();
            assert!(
                to_path.starts_with("sys/") || !dynamic.iter().any(|d| to_path.contains(d)),
                "requested {}",
                request.path
            );
        }
        lifetime
    }

    #[test]
    fn a_lifetime_comes_from_role_tune_or_mount_config_by_what_the_policy_allows() {
        let secs = Duration::from_secs;
        let lifetime = |ttl, max, renewable, source| Lifetime {
            ttl: secs(ttl),
            max: secs(max),
            renewable,
            source,
        };
        let unknown = || {
            LifetimeError::Unknown("read on database/roles/app or sys/mounts/database/tune".into())
        };
        let ok = (200, ROLE);
        let denied = (403, DENIED);
        let absent = (404, r#"{"errors":[]}"#);
        let no_ttls = (
            200,
            r#"{"data":{"db_name":"none","default_ttl":0,"max_ttl":0}}"#,
        );
        use Source::*;
        #[rustfmt::skip]
        let cases: &[(&str, &str, Answer, Answer, Outcome)] = &[
            ("role and tune", "database/creds/app", ok, (200, TUNE), Ok(lifetime(20, 60, true, Role))),
            ("role only: the mount config's max", "database/creds/app", ok, denied, Ok(lifetime(20, 60, true, Role))),
            ("tune only", "database/creds/app", denied, (200, TUNE), Ok(lifetime(40, 120, true, Tune))),
            ("a role without TTLs: the tune's", "database/creds/app", no_ttls, (200, TUNE), Ok(lifetime(40, 120, true, Tune))),
            ("no such role, no tune: the mount config", "database/creds/app", absent, denied, Ok(lifetime(300, 300, true, MountConfig))),
            ("not a creds path: tune", "database/static-creds/app", denied, (200, TUNE), Ok(lifetime(40, 120, true, Tune))),
            ("neither role nor tune", "database/creds/app", denied, denied, Err(unknown())),
            ("pki: not renewable", "pki/issue/web", (200, r#"{"data":{"ttl":30,"max_ttl":0}}"#), denied, Ok(lifetime(30, 768 * 3600, false, Role))),
            ("kv v2", "secret/data/x", ok, ok, Err(LifetimeError::NotDynamic)),
            ("tune fails", "database/creds/app", ok, (500, r#"{"errors":["sealed"]}"#),
                Err(LifetimeError::Failed(Error::Status { code: 500, message: "sealed".into() }))),
        ];
        for (name, path, role, tune, want) in cases {
            let server = dynamic_vault(*role, *tune);
            assert_eq!(&lifetime_of(&server, path), want, "{name}");
        }
    }

    #[test]
    fn a_refused_mount_lookup_leaves_the_lifetime_unknown_and_says_why() {
        let server = fake_server::start(|r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(403, DENIED),
            _ => Reply::json(200, ROLE),
        });
        match lifetime_of(&server, "database/creds/app") {
            Err(LifetimeError::Unknown(why)) => assert_eq!(
                why,
                "some access under the mount of database/creds/app (e.g. read on its roles/*), \
                 as sys/internal/ui/mounts/database/creds/app was refused (403)"
            ),
            other => panic!("{other:?}"),
        }
        // Only the token and the mount were asked: nothing is guessed.
        assert_eq!(server.requests().len(), 2);
    }

    #[test]
    fn a_lifetime_asks_the_mount_once_and_the_role_and_tune_each_time() {
        let server = dynamic_vault((200, ROLE), (200, TUNE));
        let mut vault = client(&server);
        for _ in 0..2 {
            let lifetime = vault.lifetime("database/creds/app").unwrap();
            assert_eq!(lifetime.effective(true), Duration::from_secs(60));
        }
        assert_eq!(server.hits("/v1/sys/internal/ui/mounts/"), 1);
        assert_eq!(server.hits("/v1/database/roles/app"), 2);
        assert_eq!(server.hits("/v1/sys/mounts/database/tune"), 2);
    }

    #[test]
    fn an_oversized_role_answer_fails_the_lifetime() {
        let big: &'static str = Box::leak(
            format!(
                r#"{{"data":{{"default_ttl":20,"pad":"{}"}}}}"#,
                "x".repeat(2 << 20)
            )
            .into_boxed_str(),
        );
        let server = dynamic_vault((200, big), (200, TUNE));
        assert_eq!(
            lifetime_of(&server, "database/creds/app"),
            Err(LifetimeError::Failed(Error::TooLarge {
                limit: ANSWER_LIMIT
            }))
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

    /// A fake Vault for a client that logs in: each login gives a new token
    /// `t1`, `t2`, … (`refuse_logins` refuses them); a token is alive until
    /// revoked (revoke-self, or `revoked` set to it). `secret/metadata/denied-*`
    /// is refused to every token, other metadata is found for a live token.
    struct LoginVault {
        server: FakeServer,
        state: std::sync::Arc<std::sync::Mutex<Logins>>,
    }

    #[derive(Default)]
    struct Logins {
        issued: usize,
        revoked: Vec<String>,
        refuse_logins: bool,
    }

    impl LoginVault {
        fn start() -> LoginVault {
            let state = std::sync::Arc::new(std::sync::Mutex::new(Logins::default()));
            let shared = std::sync::Arc::clone(&state);
            let server = fake_server::start(move |r| {
                let mut logins = shared.lock().unwrap();
                let token = r.header("x-vault-token").unwrap_or_default().to_string();
                let alive = !token.is_empty() && !logins.revoked.contains(&token);
                let denied = || Reply::json(403, r#"{"errors":["permission denied"]}"#);
                match r.path.as_str() {
                    "/v1/auth/kubernetes/login" if logins.refuse_logins => denied(),
                    "/v1/auth/kubernetes/login" => {
                        logins.issued += 1;
                        let body = format!(
                            r#"{{"auth":{{"client_token":"t{}","lease_duration":3600}}}}"#,
                            logins.issued
                        );
                        Reply::json(200, &body)
                    }
                    _ if !alive => denied(),
                    "/v1/auth/token/lookup-self" => Reply::json(200, LOOKUP_SELF),
                    "/v1/auth/token/revoke-self" => {
                        logins.revoked.push(token);
                        Reply::json(204, "")
                    }
                    p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
                    p if p.starts_with("/v1/secret/metadata/denied-") => denied(),
                    _ => Reply::json(200, METADATA),
                }
            });
            LoginVault { server, state }
        }

        fn client(&self) -> Vault {
            let jwt = std::env::temp_dir().join(format!("vsr-jwt-{}", std::process::id()));
            std::fs::write(&jwt, "a.service-account.jwt\n").unwrap();
            let mut vault = client(&self.server);
            vault.auth = VaultAuth::Login {
                method: "kubernetes",
                role: "reloader".into(),
                mount: "kubernetes".into(),
            };
            vault.jwt_file = jwt;
            vault
        }

        fn logins(&self) -> usize {
            self.server.hits("/v1/auth/kubernetes/login")
        }

        fn revoked(&self) -> Vec<String> {
            self.state.lock().unwrap().revoked.clone()
        }
    }

    #[test]
    fn a_denied_path_is_its_own_answer_and_costs_no_login() {
        let vault_server = LoginVault::start();
        let mut vault = vault_server.client();
        for pass in 1..=2 {
            vault.begin_pass();
            for i in 0..10 {
                let lookup = vault.current_version(&format!("secret/data/denied-{i}"));
                assert!(matches!(lookup, Lookup::Denied), "pass {pass}: {lookup:?}");
            }
            assert_eq!(found(vault.current_version("secret/data/ok")), 3);
            // Whether the token works is asked once per pass, after the first 403.
            assert_eq!(vault_server.server.hits("/v1/auth/token/lookup-self"), pass);
        }
        assert_eq!(
            vault_server.logins(),
            1,
            "one login for two passes of 10 denied paths"
        );
        assert!(vault_server.revoked().is_empty());
    }

    #[test]
    fn a_token_revoked_early_is_replaced_once_per_pass() {
        let vault_server = LoginVault::start();
        let mut vault = vault_server.client();
        vault.begin_pass();
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        vault_server.state.lock().unwrap().revoked.push("t1".into());
        // Its next lookup is refused, lookup-self too: one login, asked again.
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        assert_eq!(vault_server.logins(), 2);
        for i in 0..5 {
            let lookup = vault.current_version(&format!("secret/data/denied-{i}"));
            assert!(matches!(lookup, Lookup::Denied), "{lookup:?}");
        }
        assert_eq!(vault_server.logins(), 2, "no second login in the same pass");
        assert_eq!(vault_server.server.hits("/v1/auth/token/lookup-self"), 1);
        // The new token is revoked too: within this pass its 403s count as
        // the paths' answers (their versions are kept); the next pass finds
        // it dead and logs in once more.
        vault_server.state.lock().unwrap().revoked.push("t2".into());
        for path in ["secret/data/a", "secret/data/b"] {
            let lookup = vault.current_version(path);
            assert!(matches!(lookup, Lookup::Denied), "{lookup:?}");
        }
        assert_eq!(vault_server.logins(), 2);
        vault.begin_pass();
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        assert_eq!(vault_server.logins(), 3);
    }

    #[test]
    fn a_refused_login_is_tried_once_per_pass_and_then_after_a_wait() {
        let vault_server = LoginVault::start();
        vault_server.state.lock().unwrap().refuse_logins = true;
        let mut vault = vault_server.client();
        vault.begin_pass();
        for i in 0..5 {
            let lookup = vault.current_version(&format!("secret/data/s{i}"));
            match lookup {
                Lookup::Failed(e @ Error::Token(_)) => {
                    assert!(e.is_server_failure());
                    assert_eq!(
                        e.to_string(),
                        "no usable Vault token: permission denied (403)"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(vault_server.logins(), 1);
        // The next pass comes before the wait is over: no login.
        vault.begin_pass();
        assert!(matches!(
            vault.current_version("secret/data/s0"),
            Lookup::Failed(Error::Token(_))
        ));
        assert_eq!(vault_server.logins(), 1);
        // Once it is over, one more try, which now works.
        vault_server.state.lock().unwrap().refuse_logins = false;
        vault.backoff.not_before = Some(Instant::now());
        vault.begin_pass();
        assert_eq!(found(vault.current_version("secret/data/s0")), 3);
        assert_eq!(vault_server.logins(), 2);
        assert!(vault.backoff.failure.is_none() && vault.backoff.wait.is_none());
    }

    #[test]
    fn a_replaced_token_is_revoked_and_the_last_one_at_shutdown() {
        let vault_server = LoginVault::start();
        let mut vault = vault_server.client();
        vault.begin_pass();
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        make_due(&mut vault);
        assert_eq!(found(vault.current_version("secret/data/a")), 3);
        assert_eq!(vault_server.logins(), 2);
        assert_eq!(vault_server.revoked(), ["t1"]);
        vault.revoke();
        assert_eq!(vault_server.revoked(), ["t1", "t2"]);
        let revokes = vault_server.server.requests();
        assert!(revokes
            .iter()
            .filter(|r| r.path == "/v1/auth/token/revoke-self")
            .all(|r| r.method == "POST"));
        // A fixed token is the operator's: never revoked.
        let fixed_server = fake_vault(|_| Reply::json(200, KV2));
        let mut fixed = client(&fixed_server);
        assert_eq!(found(fixed.current_version("secret/data/a")), 3);
        fixed.revoke();
        assert_eq!(fixed_server.hits("/v1/auth/token/revoke-self"), 0);
    }

    #[test]
    fn a_fixed_token_found_dead_fails_the_pass_without_more_requests() {
        let asked = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&asked);
        let denied = || Reply::json(403, r#"{"errors":["permission denied"]}"#);
        // Its first lookup-self works; then the token is dead.
        let server = fake_server::start(move |r| match r.path.as_str() {
            "/v1/auth/token/lookup-self" if seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                Reply::json(200, LOOKUP_SELF)
            }
            p if p.starts_with("/v1/sys/internal/ui/mounts/") => Reply::json(200, KV2),
            _ => denied(),
        });
        let mut vault = client(&server);
        vault.begin_pass();
        for path in ["secret/data/a", "secret/data/b", "secret/data/c"] {
            let lookup = vault.current_version(path);
            assert!(
                matches!(&lookup, Lookup::Failed(Error::Token(cause)) if **cause == Error::Denied(403)),
                "{lookup:?}"
            );
        }
        // lookup-self at start, then once after the first 403; b and c are
        // not asked.
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(server.hits("/v1/secret/metadata/"), 1);
    }

    #[test]
    fn login_backoff() {
        let now = Instant::now();
        let denied = Error::Denied(403);
        let first = Backoff::default().failed(denied.clone(), now);
        assert_eq!(first.wait, Some(RETRY_MIN));
        assert!(!first.allows(now + RETRY_MIN), "not twice in one pass");
        let next_pass = Backoff {
            failed_this_pass: false,
            ..first.clone()
        };
        assert!(!next_pass.allows(now + RETRY_MIN - Duration::from_millis(1)));
        assert!(next_pass.allows(now + RETRY_MIN));
        let second = next_pass.failed(denied.clone(), now);
        assert_eq!(second.wait, Some(RETRY_MIN * 2));
        let mut last = second;
        for _ in 0..20 {
            last = last.failed(denied.clone(), now);
        }
        assert_eq!(last.wait, Some(RETRY_MAX));
        assert_eq!(last.error(), Error::Token(Box::new(denied)));
        assert!(Backoff::default().allows(now));
    }
}
