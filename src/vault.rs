//! The Vault (or OpenBao) client: login and token lifetime, KV mount lookup,
//! and the current version of a secret from its metadata. It never reads a
//! secret's data.

use crate::config::{Redacted, VaultAuth, VaultSettings};
use crate::error::Error;
use crate::http;
use crate::state::Version;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The largest Vault answer read (login, token, mount, metadata): 1 MiB.
pub const ANSWER_LIMIT: u64 = 1024 * 1024;

/// What Vault says about one secret path.
#[derive(Debug)]
pub enum Lookup {
    /// The current version.
    Found(Version),
    /// The path does not exist (404, or metadata without versions).
    Missing,
    /// The path can never have versions; the text says why.
    Unwatchable(&'static str),
    /// Vault could not be asked; try again next pass.
    Failed(Error),
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
    /// When to renew (fixed token) or log in again (login methods).
    refresh_at: Option<Instant>,
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
}

/// When to refresh a token valid for `ttl` seconds: at two thirds of it.
fn refresh_time(ttl: u64) -> Option<Instant> {
    (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl * 2 / 3))
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

    fn get(
        &mut self,
        what: &'static str,
        path: &str,
        token: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
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
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
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
    fn token(&mut self) -> Result<String, Error> {
        let due = match &self.token {
            None => true,
            Some(token) => token.refresh_at.is_some_and(|at| Instant::now() >= at),
        };
        if due {
            self.token = Some(self.fresh_token()?);
        }
        Ok(self
            .token
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default())
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
                    refresh_at: refresh_time(answer.auth.lease_duration),
                })
            }
            VaultAuth::Token(Redacted(fixed)) => {
                let refresh_at = match self.token.as_ref().map(|t| t.refresh_at) {
                    // Due for renewal: extend it; if that fails, keep using it.
                    Some(current) => {
                        let empty = serde_json::json!({});
                        match self.post("renew", "auth/token/renew-self", Some(&fixed), &empty) {
                            Ok(response) => {
                                let answer: AuthAnswer = http::read_json(response, ANSWER_LIMIT)?;
                                log::debug!(
                                    "renewed the Vault token for {}s",
                                    answer.auth.lease_duration
                                );
                                refresh_time(answer.auth.lease_duration)
                            }
                            Err(e) => {
                                log::warn!("renewing the Vault token failed: {e}");
                                current
                            }
                        }
                    }
                    None => {
                        let response = self.get("lookup-self", "auth/token/lookup-self", &fixed)?;
                        let answer: LookupSelfAnswer = http::read_json(response, ANSWER_LIMIT)?;
                        answer
                            .data
                            .renewable
                            .then(|| refresh_time(answer.data.ttl))
                            .flatten()
                    }
                };
                Ok(Token {
                    value: fixed,
                    refresh_at: refresh_at.filter(|at| *at > Instant::now()),
                })
            }
        }
    }

    /// The mount holding `path`: from the cache, else asked once with
    /// `sys/internal/ui/mounts/PATH` (which Vault answers for any token with
    /// some access under the mount). If that is refused, the first segment
    /// is taken as a KV v2 mount.
    fn mount_for(&mut self, path: &str, token: &str) -> Result<Mount, Error> {
        if let Some(mount) = self.mounts.iter().find(|m| path.starts_with(&m.path)) {
            return Ok(mount.clone());
        }
        let mount = match self.get("mount", &format!("sys/internal/ui/mounts/{path}"), token) {
            Ok(response) => {
                let answer: MountAnswer = http::read_json(response, ANSWER_LIMIT)?;
                let mut mount_path = answer.data.path;
                if !mount_path.ends_with('/') {
                    mount_path.push('/');
                }
                Mount {
                    path: mount_path,
                    kind: answer.data.kind,
                    kv_version: answer
                        .data
                        .options
                        .and_then(|o| o.get("version").cloned())
                        .unwrap_or_else(|| "1".into()),
                }
            }
            Err(Error::Denied(_) | Error::NotFound | Error::Status { code: 405, .. }) => {
                let first = path.split('/').next().unwrap_or_default();
                log::debug!("mount lookup for {path} refused; assuming KV v2 at {first}/");
                Mount {
                    path: format!("{first}/"),
                    kind: "kv".into(),
                    kv_version: "2".into(),
                }
            }
            Err(other) => return Err(other),
        };
        // Longest first, so a nested mount wins over its parent.
        self.mounts.push(mount.clone());
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
        Ok(mount)
    }

    /// The current version of the KV v2 secret at `path` (as the webhook
    /// reads it, `MOUNT/data/REST`), from `MOUNT/metadata/REST`.
    pub fn current_version(&mut self, path: &str) -> Lookup {
        match self.try_current_version(path) {
            Ok(lookup) => lookup,
            Err(Error::Denied(_)) if matches!(self.auth, VaultAuth::Login { .. }) => {
                // The token may have been revoked or expired early: log in again once.
                self.token = None;
                self.try_current_version(path)
                    .unwrap_or_else(Lookup::Failed)
            }
            Err(e) => Lookup::Failed(e),
        }
    }

    fn try_current_version(&mut self, path: &str) -> Result<Lookup, Error> {
        let token = self.token()?;
        let mount = self.mount_for(path, &token)?;
        if mount.kind != "kv" && mount.kind != "generic" {
            return Ok(Lookup::Unwatchable("it is not in a KV secrets engine"));
        }
        if mount.kv_version != "2" {
            return Ok(Lookup::Unwatchable("a KV v1 secret has no versions"));
        }
        let Some(rest) = path
            .strip_prefix(mount.path.as_str())
            .and_then(|rest| rest.strip_prefix("data/"))
        else {
            return Ok(Lookup::Unwatchable(
                "it is not a KV v2 data path (MOUNT/data/...)",
            ));
        };
        let metadata_path = format!("{}metadata/{rest}", mount.path);
        let answer: MetadataAnswer = match self.get("metadata", &metadata_path, &token) {
            Ok(response) => http::read_json(response, ANSWER_LIMIT)?,
            Err(Error::NotFound) => return Ok(Lookup::Missing),
            Err(e) => return Err(e),
        };
        let number = answer.data.current_version;
        if number == 0 {
            return Ok(Lookup::Missing);
        }
        let created = answer
            .data
            .versions
            .get(&number.to_string())
            .map(|v| v.created_time.clone())
            .unwrap_or_default();
        Ok(Lookup::Found(Version { number, created }))
    }
}
