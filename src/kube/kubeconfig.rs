//! Kubeconfig files, read the way kubectl reads them, and the order in which
//! the Kubernetes API settings are chosen: a `--kube-*` flag (or its
//! environment variable) wins, then the kubeconfig's context, then the
//! in-cluster service account. Everything here is pure except
//! [`Kubeconfig::load`], which reads the file.
//!
//! Of a context, its cluster's `server`, `certificate-authority(-data)` and
//! `insecure-skip-tls-verify` are used, and its user's `token`, `tokenFile`
//! or `client-certificate(-data)`/`client-key(-data)`. Relative paths are
//! relative to the kubeconfig's directory. Credential plugins (`exec`,
//! `auth-provider`) and basic auth are refused with an error naming them.

use crate::io::settings::{KubeCredentials, KubeSettings, Redacted, Source, SERVICE_ACCOUNT_DIR};
use base64::Engine;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// Why the Kubernetes API settings cannot be made. Messages name the
/// context, cluster or user and the field, never a credential's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigError {
    /// The file could not be read (the I/O error's text).
    Read(String),
    /// The file is not YAML (the parser's message, which quotes no value).
    Syntax(String),
    /// No `--context` and no `current-context`.
    NoCurrentContext,
    /// The named context is not in `contexts`.
    NoContext(String),
    /// The context's cluster is not in `clusters`.
    NoCluster { context: String, cluster: String },
    /// The context's user is not in `users`.
    NoUser { context: String, user: String },
    /// A field has the wrong type (`entry` is e.g. `users[edge]`).
    BadField { entry: String, field: &'static str },
    /// A `-data` field is not base64 of PEM text.
    BadData { entry: String, field: &'static str },
    /// A field that needs another (`client-certificate` without `client-key`).
    Missing {
        entry: String,
        field: &'static str,
        needs: &'static str,
    },
    /// The user authenticates in a way this client does not implement.
    Unsupported { user: String, how: &'static str },
    /// No API server: no `--kube-api-url`, no kubeconfig, not in a cluster.
    NotInCluster,
}

impl fmt::Display for KubeconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KubeconfigError::*;
        match self {
            Read(why) => write!(f, "cannot be read: {why}"),
            Syntax(why) => write!(f, "is not YAML: {why}"),
            NoCurrentContext => f.write_str("has no current-context (name one with --context)"),
            NoContext(name) => write!(f, "has no context '{name}'"),
            NoCluster { context, cluster } => {
                write!(
                    f,
                    "context '{context}' names cluster '{cluster}', which is not in clusters"
                )
            }
            NoUser { context, user } => {
                write!(
                    f,
                    "context '{context}' names user '{user}', which is not in users"
                )
            }
            BadField { entry, field } => write!(f, "{entry}.{field} has the wrong type"),
            BadData { entry, field } => write!(f, "{entry}.{field} is not base64 of PEM text"),
            Missing {
                entry,
                field,
                needs,
            } => write!(f, "{entry} has {field} but no {needs}"),
            Unsupported { user, how } => write!(
                f,
                "user '{user}' authenticates with {how}, which is not supported: \
                 use a token, tokenFile or client-certificate/client-key"
            ),
            NotInCluster => f.write_str(
                "not running in a cluster (KUBERNETES_SERVICE_HOST unset): set --kubeconfig \
                 (or KUBECONFIG) or --kube-api-url (or KUBE_API_URL)",
            ),
        }
    }
}

impl std::error::Error for KubeconfigError {}

/// The settings given by flags or their environment variables; each one
/// overrides what a kubeconfig or the in-cluster defaults would give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explicit {
    /// `--kube-api-url` / `KUBE_API_URL`.
    pub api_url: Option<String>,
    /// `--kube-token-file` / `KUBE_TOKEN_FILE`: replaces the kubeconfig user.
    pub token_file: Option<PathBuf>,
    /// `--kube-ca-file` / `KUBE_CA_FILE`: replaces the kubeconfig's CA and
    /// its `insecure-skip-tls-verify`.
    pub ca_file: Option<PathBuf>,
}

