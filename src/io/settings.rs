//! What each client needs to reach its server and prove who it is: the
//! settings `config` validates and the Kubernetes and Vault clients use.

use crate::io::proxy::Proxies;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the in-cluster service account's files are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Kubernetes API access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Base URL, e.g. `https://10.0.0.1:443`.
    pub api_url: String,
    /// PEM of the API server's CA; `None` trusts public roots.
    pub ca: Option<Source>,
    /// Accept any server certificate (a kubeconfig's
    /// `insecure-skip-tls-verify`).
    pub skip_verify: bool,
    /// Who the daemon is to the API server.
    pub credentials: KubeCredentials,
    /// The proxies of the environment ([`crate::io::proxy`]).
    pub proxies: Proxies,
}

/// Where a PEM or a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, read when the client is made; a token file is re-read as it
    /// rotates.
    File(PathBuf),
    /// The text itself (a kubeconfig's `token` or decoded `-data` field).
    Inline(Redacted),
}

/// How the daemon authenticates to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeCredentials {
    /// A bearer token.
    Token(Source),
    /// A TLS client certificate (PEM chain) and its private key (PEM).
    ClientCert {
        /// The certificate chain.
        cert: Source,
        /// The private key.
        key: Source,
    },
    /// None (a kubeconfig context without a user).
    None,
}

impl KubeCredentials {
    /// The token file, when the credentials are one.
    pub fn token_file(&self) -> Option<&Path> {
        match self {
            KubeCredentials::Token(Source::File(path)) => Some(path),
            _ => None,
        }
    }
}

/// One Vault (or OpenBao) server and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// Base URL, e.g. `https://vault:8200`.
    pub addr: String,
    /// How a token is obtained.
    pub auth: VaultAuth,
    /// Sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// PEM file of the server's CA.
    pub ca_file: Option<PathBuf>,
    /// A Kubernetes Secret `(namespace, name)` whose `ca.crt` is the server's
    /// CA; a `None` namespace means the daemon's own.
    pub ca_secret: Option<(Option<String>, String)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
    /// Time limit of each request.
    pub timeout: Duration,
    /// Log a missing secret path as a warning instead of an error.
    pub ignore_missing: bool,
    /// The proxies of the environment ([`crate::io::proxy`]).
    pub proxies: Proxies,
}

/// How the daemon obtains its Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A fixed token.
    Token(Redacted),
    /// Log in with the service-account token at `auth/MOUNT/login`.
    Login {
        /// `kubernetes` or `jwt`, for messages.
        method: &'static str,
        /// The Vault role.
        role: String,
        /// The auth mount path, e.g. `kubernetes`.
        mount: String,
    },
}

/// A secret string whose `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
