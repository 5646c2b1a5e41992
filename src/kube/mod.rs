//! The Kubernetes REST client: paginated lists and short watches of the
//! workload kinds, get and merge-patch of one workload, and reading one
//! Secret key. Authenticates with a bearer token (a token file is re-read
//! as it rotates) or a TLS client certificate.

pub mod kubeconfig;
pub mod lease;
pub mod watch;

use crate::error::Error;
use crate::io::http;
use crate::io::settings::{KubeCredentials, KubeSettings, Source};
use crate::io::stream::{Stream, Target};
use crate::kube::watch::Watch;
use crate::policy::workload::{self, Kind, Workload};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a read service-account token is used before reading it again
/// (kubelet rotates projected tokens well before they expire).
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// Time limit of each API request, and of opening a watch stream.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a list page, one object, a Lease (16 MiB).
pub const ANSWER_LIMIT: u64 = 16 * 1024 * 1024;
/// The largest single event of a watch (one line of the stream, 16 MiB).
/// A watch as a whole is read as it arrives, never held.
pub const WATCH_EVENT_LIMIT: u64 = 16 * 1024 * 1024;

/// `request` with the `Authorization` header, when there is one.
fn authorize<B>(request: ureq::RequestBuilder<B>, value: Option<&str>) -> ureq::RequestBuilder<B> {
    match value {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}

/// The writing HTTP methods.
#[derive(Clone, Copy)]
enum Write {
    Post,
    Put,
    Patch,
}

/// A client of one API server.
pub struct Kube {
    agent: ureq::Agent,
    base: String,
    /// Where watch streams connect (the same server, TLS and credentials).
    target: Target,
    timeout: Duration,
    auth: Auth,
    requests: crate::policy::metrics::Counts,
}

/// What a request carries in its `Authorization` header.
enum Auth {
    /// The token in `path`, read again after [`TOKEN_REFRESH`] and after a
    /// 401 (`token`: the last read and when).
    TokenFile {
        path: PathBuf,
        token: Option<(String, Instant)>,
    },
    /// A fixed header value (`Bearer …`, from a kubeconfig's `token`).
    Fixed(String),
    /// Nothing: the TLS client certificate, if any, says who we are.
    None,
}

/// The bytes of `source`; errors name the file (or the kubeconfig field)
/// and `field`, never the content.
fn read_source(source: &Source, field: &str) -> Result<Vec<u8>, Error> {
    match source {
        Source::File(path) => std::fs::read(path).map_err(|e| Error::File {
            path: format!("{} ({field})", path.display()),
            reason: e.to_string(),
        }),
        Source::Inline(text) => Ok(text.0.as_bytes().to_vec()),
    }
}

/// Where `source` comes from, for messages.
fn describe(source: &Source, field: &str) -> String {
    match source {
        Source::File(path) => format!("{} ({field})", path.display()),
        Source::Inline(_) => format!("kubeconfig {field}-data"),
    }
}

/// The TLS client certificate of a certificate and a key source.
fn client_cert(cert: &Source, key: &Source) -> Result<ureq::tls::ClientCert, Error> {
    let chain = read_source(cert, "client-certificate")?;
    let key_pem = read_source(key, "client-key")?;
    http::client_cert(&chain, &key_pem).map_err(|reason| {
        let (source, field) = if reason.contains("key") {
            (key, "client-key")
        } else {
            (cert, "client-certificate")
        };
        Error::File {
            path: describe(source, field),
            reason: reason.to_string(),
        }
    })
}

/// A coordination.k8s.io/v1 Lease, with the fields leader election uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Always `coordination.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `Lease`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, resourceVersion.
    pub metadata: LeaseMeta,
    /// Who holds it and until when.
    #[serde(default)]
    pub spec: LeaseSpec,
}

/// The Lease metadata used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseMeta {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// Empty for a Lease not yet created.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