impl Explicit {
    /// Whether nothing is left for a kubeconfig to give.
    pub fn is_complete(&self) -> bool {
        self.api_url.is_some() && self.token_file.is_some() && self.ca_file.is_some()
    }
}

/// A parsed kubeconfig and the directory its relative paths start from.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    doc: Yaml,
    dir: PathBuf,
}

/// Where the settings the flags leave open come from.
#[derive(Debug, Clone, Copy)]
pub enum Base<'a> {
    /// A kubeconfig and the context to use (`None`: its current-context).
    Kubeconfig(&'a Kubeconfig, Option<&'a str>),
    /// The in-cluster service account; the API server's URL from
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`, `None` when they are unset.
    InCluster(Option<&'a str>),
}

/// The kubeconfig to use: `--kubeconfig`, else the first file of
/// `KUBECONFIG` (a colon-separated list, as kubectl reads it).
pub fn path(flag: Option<String>, env: Option<String>) -> Option<PathBuf> {
    let first = |list: String| {
        list.split(':')
            .map(str::trim)
            .find(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    flag.filter(|p| !p.trim().is_empty())
        .map(PathBuf::from)
        .or_else(|| env.and_then(first))
}

impl Kubeconfig {
    /// Reads and parses the kubeconfig at `path`.
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| KubeconfigError::Read(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Kubeconfig::parse(&text, dir)
    }

    /// Parses kubeconfig text (YAML or JSON) whose relative paths start at
    /// `dir`. An empty file is an empty kubeconfig.
    pub fn parse(text: &str, dir: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| KubeconfigError::Syntax(e.to_string()))?;
        Ok(Kubeconfig {
            doc: docs.into_iter().next().unwrap_or(Yaml::Null),
            dir: dir.to_path_buf(),
        })
    }

    /// The `cluster` or `user` body of the entry named `name` in `list`.
    fn entry(&self, list: &str, body: &str, name: &str) -> Option<&Yaml> {
        self.doc[list]
            .as_vec()?
            .iter()
            .find(|item| item["name"].as_str() == Some(name))
            .map(|item| &item[body])
    }

    /// A path field, made absolute against the kubeconfig's directory.
    fn path(
        &self,
        node: &Yaml,
        entry: &str,
        field: &'static str,
    ) -> Result<Option<PathBuf>, KubeconfigError> {
        Ok(text(node, entry, field)?.map(|p| self.dir.join(p)))
    }

    /// The PEM of `field` (a path) or `field-data` (base64).
    fn pem(
        &self,
        node: &Yaml,
        entry: &str,
        field: &'static str,
        data_field: &'static str,
    ) -> Result<Option<Source>, KubeconfigError> {
        if let Some(encoded) = text(node, entry, data_field)? {
            let bad = || KubeconfigError::BadData {
                entry: entry.to_string(),
                field: data_field,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad())?;
            let pem = String::from_utf8(bytes).map_err(|_| bad())?;
            return Ok(Some(Source::Inline(Redacted(pem))));
        }
        Ok(self.path(node, entry, field)?.map(Source::File))
    }
}

/// A string field of `node`: `None` when absent, null or empty; scalars of
/// other types are taken as their text, as kubectl does.
fn text(node: &Yaml, entry: &str, field: &'static str) -> Result<Option<String>, KubeconfigError> {
    let value = match &node[field] {
        Yaml::BadValue | Yaml::Null => return Ok(None),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(_) | Yaml::Hash(_) | Yaml::Alias(_) => {
            return Err(KubeconfigError::BadField {
                entry: entry.to_string(),
                field,
            })
        }
    };
    Ok(Some(value).filter(|v| !v.is_empty()))
}

/// What a context names: its cluster and user entries.
struct Context<'a> {
    cluster_entry: String,
    cluster: &'a Yaml,
    user_entry: String,
    user: Option<&'a Yaml>,
}

fn context<'a>(config: &'a Kubeconfig, name: Option<&str>) -> Result<Context<'a>, KubeconfigError> {
    let name = match name {
        Some(name) => name.to_string(),
        None => text(&config.doc, "kubeconfig", "current-context")?
            .ok_or(KubeconfigError::NoCurrentContext)?,
    };
    let body = config
        .entry("contexts", "context", &name)
        .ok_or_else(|| KubeconfigError::NoContext(name.clone()))?;
    let entry = format!("contexts[{name}]");
    let cluster_name = text(body, &entry, "cluster")?.unwrap_or_default();
    let cluster = config
        .entry("clusters", "cluster", &cluster_name)
        .ok_or_else(|| KubeconfigError::NoCluster {
            context: name.clone(),
            cluster: cluster_name.clone(),
        })?;
    // A context without a user is anonymous, as with kubectl.
    let user_name = text(body, &entry, "user")?;
    let user =
        match &user_name {
            Some(user) => Some(config.entry("users", "user", user).ok_or_else(|| {
                KubeconfigError::NoUser {
                    context: name.clone(),
                    user: user.clone(),
                }
            })?),
            None => None,
        };
    Ok(Context {
        cluster_entry: format!("clusters[{cluster_name}]"),
        cluster,
        user_entry: format!("users[{}]", user_name.unwrap_or_default()),
        user,
    })
}

/// A user's credentials. A client certificate comes first (the API server
/// also tries it before a bearer token), then `token`, then `tokenFile`.
fn credentials(
    config: &Kubeconfig,
    entry: &str,
    user: &Yaml,
) -> Result<KubeCredentials, KubeconfigError> {
    let name = entry.trim_start_matches("users[").trim_end_matches(']');
    for (field, how) in [
        ("exec", "an exec credential plugin (exec)"),
        ("auth-provider", "an auth-provider"),
        ("username", "basic auth (username/password)"),
    ] {
        if !matches!(user[field], Yaml::BadValue | Yaml::Null) {
            return Err(KubeconfigError::Unsupported {
                user: name.to_string(),
                how,
            });
        }
    }
    let cert = config.pem(user, entry, "client-certificate", "client-certificate-data")?;
    let key = config.pem(user, entry, "client-key", "client-key-data")?;
    let missing = |field, needs| KubeconfigError::Missing {
        entry: entry.to_string(),
        field,
        needs,
    };
    match (cert, key) {
        (Some(cert), Some(key)) => return Ok(KubeCredentials::ClientCert { cert, key }),
        (Some(_), None) => return Err(missing("client-certificate", "client-key")),
        (None, Some(_)) => return Err(missing("client-key", "client-certificate")),
        (None, None) => {}
    }
    if let Some(token) = text(user, entry, "token")? {
        return Ok(KubeCredentials::Token(Source::Inline(Redacted(token))));
    }
    Ok(match config.path(user, entry, "tokenFile")? {
        Some(path) => KubeCredentials::Token(Source::File(path)),
        None => KubeCredentials::None,
    })
}

/// The Kubernetes API settings: each `explicit` setting wins; the rest come
/// from `base`. The parts of a kubeconfig that the flags replace are not
/// looked at, so an unusable user does not matter with `--kube-token-file`.
/// The URL is not validated here.
pub fn settings(explicit: Explicit, base: Base) -> Result<KubeSettings, KubeconfigError> {
    let sa_file = |name: &str| PathBuf::from(SERVICE_ACCOUNT_DIR).join(name);
    let explicit_ca = explicit.ca_file.map(Source::File);
    let explicit_token = explicit
        .token_file
        .map(|f| KubeCredentials::Token(Source::File(f)));
    match base {
        Base::InCluster(url) => {
            let in_cluster = explicit.api_url.is_none();
            let api_url = explicit
                .api_url
                .or_else(|| url.map(String::from))
                .ok_or(KubeconfigError::NotInCluster)?;
            // Outside a cluster without a CA file, the API server's
            // certificate must chain to a public root.
            let ca = explicit_ca.or_else(|| in_cluster.then(|| Source::File(sa_file("ca.crt"))));
            Ok(KubeSettings {
                proxies: Default::default(),
                api_url,
                ca,
                skip_verify: false,
                credentials: explicit_token
                    .unwrap_or_else(|| KubeCredentials::Token(Source::File(sa_file("token")))),
            })
        }
        Base::Kubeconfig(config, name) => {
            let context = context(config, name)?;
            let entry = &context.cluster_entry;
            let api_url = match explicit.api_url {
                Some(url) => url,
                None => {
                    text(context.cluster, entry, "server")?.ok_or(KubeconfigError::Missing {
                        entry: entry.clone(),
                        field: "cluster",
                        needs: "server",
                    })?
                }
            };
            let (ca, skip_verify) = match explicit_ca {
                Some(ca) => (Some(ca), false),
                None => (
                    config.pem(
                        context.cluster,
                        entry,
                        "certificate-authority",
                        "certificate-authority-data",
                    )?,
                    skip_verify(context.cluster, entry)?,
                ),
            };
            let credentials = match (explicit_token, context.user) {
                (Some(token), _) => token,
                (None, Some(user)) => credentials(config, &context.user_entry, user)?,
                (None, None) => KubeCredentials::None,
            };
            Ok(KubeSettings {
                proxies: Default::default(),
                api_url,
                ca,
                skip_verify,
                credentials,
            })
        }
    }
}

fn skip_verify(cluster: &Yaml, entry: &str) -> Result<bool, KubeconfigError> {
    match &cluster["insecure-skip-tls-verify"] {
        Yaml::BadValue | Yaml::Null => Ok(false),
        Yaml::Boolean(b) => Ok(*b),
        _ => Err(KubeconfigError::BadField {
            entry: entry.to_string(),
            field: "insecure-skip-tls-verify",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// A kubeconfig with two clusters, several users and a context per user;
    /// `current-context` is `cert-files`.
    fn sample() -> String {
        format!(
            r#"apiVersion: v1
kind: Config
current-context: cert-files
clusters:
- name: edge
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: pki/ca.crt
- name: edge-data
  cluster:
    server: https://edge.example:6443
    certificate-authority-data: {ca}
- name: lab
  cluster:
    server: https://lab:6443
    insecure-skip-tls-verify: true
- name: no-server
  cluster:
    certificate-authority: /abs/ca.crt
- name: bad-skip
  cluster:
    server: https://x
    insecure-skip-tls-verify: [yes]
contexts:
- {{name: cert-files, context: {{cluster: edge, user: cert-files}}}}
- {{name: cert-data, context: {{cluster: edge-data, user: cert-data}}}}
- {{name: token, context: {{cluster: lab, user: token}}}}
- {{name: token-file, context: {{cluster: edge, user: token-file}}}}
- {{name: anonymous, context: {{cluster: edge}}}}
- {{name: exec, context: {{cluster: edge, user: exec}}}}
- {{name: auth-provider, context: {{cluster: edge, user: auth-provider}}}}
- {{name: basic, context: {{cluster: edge, user: basic}}}}
- {{name: half-cert, context: {{cluster: edge, user: half-cert}}}}
- {{name: bad-data, context: {{cluster: edge, user: bad-data}}}}
- {{name: lost-cluster, context: {{cluster: gone, user: token}}}}
- {{name: lost-user, context: {{cluster: edge, user: gone}}}}
- {{name: no-server, context: {{cluster: no-server, user: token}}}}
- {{name: bad-skip, context: {{cluster: bad-skip, user: token}}}}
users:
- name: cert-files
  user:
    client-certificate: certs/edge.crt
    client-key: /etc/edge.key
- name: cert-data
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
- name: token
  user:
    token: sekret-token
    tokenFile: ignored
- name: token-file
  user:
    tokenFile: sa/token
- name: exec
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
- name: auth-provider
  user:
    auth-provider: {{name: oidc}}
- name: basic
  user: {{username: admin, password: sekret}}
- name: half-cert
  user:
    client-certificate: edge.crt
- name: bad-data
  user:
    client-certificate-data: "not base64!"
    client-key-data: {key}
"#,
            ca = b64(CA_PEM),
            cert = b64("CERT PEM"),
            key = b64("KEY PEM"),
        )
    }

    fn config() -> Kubeconfig {
        Kubeconfig::parse(&sample(), Path::new("/home/me/.kube")).unwrap()
    }

    fn resolve(explicit: Explicit, context: Option<&str>) -> Result<KubeSettings, KubeconfigError> {
        settings(explicit, Base::Kubeconfig(&config(), context))
    }

    fn file(path: &str) -> Option<Source> {
        Some(Source::File(PathBuf::from(path)))
    }

    fn inline(text: &str) -> Source {
        Source::Inline(Redacted(text.into()))
    }

    #[test]
    fn a_context_gives_server_ca_and_user() {
        use KubeCredentials::{ClientCert, Token};
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            Option<Source>,
            bool,
            KubeCredentials,
        );
        let cases: Vec<Case> = vec![
            (
                None,
                "https://10.0.0.1:6443",
                file("/home/me/.kube/pki/ca.crt"),
                false,
                ClientCert {
                    cert: Source::File("/home/me/.kube/certs/edge.crt".into()),
                    key: Source::File("/etc/edge.key".into()),
                },
            ),
            (
                Some("cert-data"),
                "https://edge.example:6443",
                Some(inline(CA_PEM)),
                false,
                ClientCert {
                    cert: inline("CERT PEM"),
                    key: inline("KEY PEM"),
                },
            ),
            (
                Some("token"),
                "https://lab:6443",
                None,
                true,
                Token(inline("sekret-token")),
            ),
            (
                Some("token-file"),
                "https://10.0.0.1:6443",
                file("/home/me/.kube/pki/ca.crt"),
                false,
                Token(Source::File("/home/me/.kube/sa/token".into())),
            ),
            (
                Some("anonymous"),
                "https://10.0.0.1:6443",
                file("/home/me/.kube/pki/ca.crt"),
                false,
                KubeCredentials::None,
            ),
        ];
        for (context, url, ca, skip_verify, credentials) in cases {
            let got = resolve(Explicit::default(), context).unwrap();
            let expected = KubeSettings {
                proxies: Default::default(),
                api_url: url.into(),
                ca,
                skip_verify,
                credentials,
            };
            assert_eq!(got, expected, "context {context:?}");
        }
    }

    #[test]
    fn unusable_contexts_say_why() {
        let cases = [
            ("nowhere", "has no context 'nowhere'"),
            ("lost-cluster", "context 'lost-cluster' names cluster 'gone', which is not in clusters"),
            ("lost-user", "context 'lost-user' names user 'gone', which is not in users"),
            ("no-server", "clusters[no-server] has cluster but no server"),
            ("bad-skip", "clusters[bad-skip].insecure-skip-tls-verify has the wrong type"),
            ("half-cert", "users[half-cert] has client-certificate but no client-key"),
            ("bad-data", "users[bad-data].client-certificate-data is not base64 of PEM text"),
            (
                "exec",
                "user 'exec' authenticates with an exec credential plugin (exec), which is not supported",
            ),
            ("auth-provider", "user 'auth-provider' authenticates with an auth-provider, which is not supported"),
            ("basic", "user 'basic' authenticates with basic auth (username/password), which is not"),
        ];
        for (context, expected) in cases {
            let error = resolve(Explicit::default(), Some(context))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{context}: {error}");
            assert!(!error.contains("sekret"), "{context}: {error}");
        }
        let no_current = Kubeconfig::parse("clusters: []", Path::new("/")).unwrap();
        let error = settings(Explicit::default(), Base::Kubeconfig(&no_current, None)).unwrap_err();
        assert_eq!(error, KubeconfigError::NoCurrentContext);
        assert!(matches!(
            Kubeconfig::parse("clusters: [", Path::new("/")),
            Err(KubeconfigError::Syntax(_))
        ));
    }

    #[test]
    fn flags_override_the_kubeconfig() {
        let all = Explicit {
            api_url: Some("https://flag:443".into()),
            token_file: Some("/run/token".into()),
            ca_file: Some("/run/ca.crt".into()),
        };
        let expected = KubeSettings {
            proxies: Default::default(),
            api_url: "https://flag:443".into(),
            ca: file("/run/ca.crt"),
            skip_verify: false,
            credentials: KubeCredentials::Token(Source::File("/run/token".into())),
        };
        assert_eq!(
            resolve(all.clone(), Some("token")).unwrap(),
            expected,
            "a CA flag turns verification on"
        );
        assert_eq!(
            resolve(all.clone(), Some("exec")).unwrap(),
            expected,
            "the user is not needed"
        );
        let url_only = Explicit {
            api_url: Some("https://flag:443".into()),
            ..Explicit::default()
        };
        let got = resolve(url_only, Some("cert-data")).unwrap();
        assert_eq!(got.api_url, "https://flag:443");
        assert_eq!(got.ca, Some(inline(CA_PEM)));
        assert!(matches!(
            got.credentials,
            KubeCredentials::ClientCert { .. }
        ));
        let token_only = Explicit {
            token_file: Some("/run/token".into()),
            ..Explicit::default()
        };
        let got = resolve(token_only, Some("token")).unwrap();
        assert_eq!(got.api_url, "https://lab:6443");
        assert!(got.skip_verify);
        assert_eq!(
            got.credentials,
            KubeCredentials::Token(Source::File("/run/token".into()))
        );
        assert!(all.is_complete() && !Explicit::default().is_complete());
    }

    #[test]
    fn without_a_kubeconfig_the_service_account_is_used() {
        let sa = |name: &str| PathBuf::from(SERVICE_ACCOUNT_DIR).join(name);
        let got = settings(
            Explicit::default(),
            Base::InCluster(Some("https://10.96.0.1:443")),
        )
        .unwrap();
        assert_eq!(
            got,
            KubeSettings {
                proxies: Default::default(),
                api_url: "https://10.96.0.1:443".into(),
                ca: Some(Source::File(sa("ca.crt"))),
                skip_verify: false,
                credentials: KubeCredentials::Token(Source::File(sa("token"))),
            }
        );
        let outside = Explicit {
            api_url: Some("https://127.0.0.1:6443".into()),
            ..Explicit::default()
        };
        let got = settings(outside, Base::InCluster(None)).unwrap();
        assert_eq!(got.ca, None, "outside a cluster: public roots");
        assert_eq!(
            got.credentials,
            KubeCredentials::Token(Source::File(sa("token")))
        );
        assert_eq!(
            settings(Explicit::default(), Base::InCluster(None)),
            Err(KubeconfigError::NotInCluster)
        );
    }

    #[test]
    fn the_flag_wins_over_kubeconfig_and_its_first_file_is_used() {
        let some = |s: &str| Some(s.to_string());
        let cases = [
            (some("/a"), some("/b:/c"), Some("/a")),
            (None, some("/b:/c"), Some("/b")),
            (None, some(":/c:"), Some("/c")),
            (None, some(""), None),
            (some(""), None, None),
            (None, None, None),
        ];
        for (flag, env, expected) in cases {
            assert_eq!(
                path(flag.clone(), env.clone()),
                expected.map(PathBuf::from),
                "{flag:?} {env:?}"
            );
        }
    }

    #[test]
    fn a_file_is_read_relative_to_its_directory() {
        let dir = std::env::temp_dir().join(format!("vsr-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(&path, sample()).unwrap();
        let config = Kubeconfig::load(&path).unwrap();
        let got = settings(Explicit::default(), Base::Kubeconfig(&config, None)).unwrap();
        assert_eq!(got.ca, Some(Source::File(dir.join("pki/ca.crt"))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            Kubeconfig::load(&path),
            Err(KubeconfigError::Read(_))
        ));
    }
}
