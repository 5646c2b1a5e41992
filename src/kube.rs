//! The Kubernetes REST client: paginated lists and short watches of the
//! workload kinds, get and merge-patch of one workload, and reading one
//! Secret key. Authenticates with a bearer token (a token file is re-read
//! as it rotates) or a TLS client certificate.

use crate::config::{KubeCredentials, KubeSettings, Source};
use crate::error::Error;
use crate::http;
use crate::workload::{Kind, Metadata, Spec, Workload};
use serde::Deserialize;
use std::cell::Cell;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a read service-account token is used before reading it again
/// (kubelet rotates projected tokens well before they expire).
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// Time limit of each API request (a watch ends by itself after 1 s). The
/// loop answers health checks between requests and the liveness probe
/// allows 15 s, so one request must end well within that.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a list page, one object, a Lease (16 MiB).
pub const ANSWER_LIMIT: u64 = 16 * 1024 * 1024;
/// The largest single event of a watch (one line of the stream, 16 MiB).
/// The watch as a whole is bounded by time ([`WATCH_CAP`]), not size.
pub const WATCH_EVENT_LIMIT: u64 = 16 * 1024 * 1024;
/// How long the loop reads a watch before it goes back to its other duties
/// (health checks are answered between two requests, well within a second
/// even while clients crowd the health port); the server would end it at
/// 1 s anyway, and what was not read comes with the next watch.
const WATCH_CAP: Duration = Duration::from_millis(250);

/// A watch body reader. It ends the stream, instead of failing, when the
/// body's time budget runs out (and sets `cut`); it fails with ureq's
/// `BodyExceedsLimit` when one line (one event) passes `limit` bytes.
struct WatchBody<'a, R> {
    inner: R,
    cut: &'a Cell<bool>,
    limit: u64,
    /// Bytes since the last newline.
    line: u64,
}

impl<R: Read> Read for WatchBody<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Err(e) if is_timeout(&e) => {
                self.cut.set(true);
                return Ok(0);
            }
            other => other?,
        };
        for (i, part) in buf[..n].split(|b| *b == b'\n').enumerate() {
            let len = part.len() as u64;
            self.line = if i == 0 {
                self.line.saturating_add(len)
            } else {
                len
            };
            if self.line > self.limit {
                return Err(ureq::Error::BodyExceedsLimit(self.limit).into_io());
            }
        }
        Ok(n)
    }
}

/// `request` with the `Authorization` header, when there is one.
fn authorize<B>(request: ureq::RequestBuilder<B>, value: Option<&str>) -> ureq::RequestBuilder<B> {
    match value {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::Timeout(_)))
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
    auth: Auth,
    requests: http::Counts,
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

/// One page of a list.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Page {
    /// The items, reduced to the fields used.
    pub items: Vec<Workload>,
    /// List metadata.
    pub metadata: ListMeta,
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

/// One event of a watch.
#[derive(Debug)]
pub enum Event {
    /// A workload was created or changed.
    Applied(Workload),
    /// A workload was deleted.
    Deleted(Workload),
    /// Nothing changed up to this resourceVersion.
    Bookmark(String),
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: RawObject,
}

/// A watch event's object: a workload, or a `Status` (with `code`) on ERROR
/// events. Plain fields, so only the small structs are decoded and the rest
/// of the object (managedFields, status, …) is skipped, not buffered.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawObject {
    metadata: Metadata,
    spec: Spec,
    code: Option<u16>,
}

/// The event a decoded watch line stands for; an ERROR event is an error
/// ([`Error::Gone`] for 410).
fn event(raw: RawEvent) -> Result<Event, Error> {
    let RawObject {
        metadata,
        spec,
        code,
    } = raw.object;
    match raw.kind.as_str() {
        "ADDED" | "MODIFIED" => Ok(Event::Applied(Workload { metadata, spec })),
        "DELETED" => Ok(Event::Deleted(Workload { metadata, spec })),
        "BOOKMARK" => Ok(Event::Bookmark(metadata.resource_version)),
        _ => Err(match code {
            Some(410) => Error::Gone,
            code => Error::Status {
                code: code.unwrap_or(500),
                message: "watch ended with an error event".into(),
            },
        }),
    }
}