/// The Lease spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// The holder's identity; empty when released.
    #[serde(default)]
    pub holder_identity: Option<String>,
    /// How long a holder is trusted after renewing.
    #[serde(default)]
    pub lease_duration_seconds: Option<u32>,
    /// When the holder took it (RFC 3339 with microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How often it changed hands.
    #[serde(default)]
    pub lease_transitions: Option<u32>,
}

/// One page of a list: of workloads by default.
#[derive(Debug, Deserialize)]
pub struct Page<T = crate::policy::workload::Listed> {
    /// The items, reduced to the fields used; one that does not decode as
    /// a workload is named, not a failure of the page.
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    /// List metadata.
    #[serde(default)]
    pub metadata: ListMeta,
}

/// A collection the collector follows: a workload kind, or ConfigMaps or
/// Secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Workloads of one kind.
    Workloads(Kind),
    /// core/v1 ConfigMaps or Secrets.
    Sources(workload::Source),
}

impl Resource {
    /// The resource name in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Workloads(kind) => kind.plural(),
            Resource::Sources(workload::Source::ConfigMap) => "configmaps",
            Resource::Sources(workload::Source::Secret) => "secrets",
        }
    }

    /// Its collection's path in `namespace`, or in all.
    fn collection(self, namespace: Option<&str>) -> String {
        let group = match self {
            Resource::Workloads(kind) => format!("/apis/{}", kind.api_version()),
            Resource::Sources(_) => "/api/v1".to_string(),
        };
        match namespace {
            Some(ns) => format!("{group}/namespaces/{ns}/{}", self.plural()),
            None => format!("{group}/{}", self.plural()),
        }
    }
}

impl From<Kind> for Resource {
    fn from(kind: Kind) -> Resource {
        Resource::Workloads(kind)
    }
}

/// The list metadata used.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListMeta {
    /// The list's resourceVersion, to watch from.
    pub resource_version: String,
    /// The token for the next page; empty on the last.
    #[serde(rename = "continue")]
    pub continue_token: String,
}

impl Kube {
    /// A client for `settings` whose requests take at most
    /// [`REQUEST_TIMEOUT`]; reads the CA file now, the token when needed.
    pub fn new(settings: &KubeSettings) -> Result<Kube, Error> {
        Kube::with_timeout(settings, REQUEST_TIMEOUT)
    }

    /// [`Kube::new`] with another time limit per request. Reads the CA and
    /// the client certificate now, a token file when it is needed.
    pub fn with_timeout(settings: &KubeSettings, timeout: Duration) -> Result<Kube, Error> {
        let ca_pem = match &settings.ca {
            Some(ca) => Some(read_source(ca, "certificate-authority")?),
            None => None,
        };
        let (client_cert, auth) = match &settings.credentials {
            KubeCredentials::Token(Source::File(path)) => (
                None,
                Auth::TokenFile {
                    path: path.clone(),
                    token: None,
                },
            ),
            KubeCredentials::Token(Source::Inline(token)) => {
                (None, Auth::Fixed(format!("Bearer {}", token.0.trim())))
            }
            KubeCredentials::ClientCert { cert, key } => {
                (Some(client_cert(cert, key)?), Auth::None)
            }
            KubeCredentials::None => (None, Auth::None),
        };
        let tls = http::Tls {
            ca_pem,
            skip_verify: settings.skip_verify,
            client_cert,
        };
        let stream_tls = match settings.api_url.starts_with("https://") {
            true => Some(http::rustls_config(&tls)?),
            false => None,
        };
        let proxy = settings.proxies.for_url(&settings.api_url);
        Ok(Kube {
            agent: http::agent(timeout, &tls, proxy)?,
            base: settings.api_url.clone(),
            target: Target::through(&settings.api_url, stream_tls, proxy.cloned())?,
            timeout,
            auth,
            requests: crate::policy::metrics::Counts::new(),
        })
    }

