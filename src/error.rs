//! The one error type shared by the Kubernetes and Vault clients.

use std::fmt;

/// Why a request to the API server or to Vault did not give a usable answer.
///
/// Messages never contain a token or a secret value: server messages are
/// kept only from error bodies, and those are truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server could not be reached, or the connection failed or timed out.
    Transport(String),
    /// 404: the object or path does not exist.
    NotFound,
    /// 404 whose Vault `errors` list names a cause (OpenBao's `namespace
    /// not found`, `no handler for route`): the request went nowhere, which
    /// is a configuration error (address, namespace, mount), not a missing
    /// secret. Holds the server's words, cut short.
    Misrouted(String),
    /// 409: a precondition (resourceVersion) no longer holds.
    Conflict,
    /// 410: a watch's resourceVersion is too old; a full list is needed.
    Gone,
    /// 422 naming `metadata.annotations` as too long: the object's
    /// annotations together are over the API server's 256 KiB.
    AnnotationsTooLong,
    /// 401 or 403: the credentials were refused.
    Denied(u16),
    /// Any other status that is not a success.
    Status { code: u16, message: String },
    /// A 3xx answer; redirects are never followed (the token would go along).
    /// `location` is the server's `Location`, cut short.
    Redirect { code: u16, location: String },
    /// The answer was longer than `limit` bytes; none of it is used.
    TooLarge { limit: u64 },
    /// The mount lookup of a Vault path was refused (`refused` is its
    /// status) and the guessed KV v2 mount `guess` did not work out; `why`
    /// says how. Never taken as the secret being missing or unwatchable.
    MountUnknown {
        refused: u16,
        guess: String,
        why: &'static str,
    },
    /// The answer could not be decoded.
    Decode(String),
    /// A local file (token, CA) could not be read or used.
    File { path: String, reason: String },
    /// No Vault token could be had (a login refused, a fixed token found
    /// dead): every request to that server would fail alike.
    Token(Box<Error>),
}

impl Error {
    /// Whether the server cannot be used at all right now (unreachable, or
    /// our credentials are unusable), so further requests in the same pass
    /// would fail alike and need not be sent.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Transport(_) | Error::File { .. } | Error::Denied(401)
        )
    }

    /// Whether the server itself is failing (no answer, a 5xx, a 200 that
    /// is not its JSON, or no token from it), rather than refusing one
    /// request: asking it about other paths in the same pass would fail
    /// alike. An answer over its size cap is not: a tenant can grow one
    /// secret's metadata (its versions), never another's.
    pub fn is_server_failure(&self) -> bool {
        match self {
            Error::Transport(_) | Error::Token(_) | Error::Decode(_) => true,
            Error::Status { code, .. } => *code >= 500,
            _ => false,
        }
    }

    /// The HTTP status the server answered with; `None` when there was no
    /// answer (transport) or the failure was local.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::NotFound | Error::Misrouted(_) => Some(404),
            Error::Conflict => Some(409),
            Error::Gone => Some(410),
            Error::AnnotationsTooLong => Some(422),
            Error::Denied(code) | Error::Status { code, .. } | Error::Redirect { code, .. } => {
                Some(*code)
            }
            Error::Token(cause) => cause.status(),
            Error::Transport(_)
            | Error::TooLarge { .. }
            | Error::MountUnknown { .. }
            | Error::Decode(_)
            | Error::File { .. } => None,
        }
    }

    /// A redirect with status `code` to `location` (server-chosen text, so
    /// cut short).
    pub fn redirect(code: u16, location: &str) -> Error {
        Error::Redirect {
            code,
            location: cut(location.trim()),
        }
    }

    /// Maps an error status and its (possibly empty) body to a variant.
    /// A missing Vault secret is a 404 with an empty `errors` list; one
    /// that names a cause is [`Error::Misrouted`].
    pub fn from_status(code: u16, body: &str) -> Error {
        match code {
            401 | 403 => Error::Denied(code),
            404 => match vault_errors(body) {
                Some(cause) if !cause.is_empty() => Error::Misrouted(cut(&cause)),
                _ => Error::NotFound,
            },
            409 => Error::Conflict,
            410 => Error::Gone,
            422 if annotations_too_long(body) => Error::AnnotationsTooLong,
            _ => Error::Status {
                code,
                message: short_message(body),
            },
        }
    }
}

/// Whether a Kubernetes `Status` body names the object's annotations as
/// too long (`details.causes[]` with reason `FieldValueTooLong` on field
/// `metadata.annotations`).
fn annotations_too_long(body: &str) -> bool {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let causes = status["details"]["causes"].as_array();
    causes.into_iter().flatten().any(|cause| {
        cause["reason"] == "FieldValueTooLong" && cause["field"] == "metadata.annotations"
    })
}

/// The server's own explanation from an error body, cut short: the
/// Kubernetes `Status.message` or Vault's `errors` list, else the raw text.
fn short_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = match parsed.as_ref().and_then(|v| v.get("message")) {
        Some(m) => m.as_str().unwrap_or_default().to_string(),
        None => vault_errors(body).unwrap_or_else(|| body.to_string()),
    };
    cut(text.trim())
}