/// The whole events of a watch body, until it ends or its time budget cuts
/// it (the events before a cut are whole; the next watch resumes after the
/// last of them). An event longer than `limit` bytes is [`Error::TooLarge`]
/// and none of the body is used.
fn read_events<R: Read>(body: R, limit: u64) -> Result<Vec<Event>, Error> {
    let cut = Cell::new(false);
    let reader = WatchBody {
        inner: body,
        cut: &cut,
        limit,
        line: 0,
    };
    let mut events = Vec::new();
    let stream = serde_json::Deserializer::from_reader(BufReader::new(reader));
    for raw in stream.into_iter::<RawEvent>() {
        match raw {
            Ok(raw) => events.push(event(raw)?),
            Err(_) if cut.get() => break,
            Err(e) => return Err(http::json_error(e, limit)),
        }
    }
    Ok(events)
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
        Ok(Kube {
            agent: http::agent(timeout, &tls)?,
            base: settings.api_url.clone(),
            auth,
            requests: http::Counts::new(),
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
        self.send_capped(verb, path, query, body, None)
    }

    /// [`Kube::send`], with the response body cut off after `body_cap`.
    fn send_capped(
        &mut self,
        verb: &'static str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(Write, &str, &[u8])>,
        body_cap: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let mut retried = false;
        loop {
            let url = format!("{}{path}", self.base);
            let authorization = self.authorization()?;
            let result = match body {
                None => authorize(
                    self.agent
                        .get(&url)
                        .config()
                        .timeout_recv_body(body_cap)
                        .build(),
                    authorization.as_deref(),
                )
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
        let group = kind.api_version();
        match namespace {
            Some(ns) => format!("/apis/{group}/namespaces/{ns}/{}", kind.plural()),
            None => format!("/apis/{group}/{}", kind.plural()),
        }
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

    /// One page of at most `limit` workloads of `kind` (in `namespace`, or
    /// all), continuing after `continue_token` when given.
    pub fn list(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        limit: u32,
        continue_token: Option<&str>,
        max_bytes: u64,
    ) -> Result<Page, Error> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(token) = continue_token {
            query.push(("continue", token));
        }
        let response = self.send("list", &Self::collection(kind, namespace), &query, None)?;
        http::read_json(response, max_bytes)
    }

    /// The changes to `kind` since `resource_version`, from a watch that the
    /// server ends after one second and that is read for at most
    /// 0.25 s; changes not read yet come with the next watch.
    /// [`Error::Gone`] means the version is too old and a full list is needed;
    /// [`Error::TooLarge`], that one event passed [`WATCH_EVENT_LIMIT`].
    pub fn watch(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<Vec<Event>, Error> {
        let query = [
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", "1"),
            ("allowWatchBookmarks", "true"),
        ];
        let collection = Self::collection(kind, namespace);
        let response = self.send_capped("watch", &collection, &query, None, Some(WATCH_CAP))?;
        read_events(response.into_body().into_reader(), WATCH_EVENT_LIMIT)
    }

    fn object(kind: Kind, namespace: &str, name: &str) -> String {
        format!("{}/{name}", Self::collection(kind, Some(namespace)))
    }

    /// One workload as it is now.
    pub fn get(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<Workload, Error> {
        let response = self.send("get", &Self::object(kind, namespace, name), &[], None)?;
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
    pub fn take_requests(&mut self) -> http::Counts {
        std::mem::take(&mut self.requests)
    }

    /// Records a core/v1 Event about a workload (`kind` is `Normal` or
    /// `Warning`), so `kubectl describe` shows it.
    pub fn create_event(
        &mut self,
        workload: &crate::workload::WorkloadId,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let now = crate::time::rfc3339(std::time::SystemTime::now(), 0);
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
        self.send(
            "create",
            &path,
            &[],
            Some((Write::Post, "application/json", body.as_bytes())),
        )?;
        Ok(())
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
mod tests {
    use super::*;
    use crate::http::fake_server::{self, FakeServer, Reply};

    /// A token file removed when dropped.
    struct TokenFile(PathBuf);

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A client of `server` and the token file it reads.
    fn client(server: &FakeServer) -> (Kube, TokenFile) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("vsr-kube-test-token-{}-{n}", std::process::id()));
        std::fs::write(&path, "test-token\n").unwrap();
        let settings = KubeSettings {
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
            api_url: server.url.clone(),
            ca: None,
            skip_verify: false,
            credentials,
        })
    }

    fn inline(text: &str) -> Source {
        Source::Inline(crate::config::Redacted(text.into()))
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

    const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"web","namespace":"shop","resourceVersion":"42","uid":"u-1",
            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}],
            "annotations":{"secrets-reloader.security.bank-vaults.io/observed-versions":"{}","other":"x"}},
        "spec":{"replicas":2,"template":{"metadata":{"annotations":{"a":"b"}},
            "spec":{"containers":[{"name":"c","image":"i","env":[{"name":"P","value":"vault:secret/data/p#k"}]}]}}},
        "status":{"replicas":2,"conditions":[{"type":"Available"}]}}"#;

    fn decode(line: &str) -> Result<Event, Error> {
        event(serde_json::from_str(line).unwrap())
    }

    #[test]
    fn a_watch_event_decodes_into_the_listed_workload() {
        let listed: Workload = serde_json::from_str(DEPLOYMENT).unwrap();
        for (kind, deleted) in [("ADDED", false), ("MODIFIED", false), ("DELETED", true)] {
            let line = format!(r#"{{"type":"{kind}","object":{DEPLOYMENT}}}"#);
            match decode(&line) {
                Ok(Event::Applied(w)) if !deleted => {
                    assert_eq!(format!("{w:?}"), format!("{listed:?}"))
                }
                Ok(Event::Deleted(w)) if deleted => {
                    assert_eq!(format!("{w:?}"), format!("{listed:?}"))
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
        let bookmark = r#"{"type":"BOOKMARK","object":{"kind":"Deployment","metadata":{"resourceVersion":"77"}}}"#;
        assert!(matches!(decode(bookmark), Ok(Event::Bookmark(v)) if v == "77"));
    }

    #[test]
    fn an_error_event_is_an_error() {
        let gone = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
            "status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;
        assert!(matches!(decode(gone), Err(Error::Gone)));
        let other = r#"{"type":"ERROR","object":{"kind":"Status","code":500}}"#;
        assert!(matches!(
            decode(other),
            Err(Error::Status { code: 500, .. })
        ));
    }

    fn line(kind: &str, object: &str) -> String {
        format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n")
    }

    #[test]
    fn a_watch_event_past_the_limit_is_too_large() {
        let small = line("ADDED", DEPLOYMENT);
        let big = line(
            "MODIFIED",
            &format!(r#"{{"metadata":{{"name":"{}"}}}}"#, "n".repeat(3000)),
        );
        let limit = 2000;
        assert!(small.len() < limit);
        let body = format!("{small}{small}");
        assert_eq!(read_events(body.as_bytes(), limit as u64).unwrap().len(), 2);
        let body = format!("{small}{big}{small}");
        assert!(matches!(
            read_events(body.as_bytes(), limit as u64),
            Err(Error::TooLarge { limit: 2000 })
        ));
    }

    /// Gives its bytes, then times out.
    struct ThenTimeout(std::io::Cursor<Vec<u8>>);

    impl Read for ThenTimeout {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::ErrorKind::TimedOut.into()),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_watch_cut_by_its_time_budget_keeps_the_whole_events() {
        let whole = line("ADDED", DEPLOYMENT);
        let body = format!("{whole}{}", &whole[..whole.len() / 2]);
        let events = read_events(
            ThenTimeout(std::io::Cursor::new(body.into_bytes())),
            1 << 20,
        );
        assert_eq!(events.unwrap().len(), 1);
    }

    #[test]
    fn a_request_ends_within_the_liveness_probe_period() {
        // The probe allows 15 s; a health answer waits for at most one request.
        assert!(REQUEST_TIMEOUT < Duration::from_secs(15));
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
        let result = kube.list(Kind::Deployment, None, 10, None, ANSWER_LIMIT);
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
        let result = kube.list(Kind::Deployment, None, 10, None, ANSWER_LIMIT);
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