    /// The `Authorization` header value, if any; a token file is read when
    /// the last read is older than [`TOKEN_REFRESH`].
    fn authorization(&mut self) -> Result<Option<String>, Error> {
        let (path, token) = match &mut self.auth {
            Auth::TokenFile { path, token } => (path, token),
            Auth::Fixed(header) => return Ok(Some(header.clone())),
            Auth::None => return Ok(None),
        };
        if let Some((value, read)) = token {
            if read.elapsed() < TOKEN_REFRESH {
                return Ok(Some(format!("Bearer {value}")));
            }
        }
        let text = std::fs::read_to_string(&*path).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let value = text.trim().to_string();
        let header = format!("Bearer {value}");
        *token = Some((value, Instant::now()));
        Ok(Some(header))
    }

    /// Forgets a token read from a file, so the next request reads it
    /// again; whether there was one (a retry may then succeed).
    fn forget_token(&mut self) -> bool {
        match &mut self.auth {
            Auth::TokenFile { token, .. } => token.take().is_some(),
            Auth::Fixed(_) | Auth::None => false,
        }
    }

    /// Sends one request: a GET without `body`, else the given write. A 401
    /// makes it read the token file again and retry once, since the token
    /// may just have rotated.
    fn send(
        &mut self,
        verb: &'static str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(Write, &str, &[u8])>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let mut retried = false;
        loop {
            let url = format!("{}{path}", self.base);
            let authorization = self.authorization()?;
            let result = match body {
                None => authorize(self.agent.get(&url), authorization.as_deref())
                    .query_pairs(query.iter().copied())
                    .header("Accept", "application/json")
                    .call(),
                Some((method, content_type, bytes)) => {
                    let request = match method {
                        Write::Post => self.agent.post(&url),
                        Write::Put => self.agent.put(&url),
                        Write::Patch => self.agent.patch(&url),
                    };
                    authorize(request, authorization.as_deref())
                        .query_pairs(query.iter().copied())
                        .header("Accept", "application/json")
                        .header("Content-Type", content_type)
                        .send(bytes)
                }
            };
            let result = http::check(result);
            http::count(&mut self.requests, verb, &result);
            match result {
                Err(Error::Denied(401)) if !retried && self.forget_token() => retried = true,
                other => return other,
            }
        }
    }

    fn collection(kind: Kind, namespace: Option<&str>) -> String {
        Resource::Workloads(kind).collection(namespace)
    }