/// Vault's `errors` list of an error body joined with `; ` (empty for an
/// empty list); `None` when the body has no such list.
fn vault_errors(body: &str) -> Option<String> {
    let parsed: serde_json::Value = serde_json::from_str(body).ok()?;
    let list = parsed.get("errors")?.as_array()?;
    let texts: Vec<&str> = list.iter().filter_map(|e| e.as_str()).collect();
    Some(texts.join("; ").trim().to_string())
}

/// `text` cut to at most 200 characters, `…` marking a cut.
fn cut(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(why) => write!(f, "connection failed: {why}"),
            Error::NotFound => write!(f, "not found (404)"),
            Error::Misrouted(cause) => write!(
                f,
                "not found (404): {cause}; this is not a missing secret: check the Vault \
                 address, VAULT_NAMESPACE and the mount"
            ),
            Error::Conflict => write!(f, "conflict (409)"),
            Error::Gone => write!(f, "resource version too old (410)"),
            Error::AnnotationsTooLong => write!(
                f,
                "the object's annotations are over the API server's 256 KiB limit (422)"
            ),
            Error::Denied(code) => write!(f, "permission denied ({code})"),
            Error::Status { code, message } if message.is_empty() => {
                write!(f, "unexpected status {code}")
            }
            Error::Status { code, message } => write!(f, "unexpected status {code}: {message}"),
            Error::Redirect { code, location } => write!(
                f,
                "redirected ({code}) to {location}; redirects are not followed"
            ),
            Error::TooLarge { limit } => write!(f, "answer larger than {limit} bytes"),
            Error::MountUnknown {
                refused,
                guess,
                why,
            } => write!(
                f,
                "the mount lookup was refused ({refused}) and under the guessed KV v2 mount {guess} {why}"
            ),
            Error::Decode(why) => write!(f, "unreadable answer: {why}"),
            Error::File { path, reason } => write!(f, "{path}: {reason}"),
            Error::Token(cause) => write!(f, "no usable Vault token: {cause}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_failures_are_told_from_refusals() {
        assert!(Error::Transport("reset".into()).is_server_failure());
        assert!(Error::from_status(500, "").is_server_failure());
        assert!(Error::from_status(503, "sealed").is_server_failure());
        assert!(!Error::from_status(403, "").is_server_failure());
        assert!(!Error::from_status(404, "").is_server_failure());
        assert!(!Error::from_status(400, "").is_server_failure());
        assert!(Error::Decode("expected value at line 1 column 1".into()).is_server_failure());
        assert!(!Error::TooLarge { limit: 1 }.is_server_failure());
    }

    #[test]
    fn statuses_map_to_causes() {
        assert!(matches!(Error::from_status(403, ""), Error::Denied(403)));
        assert!(matches!(Error::from_status(404, ""), Error::NotFound));
        assert!(matches!(Error::from_status(409, ""), Error::Conflict));
        assert!(matches!(Error::from_status(410, ""), Error::Gone));
    }

    #[test]
    fn a_404_naming_another_cause_is_not_a_missing_object() {
        let missing_secret = r#"{"errors":[]}"#;
        assert!(matches!(
            Error::from_status(404, missing_secret),
            Error::NotFound
        ));
        let k8s = r#"{"kind":"Status","message":"deployments.apps \"x\" not found","code":404}"#;
        assert!(matches!(Error::from_status(404, k8s), Error::NotFound));
        let no_namespace = r#"{"errors":["namespace not found"]}"#;
        let e = Error::from_status(404, no_namespace);
        assert!(
            matches!(&e, Error::Misrouted(cause) if cause == "namespace not found"),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_server_failure());
        assert_eq!(
            e.to_string(),
            "not found (404): namespace not found; this is not a missing secret: \
             check the Vault address, VAULT_NAMESPACE and the mount"
        );
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(5000));
        assert!(Error::from_status(404, &long).to_string().len() < 400);
    }

    #[test]
    fn keeps_the_servers_explanation_short() {
        let k8s = r#"{"kind":"Status","message":"deployments.apps \"x\" is forbidden"}"#;
        assert_eq!(
            Error::from_status(422, k8s).to_string(),
            "unexpected status 422: deployments.apps \"x\" is forbidden"
        );
        let vault = r#"{"errors":["one","two"]}"#;
        assert_eq!(
            Error::from_status(500, vault).to_string(),
            "unexpected status 500: one; two"
        );
        let long = "x".repeat(1000);
        assert!(Error::from_status(502, &long).to_string().len() < 260);
        assert_eq!(
            Error::from_status(503, "").to_string(),
            "unexpected status 503"
        );
    }

    #[test]
    fn a_redirect_names_its_location_cut_short() {
        assert_eq!(
            Error::redirect(302, "https://elsewhere/v1/x").to_string(),
            "redirected (302) to https://elsewhere/v1/x; redirects are not followed"
        );
        let long = format!("https://elsewhere/{}", "a".repeat(5000));
        let text = Error::redirect(307, &long).to_string();
        assert!(text.len() < 300, "{} bytes", text.len());
        assert_eq!(Error::redirect(301, "").status(), Some(301));
    }
}
