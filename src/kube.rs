//! The Kubernetes REST client: paginated lists and short watches of the
//! workload kinds, get and merge-patch of one workload, and reading one
//! Secret key. Bearer-token auth; the token file is re-read as it rotates.

use crate::config::KubeSettings;
use crate::error::Error;
use crate::http;
use crate::workload::{Kind, Workload};
use serde::Deserialize;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a read service-account token is used before reading it again
/// (kubelet rotates projected tokens well before they expire).
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// Time limit of each API request; a watch ends by itself after 1 s.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long the loop reads a watch before it goes back to its other duties
/// (health checks must be answered within a second); the server would end
/// it at 1 s anyway, and what was not read comes with the next watch.
const WATCH_CAP: Duration = Duration::from_millis(800);

/// A body reader that ends the stream, instead of failing, when the body's
/// time budget runs out.
struct Capped<R> {
    inner: R,
    cut: bool,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if is_timeout(&e) => {
                self.cut = true;
                Ok(0)
            }
            other => other,
        }
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
    token_file: PathBuf,
    token: Option<(String, Instant)>,
    requests: http::Counts,
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

/// A watch event's object: a workload, or a `Status` on ERROR events.
#[derive(Deserialize)]
struct RawObject {
    #[serde(flatten)]
    workload: Workload,
    #[serde(default)]
    code: Option<u16>,
}

impl Kube {
    /// A client for `settings`; reads the CA file now, the token when needed.
    pub fn new(settings: &KubeSettings) -> Result<Kube, Error> {
        let ca_pem = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| Error::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let tls = http::Tls {
            ca_pem,
            skip_verify: false,
        };
        Ok(Kube {
            agent: http::agent(TIMEOUT, &tls)?,
            base: settings.api_url.clone(),
            token_file: settings.token_file.clone(),
            token: None,
            requests: http::Counts::new(),
        })
    }

    fn bearer(&mut self) -> Result<String, Error> {
        match &self.token {
            Some((token, read)) if read.elapsed() < TOKEN_REFRESH => Ok(format!("Bearer {token}")),
            _ => {
                let text = std::fs::read_to_string(&self.token_file).map_err(|e| Error::File {
                    path: self.token_file.display().to_string(),
                    reason: e.to_string(),
                })?;
                let token = text.trim().to_string();
                let header = format!("Bearer {token}");
                self.token = Some((token, Instant::now()));
                Ok(header)
            }
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
            let bearer = self.bearer()?;
            let result = match body {
                None => self
                    .agent
                    .get(&url)
                    .config()
                    .timeout_recv_body(body_cap)
                    .build()
                    .query_pairs(query.iter().copied())
                    .header("Authorization", &bearer)
                    .header("Accept", "application/json")
                    .call(),
                Some((method, content_type, bytes)) => {
                    let request = match method {
                        Write::Post => self.agent.post(&url),
                        Write::Put => self.agent.put(&url),
                        Write::Patch => self.agent.patch(&url),
                    };
                    request
                        .query_pairs(query.iter().copied())
                        .header("Authorization", &bearer)
                        .header("Accept", "application/json")
                        .header("Content-Type", content_type)
                        .send(bytes)
                }
            };
            let result = http::check(result);
            http::count(&mut self.requests, verb, &result);
            match result {
                Err(Error::Denied(401)) if !retried => {
                    self.token = None;
                    retried = true;
                }
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
                let list: Resources = http::read_json(response)?;
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
    ) -> Result<Page, Error> {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(token) = continue_token {
            query.push(("continue", token));
        }
        let response = self.send("list", &Self::collection(kind, namespace), &query, None)?;
        http::read_json(response)
    }

    /// The changes to `kind` since `resource_version`, from a watch that the
    /// server ends after one second and that is read for at most
    /// 0.8 s; changes not read yet come with the next watch.
    /// [`Error::Gone`] means the version is too old and a full list is needed.
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
        let mut reader = Capped {
            inner: response.into_body().into_reader(),
            cut: false,
        };
        let mut events = Vec::new();
        let stream = serde_json::Deserializer::from_reader(BufReader::new(&mut reader));
        for raw in stream.into_iter::<RawEvent>() {
            let raw = match raw {
                Ok(raw) => raw,
                // Cut off mid-event: the events before it are whole, and the
                // next watch resumes after the last of them.
                Err(_) if reader.cut => break,
                Err(e) => return Err(Error::Decode(e.to_string())),
            };
            match raw.kind.as_str() {
                "ADDED" | "MODIFIED" => events.push(Event::Applied(raw.object.workload)),
                "DELETED" => events.push(Event::Deleted(raw.object.workload)),
                "BOOKMARK" => events.push(Event::Bookmark(
                    raw.object.workload.metadata.resource_version,
                )),
                _ => {
                    return Err(match raw.object.code {
                        Some(410) => Error::Gone,
                        code => Error::Status {
                            code: code.unwrap_or(500),
                            message: "watch ended with an error event".into(),
                        },
                    })
                }
            }
        }
        Ok(events)
    }

    fn object(kind: Kind, namespace: &str, name: &str) -> String {
        format!("{}/{name}", Self::collection(kind, Some(namespace)))
    }

    /// One workload as it is now.
    pub fn get(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<Workload, Error> {
        let response = self.send("get", &Self::object(kind, namespace, name), &[], None)?;
        http::read_json(response)
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
        http::read_json(response)
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
            Ok(response) => http::read_json(response).map(Some),
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
        http::read_json(response)
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
        let secret: Secret = http::read_json(self.send("get", &path, &[], None)?)?;
        let encoded = secret.data.get(key).ok_or(Error::NotFound)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| Error::Decode(format!("Secret {namespace}/{name} key {key}: {e}")))
    }
}