    /// Whether the API server serves `kind` (discovery of its group version).
    pub fn serves(&mut self, kind: Kind) -> Result<bool, Error> {
        #[derive(Deserialize)]
        struct Resources {
            #[serde(default)]
            resources: Vec<Resource>,
        }
        #[derive(Deserialize)]
        struct Resource {
            name: String,
        }
        match self.send("get", &format!("/apis/{}", kind.api_version()), &[], None) {
            Ok(response) => {
                let list: Resources = http::read_json(response, ANSWER_LIMIT)?;
                Ok(list.resources.iter().any(|r| r.name == kind.plural()))
            }
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of at most `limit` objects of `resource` (in `namespace`,
    /// or all), continuing after `continue_token` when given.
    pub fn list<T: serde::de::DeserializeOwned>(
        &mut self,
        resource: impl Into<Resource>,
        namespace: Option<&str>,
        limit: u32,
        continue_token: Option<&str>,
        max_bytes: u64,
    ) -> Result<Page<T>, Error> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(token) = continue_token {
            query.push(("continue", token));
        }
        let path = resource.into().collection(namespace);
        let response = self.send("list", &path, &query, None)?;
        http::read_json(response, max_bytes)
    }

    /// Opens a watch of `resource` (in `namespace`, or all) from
    /// `resource_version`, with bookmarks, that the server ends after
    /// `timeout_seconds`. Opening is bounded by [`REQUEST_TIMEOUT`]; the
    /// events are then read as they arrive ([`Watch::events`]), each at most
    /// [`WATCH_EVENT_LIMIT`] bytes. The answer's status comes with the first
    /// read: [`Error::Gone`] when the version is too old.
    pub fn open_watch(
        &mut self,
        resource: impl Into<Resource>,
        namespace: Option<&str>,
        resource_version: &str,
        timeout_seconds: u32,
    ) -> Result<Watch, Error> {
        let path = format!(
            "{}?watch=1&allowWatchBookmarks=true&timeoutSeconds={timeout_seconds}\
             &resourceVersion={}",
            resource.into().collection(namespace),
            http::encode_query(resource_version)
        );
        let authorization = self.authorization()?;
        let mut headers = vec![("Accept", "application/json")];
        if let Some(value) = authorization.as_deref() {
            headers.push(("Authorization", value));
        }
        let opened = Stream::open(
            &self.target,
            &path,
            &headers,
            self.timeout,
            WATCH_EVENT_LIMIT,
        );
        http::count(&mut self.requests, "watch", &opened);
        opened.map(Watch::new)
    }

    /// Records how a watch opened earlier answered (its status comes after
    /// the open); a 401 makes the next request read the token file again.
    pub fn watch_failed(&mut self, error: &Error) {
        http::count::<()>(&mut self.requests, "watch", &Err(error.clone()));
        if *error == Error::Denied(401) {
            self.forget_token();
        }
    }

    fn object(kind: Kind, namespace: &str, name: &str) -> String {
        format!("{}/{name}", Self::collection(kind, Some(namespace)))
    }

    /// One workload as it is now.
    pub fn get(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<Workload, Error> {
        let response = self.send("get", &Self::object(kind, namespace, name), &[], None)?;
        http::read_json(response, ANSWER_LIMIT)
    }

    /// One ConfigMap or Secret as it is now, decoded as `T`;
    /// [`Error::NotFound`] when there is none.
    pub fn get_source<T: serde::de::DeserializeOwned>(
        &mut self,
        source: workload::Source,
        namespace: &str,
        name: &str,
    ) -> Result<T, Error> {
        let collection = Resource::Sources(source).collection(Some(namespace));
        let response = self.send("get", &format!("{collection}/{name}"), &[], None)?;
        http::read_json(response, ANSWER_LIMIT)
    }

    /// Applies a JSON merge patch to one workload and returns it as stored.
    /// A `metadata.resourceVersion` in the patch makes it conditional:
    /// [`Error::Conflict`] when the workload changed since.
    pub fn merge_patch(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Workload, Error> {
        let body = patch.to_string();
        let response = self.send(
            "patch",
            &Self::object(kind, namespace, name),
            &[],
            Some((
                Write::Patch,
                "application/merge-patch+json",
                body.as_bytes(),
            )),
        )?;
        http::read_json(response, ANSWER_LIMIT)
    }

    /// The requests sent since the last call, by verb and status.
    pub fn take_requests(&mut self) -> crate::policy::metrics::Counts {
        std::mem::take(&mut self.requests)
    }

    /// Records a core/v1 Event about a workload (`kind` is `Normal` or
    /// `Warning`), so `kubectl describe` shows it.
    pub fn create_event(
        &mut self,
        workload: &crate::policy::workload::WorkloadId,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let now = crate::policy::time::rfc3339(std::time::SystemTime::now(), 0);
        let event = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": format!("{}.", workload.name),
                "namespace": workload.namespace,
            },
            "involvedObject": {
                "apiVersion": workload.kind.api_version(),
                "kind": workload.kind.name(),
                "namespace": workload.namespace,
                "name": workload.name,
                "uid": uid,
            },
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "vault-secrets-reloader"},
            "reportingComponent": "vault-secrets-reloader",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let path = format!("/api/v1/namespaces/{}/events", workload.namespace);
        let body = event.to_string();
        let response = self.send(
            "create",
            &path,
            &[],
            Some((Write::Post, "application/json", body.as_bytes())),
        )?;
        // Read to its end, so the kept-alive connection carries the next request.
        http::discard(response, ANSWER_LIMIT)
    }

    /// The Lease `namespace/name`, or `None` when it does not exist.
    pub fn get_lease(&mut self, namespace: &str, name: &str) -> Result<Option<Lease>, Error> {
        match self.send("get", &Self::lease_path(namespace, Some(name)), &[], None) {
            Ok(response) => http::read_json(response, ANSWER_LIMIT).map(Some),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the Lease (`Error::Conflict` when another holder was quicker),
    /// or replaces it when `lease.metadata.resource_version` is set
    /// (`Error::Conflict` when it changed since it was read).
    pub fn write_lease(&mut self, lease: &Lease) -> Result<Lease, Error> {
        let body = serde_json::to_string(lease).map_err(|e| Error::Decode(e.to_string()))?;
        let namespace = &lease.metadata.namespace;
        let (verb, path, method) = if lease.metadata.resource_version.is_empty() {
            ("create", Self::lease_path(namespace, None), Write::Post)
        } else {
            let path = Self::lease_path(namespace, Some(&lease.metadata.name));
            ("update", path, Write::Put)
        };
        let response = self.send(
            verb,
            &path,
            &[],
            Some((method, "application/json", body.as_bytes())),
        )?;
        http::read_json(response, ANSWER_LIMIT)
    }

    fn lease_path(namespace: &str, name: Option<&str>) -> String {
        let base = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        match name {
            Some(name) => format!("{base}/{name}"),
            None => base,
        }
    }

    /// The decoded value of `key` in Secret `namespace/name`.
    pub fn secret_value(
        &mut self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>, Error> {
        #[derive(Deserialize)]
        struct Secret {
            #[serde(default)]
            data: std::collections::BTreeMap<String, String>,
        }
        use base64::Engine;
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        let secret: Secret = http::read_json(self.send("get", &path, &[], None)?, ANSWER_LIMIT)?;
        let encoded = secret.data.get(key).ok_or(Error::NotFound)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| Error::Decode(format!("Secret {namespace}/{name} key {key}: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::http::fake_server::{self, FakeServer, Reply};

    /// A token file removed when dropped.
    pub(crate) struct TokenFile(PathBuf);

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A client of `server` and the token file it reads.
    pub(crate) fn client(server: &FakeServer) -> (Kube, TokenFile) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("vsr-kube-test-token-{}-{n}", std::process::id()));
        std::fs::write(&path, "test-token\n").unwrap();
        let settings = KubeSettings {
            proxies: Default::default(),
            api_url: server.url.clone(),
            ca: None,
            skip_verify: false,
            credentials: KubeCredentials::Token(Source::File(path.clone())),
        };
        (Kube::new(&settings).unwrap(), TokenFile(path))
    }

    /// A client of `server` with `credentials` and no CA.
    fn client_with(server: &FakeServer, credentials: KubeCredentials) -> Result<Kube, Error> {
        Kube::new(&KubeSettings {
            proxies: Default::default(),
            api_url: server.url.clone(),
            ca: None,
            skip_verify: false,
            credentials,
        })
    }

    fn inline(text: &str) -> Source {
        Source::Inline(crate::io::settings::Redacted(text.into()))
    }

    #[test]
    fn events_are_created_on_one_kept_alive_connection() {
        let created = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"app.1"}}"#;
        let server = fake_server::start(move |_| Reply::json(201, created));
        let (mut kube, _token) = client(&server);
        let app = crate::policy::workload::WorkloadId {
            kind: Kind::Deployment,
            namespace: "ns".into(),
            name: "app".into(),
        };
        for _ in 0..3 {
            kube.create_event(&app, "u", true, "SecretNotFound", "not found")
                .unwrap();
        }
        assert_eq!(server.hits("/api/v1/namespaces/ns/events"), 3);
        assert_eq!(
            server.connections(),
            1,
            "the answer is read, the connection reused"
        );
    }

    #[test]
    fn each_kind_of_credentials_sends_its_header() {
        use fake_server::{CLIENT_CERT, CLIENT_KEY};
        let server = fake_server::start(|_| Reply::json(401, "{}"));
        let cases = [
            (
                KubeCredentials::Token(inline("inline-token\n")),
                Some("Bearer inline-token"),
            ),
            (
                KubeCredentials::ClientCert {
                    cert: inline(CLIENT_CERT),
                    key: inline(CLIENT_KEY),
                },
                None,
            ),
            (KubeCredentials::None, None),
        ];
        for (credentials, expected) in cases {
            let before = server.requests().len();
            let mut kube = client_with(&server, credentials).unwrap();
            let result = kube.get(Kind::Deployment, "ns", "web");
            assert!(matches!(result, Err(Error::Denied(401))), "{result:?}");
            let sent = &server.requests()[before..];
            assert_eq!(
                sent.len(),
                1,
                "a fixed credential is not retried after a 401"
            );
            assert_eq!(sent[0].header("authorization"), expected);
        }
    }

    #[test]
    fn unusable_client_certificates_name_their_source_not_their_content() {
        use fake_server::CLIENT_CERT;
        let server = fake_server::start(|_| Reply::json(200, "{}"));
        let missing = PathBuf::from("/nonexistent/edge.crt");
        let cases = [
            (
                Source::File(missing),
                inline("x"),
                "/nonexistent/edge.crt (client-certificate): ",
            ),
            (
                inline(CLIENT_CERT),
                inline("secret garbage"),
                "kubeconfig client-key-data: the client key holds no PEM private key",
            ),
            (
                inline("secret garbage"),
                inline(CLIENT_CERT),
                "kubeconfig client-certificate-data: the client certificate holds no PEM",
            ),
        ];
        for (cert, key, expected) in cases {
            let error = client_with(&server, KubeCredentials::ClientCert { cert, key })
                .err()
                .expect(expected)
                .to_string();
            assert!(error.starts_with(expected), "{error}");
            assert!(!error.contains("garbage"), "{error}");
        }
    }

    #[test]
    fn a_redirect_is_not_followed_with_the_token() {
        let elsewhere = fake_server::start(|_| Reply::json(200, r#"{"items":[]}"#));
        let target = format!("{}/apis/apps/v1/deployments", elsewhere.url);
        let server = fake_server::start(move |_| Reply {
            status: 307,
            headers: vec![("Location".into(), target.clone())],
            body: Vec::new(),
        });
        let (mut kube, _token) = client(&server);
        let result: Result<Page, _> = kube.list(Kind::Deployment, None, 10, None, ANSWER_LIMIT);
        assert!(
            matches!(result, Err(Error::Redirect { code: 307, .. })),
            "{result:?}"
        );
        assert_eq!(elsewhere.connections(), 0);
        let sent = server.requests();
        assert_eq!(sent[0].header("authorization"), Some("Bearer test-token"));
    }

    #[test]
    fn a_list_page_over_the_limit_is_too_large() {
        let page = format!(
            r#"{{"metadata":{{"resourceVersion":"1"}},"items":[],"pad":"{}"}}"#,
            "x".repeat(ANSWER_LIMIT as usize + 1)
        );
        let server = fake_server::start(move |_| Reply::json(200, &page));
        let (mut kube, _token) = client(&server);
        let result: Result<Page, _> = kube.list(Kind::Deployment, None, 10, None, ANSWER_LIMIT);
        assert!(
            matches!(
                result,
                Err(Error::TooLarge {
                    limit: ANSWER_LIMIT
                })
            ),
            "{result:?}"
        );
    }
}
