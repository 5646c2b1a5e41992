//! The HTTP agent both clients share: TLS roots, timeouts, and turning
//! statuses into [`Error`]s.

use crate::error::Error;
use std::time::Duration;
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Body;

/// How a client verifies the server it talks to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM bundle of trusted CAs; `None` trusts the built-in public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. Only for tests and emergencies.
    pub skip_verify: bool,
}

/// Builds an agent whose every request gives up after `timeout`, that keeps
/// connections alive, and that hands back error statuses as responses.
pub fn agent(timeout: Duration, tls: &Tls) -> Result<ureq::Agent, Error> {
    let mut tls_config = TlsConfig::builder().disable_verification(tls.skip_verify);
    if let Some(pem) = &tls.ca_pem {
        tls_config = tls_config.root_certs(RootCerts::from(parse_ca(pem)?));
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls_config.build())
        .user_agent(concat!(
            "vault-secrets-reloader/",
            env!("CARGO_PKG_VERSION")
        ))
        .build();
    Ok(config.new_agent())
}

/// The certificates of a PEM bundle; an error if it holds none.
fn parse_ca(pem: &[u8]) -> Result<Vec<Certificate<'static>>, Error> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(Error::Decode(format!("CA bundle: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(Error::Decode("CA bundle holds no certificate".into()));
    }
    Ok(certs)
}

/// Requests sent, by what was asked (a verb or a kind of request) and the
/// status answered (`error` when there was no answer).
pub type Counts = std::collections::BTreeMap<(&'static str, String), u64>;

/// Adds one request's outcome to `counts`.
pub fn count<T>(counts: &mut Counts, what: &'static str, result: &Result<T, Error>) {
    let code = match result {
        Ok(_) => "2xx".to_string(),
        Err(e) => e
            .status()
            .map_or_else(|| "error".to_string(), |c| c.to_string()),
    };
    *counts.entry((what, code)).or_default() += 1;
}

/// Passes a successful (2xx) response through; turns a transport failure or
/// any other status into an [`Error`].
pub fn check(result: Result<Response<Body>, ureq::Error>) -> Result<Response<Body>, Error> {
    let mut response = result.map_err(|e| Error::Transport(e.to_string()))?;
    let code = response.status().as_u16();
    if (200..300).contains(&code) {
        return Ok(response);
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Err(Error::from_status(code, &body))
}

/// Reads a JSON answer into `T`, streaming: only the fields `T` keeps are held.
pub fn read_json<T: serde::de::DeserializeOwned>(response: Response<Body>) -> Result<T, Error> {
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    serde_json::from_reader(reader).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_ca_bundle_without_certificates() {
        assert!(matches!(parse_ca(b"not a pem"), Err(Error::Decode(_))));
        let tls = Tls {
            ca_pem: Some(b"".to_vec()),
            skip_verify: false,
        };
        assert!(agent(Duration::from_secs(1), &tls).is_err());
    }
}
