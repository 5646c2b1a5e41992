//! A long-lived watch of one kind: a [`Stream`] of one JSON event per line,
//! decoded into the small structs the collector uses.

use crate::error::Error;
use crate::io::stream::{Flow, Stream};
use crate::policy::progress::Status;
use crate::policy::sources::{ConfigMap, Secret};
use crate::policy::workload::{Metadata, Spec, Unreadable, Workload};
use serde::Deserialize;

/// How many bytes one read of a watch takes at most, so that a burst of
/// events is applied over several turns of the loop, not in one long one.
const READ_BUDGET: usize = 1024 * 1024;

/// What a watch's events carry: the object as decoded, which also holds
/// the `Status` code of an ERROR event.
pub trait Watched: Sized {
    /// The event's object as decoded: plain fields, so only the small
    /// structs are decoded and the rest is skipped, not buffered.
    type Raw: serde::de::DeserializeOwned + Default;
    /// The object, and the code of an ERROR event's `Status`.
    fn from_raw(raw: Self::Raw) -> (Self, Option<u16>);
    /// Its resourceVersion.
    fn resource_version(&self) -> &str;
}

impl Watched for Workload {
    type Raw = RawObject;
    fn from_raw(raw: RawObject) -> (Workload, Option<u16>) {
        let RawObject {
            metadata,
            spec,
            status,
            code,
        } = raw;
        let status = status.of_workload();
        (
            Workload {
                metadata,
                spec,
                status,
            },
            code,
        )
    }
    fn resource_version(&self) -> &str {
        &self.metadata.resource_version
    }
}

impl Watched for ConfigMap {
    type Raw = ConfigMap;
    fn from_raw(raw: ConfigMap) -> (ConfigMap, Option<u16>) {
        let code = raw.code;
        (raw, code)
    }
    fn resource_version(&self) -> &str {
        &self.metadata.resource_version
    }
}

impl Watched for Secret {
    type Raw = Secret;
    fn from_raw(raw: Secret) -> (Secret, Option<u16>) {
        let code = raw.code;
        (raw, code)
    }
    fn resource_version(&self) -> &str {
        &self.metadata.resource_version
    }
}

/// One event of a watch (of workloads unless said).
#[derive(Debug)]
pub enum Event<T = Workload> {
    /// An object was created or changed.
    Applied(T),
    /// An object was deleted.
    Deleted(T),
    /// Nothing changed up to this resourceVersion.
    Bookmark(String),
    /// A workload was created, changed or deleted, but does not decode as
    /// one (a custom resource with a loose schema): what names it.
    Unreadable(Unreadable),
}

#[derive(Deserialize)]
struct RawEvent<R> {
    #[serde(rename = "type")]
    kind: String,
    object: R,
}

/// A watch event's object: a workload, or a `Status` (with `code`) on ERROR
/// events. Plain fields, so only the small structs are decoded and the rest
/// of the object (managedFields, …) is skipped, not buffered; of the
/// status, only the rollout's progress.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct RawObject {
    metadata: Metadata,
    spec: Spec,
    status: RawStatus,
    code: Option<u16>,
}

/// A workload's status, or an ERROR event's (a word such as `Failure`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawStatus {
    Workload(Status),
    Other(serde::de::IgnoredAny),
}

impl Default for RawStatus {
    fn default() -> RawStatus {
        RawStatus::Workload(Status::default())
    }
}

impl RawStatus {
    fn of_workload(self) -> Status {
        match self {
            RawStatus::Workload(status) => status,
            RawStatus::Other(_) => Status::default(),
        }
    }
}

/// A watch event only as far as it names its object.
#[derive(Deserialize)]
struct Named {
    #[serde(rename = "type")]
    kind: String,
    object: NamedObject,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NamedObject {
    metadata: Unreadable,
}

/// The event one line of a watch stands for; an ERROR event is an error
/// ([`Error::Gone`] for 410). A workload event whose object does not decode
/// is [`Event::Unreadable`]; only a line that is no event at all is an error
/// (where it failed, never what it held).
pub fn decode<T: Watched>(line: &[u8]) -> Result<Event<T>, Error> {
    let raw: RawEvent<T::Raw> = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(e) => {
            let at = format!(
                "an event that does not decode (line {}, column {})",
                e.line(),
                e.column()
            );
            return match serde_json::from_slice::<Named>(line) {
                Ok(named) if matches!(named.kind.as_str(), "ADDED" | "MODIFIED" | "DELETED") => {
                    Ok(Event::Unreadable(named.object.metadata))
                }
                _ => Err(Error::Decode(at)),
            };
        }
    };
    let (object, code) = T::from_raw(raw.object);
    match raw.kind.as_str() {
        "ADDED" | "MODIFIED" => Ok(Event::Applied(object)),
        "DELETED" => Ok(Event::Deleted(object)),
        "BOOKMARK" => Ok(Event::Bookmark(object.resource_version().to_string())),
        _ => Err(match code {
            Some(410) => Error::Gone,
            code => Error::Status {
                code: code.unwrap_or(500),
                message: "watch ended with an error event".into(),
            },
        }),
    }
}

/// An open watch.
pub struct Watch {
    stream: Stream,
    lines: Vec<Vec<u8>>,
}

impl Watch {
    /// The watch reading `stream`.
    pub fn new(stream: Stream) -> Watch {
        Watch {
            stream,
            lines: Vec::new(),
        }
    }

    /// Appends the events that have arrived to `events`, without waiting.
    /// On an error (an ERROR event, an undecodable line, a failed stream)
    /// the events before it are in `events` and stand; the watch is over.
    pub fn events<T: Watched>(&mut self, events: &mut Vec<Event<T>>) -> Result<Flow, Error> {
        let flow = self.stream.read(&mut self.lines, READ_BUDGET);
        for line in self.lines.drain(..) {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            events.push(decode(&line)?);
        }
        flow
    }

    /// The socket, for the loop to wait on.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.stream.fd()
    }

    /// How long ago the watch was opened.
    pub fn age(&self) -> std::time::Duration {
        self.stream.age()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"web","namespace":"shop","resourceVersion":"42","uid":"u-1",
            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}],
            "annotations":{"secrets-reloader.security.bank-vaults.io/observed-versions":"{}","other":"x"}},
        "spec":{"replicas":2,"template":{"metadata":{"annotations":{"a":"b"}},
            "spec":{"containers":[{"name":"c","image":"i","env":[{"name":"P","value":"vault:secret/data/p#k"}]}]}}},
        "status":{"replicas":2,"conditions":[{"type":"Available"}]}}"#;

    fn decode_str(line: &str) -> Result<Event, Error> {
        decode(line.as_bytes())
    }

    #[test]
    fn a_watch_event_decodes_into_the_listed_workload() {
        let listed: Workload = serde_json::from_str(DEPLOYMENT).unwrap();
        for (kind, deleted) in [("ADDED", false), ("MODIFIED", false), ("DELETED", true)] {
            let line = format!(r#"{{"type":"{kind}","object":{DEPLOYMENT}}}"#);
            match decode_str(&line) {
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
        assert!(matches!(decode_str(bookmark), Ok(Event::Bookmark(v)) if v == "77"));
    }

    #[test]
    fn an_error_event_is_an_error() {
        let gone = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
            "status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;
        assert!(matches!(decode_str(gone), Err(Error::Gone)));
        let other = r#"{"type":"ERROR","object":{"kind":"Status","code":500}}"#;
        assert!(matches!(
            decode_str(other),
            Err(Error::Status { code: 500, .. })
        ));
    }

    #[test]
    fn a_bookmark_as_the_api_server_sends_it_decodes() {
        // Captured from kube-apiserver v1.37: an empty object, nulls and all.
        let bookmark = r#"{"type":"BOOKMARK","object":{"kind":"Deployment","apiVersion":"apps/v1",
            "metadata":{"resourceVersion":"12746","creationTimestamp":null,
                "annotations":{"k8s.io/initial-events-end":"true"}},
            "spec":{"selector":null,"template":{"metadata":{"creationTimestamp":null},
                "spec":{"containers":null}},"strategy":{}},"status":{}}}"#;
        let event = decode_str(&bookmark.replace('\n', ""));
        assert!(
            matches!(&event, Ok(Event::Bookmark(v)) if v == "12746"),
            "{event:?}"
        );
    }

    #[test]
    fn an_object_that_is_no_workload_is_named_not_an_error() {
        let rollout = r#"{"type":"MODIFIED","object":{"kind":"Rollout",
            "metadata":{"name":"loose","namespace":"shop","resourceVersion":"43"},
            "spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"N","value":12345}]}]}}}}}"#;
        match decode_str(&rollout.replace('\n', "")) {
            Ok(Event::Unreadable(named)) => assert_eq!(
                named,
                Unreadable {
                    name: "loose".into(),
                    namespace: "shop".into(),
                    resource_version: "43".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        let page = r#"{"metadata":{"resourceVersion":"9"},"items":[
            {"metadata":{"name":"a","namespace":"shop"},"spec":{"template":{"metadata":{"annotations":
                {"secrets-reloader.security.bank-vaults.io/reload-on-secret-change":true}}}}},
            {"metadata":{"name":"b","namespace":"shop"}}]}"#;
        let page: crate::kube::Page = serde_json::from_str(page).unwrap();
        let names: Vec<_> = page
            .items
            .iter()
            .map(|item| match &item.0 {
                Ok(w) => format!("ok {}", w.metadata.name),
                Err(u) => format!("unreadable {}", u.name),
            })
            .collect();
        assert_eq!(names, ["unreadable a", "ok b"]);
        let error = decode_str(
            r#"{"type":"ADDED","object":{"spec":{"template":5},"metadata":{"name":"x"}}}"#,
        );
        assert!(matches!(error, Ok(Event::Unreadable(_))), "{error:?}");
        // Nothing of the value in the error of a line that is no event.
        let Err(Error::Decode(why)) = decode_str(r#"{"type":"ADDED","object":"hunter2"}"#) else {
            panic!("a line that is no event")
        };
        assert!(!why.contains("hunter2"), "{why}");
    }

    #[test]
    fn an_undecodable_line_is_an_error_not_a_panic() {
        for line in ["{", "[]", r#"{"type":"ADDED"}"#, "\u{0}"] {
            let result = decode_str(line);
            assert!(
                matches!(result, Err(Error::Decode(_))),
                "{line}: {result:?}"
            );
        }
    }
}
