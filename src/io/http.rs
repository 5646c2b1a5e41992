//! The HTTP agent both clients share: TLS roots, timeouts, no redirects,
//! capped bodies, and turning statuses into [`Error`]s.

use crate::error::Error;
use crate::policy::metrics::Counts;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use ureq::http::Response;
use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
use ureq::Body;

/// How much of an error body is read for the server's explanation.
pub const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// How a client verifies the server it talks to, and proves who it is.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM bundle of trusted CAs; `None` trusts the built-in public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. Only for tests and emergencies.
    pub skip_verify: bool,
    /// A certificate presented to the server (see [`client_cert`]); its
    /// `Debug` output shows no key.
    pub client_cert: Option<ClientCert>,
}

/// The client certificate of a PEM chain and a PEM private key (PKCS#1,
/// PKCS#8 or SEC1; the first key found), or which of the two holds none.
pub fn client_cert(chain_pem: &[u8], key_pem: &[u8]) -> Result<ClientCert, &'static str> {
    let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(chain_pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if chain.is_empty() {
        return Err("the client certificate holds no PEM certificate");
    }
    let key = ureq::tls::parse_pem(key_pem)
        .find_map(|item| match item {
            Ok(PemItem::PrivateKey(key)) => Some(key),
            _ => None,
        })
        .ok_or("the client key holds no PEM private key")?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// Builds an agent whose every request gives up after `timeout`, that keeps
/// connections alive, that hands back error statuses as responses, and that
/// never follows a redirect: ureq would send our token headers along, so a
/// 3xx comes back as a response and [`check`] turns it into
/// [`Error::Redirect`]. Host names are looked up at most every
/// [`crate::io::resolve::KEEP`], IP addresses never. While a request waits, the
/// loop's health listener is served (see [`crate::io::transport`]). Requests go
/// through `proxy` when given, else direct.
pub fn agent(
    timeout: Duration,
    tls: &Tls,
    proxy: Option<&crate::io::proxy::Proxy>,
) -> Result<ureq::Agent, Error> {
    let mut tls_config = TlsConfig::builder()
        .disable_verification(tls.skip_verify)
        .client_cert(tls.client_cert.clone());
    if let Some(pem) = &tls.ca_pem {
        tls_config = tls_config.root_certs(RootCerts::from(parse_ca(pem)?));
    }
    // Our rule (crate::io::proxy), never ureq's own reading of the environment.
    let proxy = proxy
        .map(|p| ureq::Proxy::new(&p.url(true)))
        .transpose()
        .map_err(|e| Error::Decode(format!("proxy: {e}")))?;
    let config = ureq::Agent::config_builder()
        .proxy(proxy)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // 0: the 3xx response itself is returned (never TooManyRedirects).
        .max_redirects(0)
        .tls_config(tls_config.build())
        .user_agent(concat!(
            "vault-secrets-reloader/",
            env!("CARGO_PKG_VERSION")
        ))
        .build();
    // ureq's default chain, with our TCP connections (which serve the loop
    // while they wait) in place of its own, and no SOCKS.
    use ureq::unversioned::transport::{ConnectProxyConnector, Connector, RustlsConnector};
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(crate::io::transport::Connect)
            .chain(RustlsConnector::default());
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        crate::io::resolve::Cached::new(),
    ))
}

/// The rustls configuration of `tls`, for the connections a client drives
/// itself (the collector's non-blocking watch streams): the same roots,
/// verification and client certificate as [`agent`], and the same crypto.
pub fn rustls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Decode(format!("TLS: {e}")))?;
    let builder = if tls.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_pem {
            Some(pem) => {
                for cert in parse_ca(pem)? {
                    roots
                        .add(cert.der().to_vec().into())
                        .map_err(|e| Error::Decode(format!("CA bundle: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = cert.certs().iter().map(|c| c.der().to_vec().into());
            builder
                .with_client_auth_cert(chain.collect(), private_key(cert.private_key())?)
                .map_err(|e| Error::Decode(format!("client certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// The key in rustls' form; its DER says which kind it is.
fn private_key(key: &ureq::tls::PrivateKey<'static>) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|e| Error::Decode(format!("client key: {e}")))
}

/// Accepts any server certificate (`skip_verify`), still checking that the
/// handshake is signed by the certificate's key.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` made safe for a query string: RFC 3986's unreserved characters
/// kept, every other byte as `%XX` (a value may hold any character).
pub fn encode_query(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

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

/// Passes a successful (2xx) response through; turns a transport failure, a
/// redirect or any other status into an [`Error`].
pub fn check(result: Result<Response<Body>, ureq::Error>) -> Result<Response<Body>, Error> {
    let mut response = result.map_err(|e| Error::Transport(e.to_string()))?;
    let code = response.status().as_u16();
    if (200..300).contains(&code) {
        return Ok(response);
    }
    if (300..400).contains(&code) {
        let location = response
            .headers()
            .get("location")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(Error::redirect(code, &location));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_string()
        .unwrap_or_default();
    Err(Error::from_status(code, &body))
}

/// Reads a JSON answer of at most `limit` bytes into `T`, streaming: only
/// the fields `T` keeps are held. A longer answer is [`Error::TooLarge`].
pub fn read_json<T: serde::de::DeserializeOwned>(
    response: Response<Body>,
    limit: u64,
) -> Result<T, Error> {
    let body = response
        .into_body()
        .into_with_config()
        .limit(limit)
        .reader();
    serde_json::from_reader(std::io::BufReader::new(body)).map_err(|e| json_error(e, limit))
}

/// Reads an answer whose body is not used to its end, at most `limit`
/// bytes, so its kept-alive connection can carry the next request.
pub fn discard(response: Response<Body>, limit: u64) -> Result<(), Error> {
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(limit)
        .reader();
    std::io::copy(&mut body, &mut std::io::sink())
        .map(drop)
        .map_err(|e| json_error(serde_json::Error::io(e), limit))
}

/// A decoding failure as an [`Error`]: [`Error::TooLarge`] when the body
/// reader failed with ureq's `BodyExceedsLimit` (past `limit`),
/// [`Error::Transport`] when reading the body failed otherwise (the
/// connection broke: the server, not the answer, is the problem), else
/// [`Error::Decode`].
pub(crate) fn json_error(error: serde_json::Error, limit: u64) -> Error {
    if !error.is_io() {
        return Error::Decode(error.to_string());
    }
    let io = std::io::Error::from(error);
    let too_large = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::BodyExceedsLimit(_)));
    if too_large {
        Error::TooLarge { limit }
    } else {
        Error::Transport(io.to_string())
    }
}

/// A canned HTTP/1.1 server on 127.0.0.1 for unit tests: each connection
/// gets one answer (then `Connection: close`), chosen by a handler from the
/// request; connections and requests are recorded.
#[cfg(test)]
pub(crate) mod fake_server {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// A self-signed client certificate (EC P-256, CN=test-client) and its
    /// PKCS#8 key: a fixture for tests only, trusted nowhere.
    pub(crate) const CLIENT_CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBgzCCASmgAwIBAgIUWcCbvSXAmmEkAYyZlSM0KhfEXdYwCgYIKoZIzj0EAwIw\n\
FjEUMBIGA1UEAwwLdGVzdC1jbGllbnQwIBcNMjYxMTI5MTIzNzA1WhgPMjEyNjEx\n\
MDUxMjM3MDVaMBYxFDASBgNVBAMMC3Rlc3QtY2xpZW50MFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAE0CMhJP4ebZQyVAScejiVqbx+ia+wnE2XrwalyIYTDA3vCryD\n\
qmtyljRcBqmAauj7T3ZiG2ep+UUx9S5jYsBJQ6NTMFEwHQYDVR0OBBYEFKp8GORU\n\
ztFIQck8N6n+euVWfAv3MB8GA1UdIwQYMBaAFKp8GORUztFIQck8N6n+euVWfAv3\n\
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgJ+ULh7kLC75emfCa\n\
MQHCOm9TW7TZGhquDsDdJy07sCACIQCVmKkqpl82cNXB8LRnB7snIDHDa24pYNxL\n\
x/06jcMqeA==\n\
-----END CERTIFICATE-----\n\
";
    /// The key of [`CLIENT_CERT`].
    pub(crate) const CLIENT_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6PvBaxvqpOfQe66f\n\
f2+Wj2oyHwuQkwCIY4ZoMsyP7aKhRANCAATQIyEk/h5tlDJUBJx6OJWpvH6Jr7Cc\n\
TZevBqXIhhMMDe8KvIOqa3KWNFwGqYBq6PtPdmIbZ6n5RTH1LmNiwElD\n\
-----END PRIVATE KEY-----\n\
";

    /// A request as received.
    #[derive(Debug, Clone)]
    pub(crate) struct Request {
        pub method: String,
        pub path: String,
        /// Header names in lower case.
        pub headers: Vec<(String, String)>,
        /// The body as sent.
        pub body: Vec<u8>,
    }

    impl Request {
        /// The value of header `name` (lower case), if sent.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// An answer: status, extra headers and body.
    #[derive(Clone)]
    pub(crate) struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Reply {
        /// A JSON answer with `status`.
        pub fn json(status: u16, body: &str) -> Reply {
            Reply {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.as_bytes().to_vec(),
            }
        }
    }

    #[derive(Default)]
    struct Log {
        connections: usize,
        requests: Vec<Request>,
    }

    /// A running fake server; its thread lives until the test process ends.
    pub(crate) struct FakeServer {
        /// `http://127.0.0.1:PORT`.
        pub url: String,
        log: Arc<Mutex<Log>>,
    }

    impl FakeServer {
        /// Connections accepted so far.
        pub fn connections(&self) -> usize {
            self.log.lock().unwrap().connections
        }

        /// Requests received so far.
        pub fn requests(&self) -> Vec<Request> {
            self.log.lock().unwrap().requests.clone()
        }

        /// How many requests asked for a path starting with `prefix`.
        pub fn hits(&self, prefix: &str) -> usize {
            self.requests()
                .iter()
                .filter(|r| r.path.starts_with(prefix))
                .count()
        }
    }

    /// Starts a server answering every request with `handler`'s reply.
    pub(crate) fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let handler = Arc::new(handler);
        let shared = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shared.lock().unwrap().connections += 1;
                let (log, handler) = (Arc::clone(&shared), Arc::clone(&handler));
                std::thread::spawn(move || serve(stream, &log, &*handler));
            }
        });
        FakeServer { url, log }
    }

    /// Answers the requests of one connection, one after the other, until
    /// the client closes it (kept alive, as real servers do).
    fn serve(mut stream: TcpStream, log: &Mutex<Log>, handler: &dyn Fn(&Request) -> Reply) {
        while let Some(request) = read_request(&stream) {
            log.lock().unwrap().requests.push(request.clone());
            let reply = handler(&request);
            let mut head = format!(
                "HTTP/1.1 {} Fake\r\nContent-Length: {}\r\n",
                reply.status,
                reply.body.len()
            );
            for (name, value) in &reply.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            // One write: a second small one would wait for the client's
            // delayed ACK (Nagle).
            let mut answer = head.into_bytes();
            answer.extend_from_slice(&reply.body);
            // The client may stop reading (a capped body): then it closes.
            if stream.write_all(&answer).is_err() {
                return;
            }
        }
    }

    fn read_request(stream: &TcpStream) -> Option<Request> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Request {
            method,
            path,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fake_server::{self, Reply};
    use super::*;

    #[test]
    fn query_values_keep_only_unreserved_characters() {
        for (value, want) in [
            ("12345", "12345"),
            ("a-b.c_d~e", "a-b.c_d~e"),
            ("team/kv/app x", "team%2Fkv%2Fapp%20x"),
            ("eyJ2IjoibWV0YSJ9+/=", "eyJ2IjoibWV0YSJ9%2B%2F%3D"),
            ("é&?#", "%C3%A9%26%3F%23"),
        ] {
            assert_eq!(encode_query(value), want, "{value}");
        }
    }

    #[test]
    fn rejects_a_ca_bundle_without_certificates() {
        assert!(matches!(parse_ca(b"not a pem"), Err(Error::Decode(_))));
        let tls = Tls {
            ca_pem: Some(b"".to_vec()),
            ..Tls::default()
        };
        assert!(agent(Duration::from_secs(1), &tls, None).is_err());
    }

    #[test]
    fn a_client_certificate_needs_a_certificate_and_a_key() {
        use fake_server::{CLIENT_CERT, CLIENT_KEY};
        let (cert, key) = (CLIENT_CERT.as_bytes(), CLIENT_KEY.as_bytes());
        let parsed = client_cert(cert, key).unwrap();
        assert_eq!(parsed.certs().len(), 1);
        assert!(
            !format!("{parsed:?}").contains("MIGHAgEA"),
            "no key in Debug output"
        );
        let both = [cert, key].concat();
        assert!(client_cert(&both, &both).is_ok(), "one PEM file with both");
        assert_eq!(
            client_cert(key, key).unwrap_err(),
            "the client certificate holds no PEM certificate"
        );
        assert_eq!(
            client_cert(cert, cert).unwrap_err(),
            "the client key holds no PEM private key"
        );
        let tls = Tls {
            client_cert: Some(parsed),
            ..Tls::default()
        };
        assert!(agent(Duration::from_secs(1), &tls, None).is_ok());
    }

    fn test_agent() -> ureq::Agent {
        agent(Duration::from_secs(5), &Tls::default(), None).unwrap()
    }

    #[test]
    fn a_redirect_is_an_error_and_not_followed() {
        let elsewhere = fake_server::start(|_| Reply::json(200, "{}"));
        let target = format!("{}/v1/stolen", elsewhere.url);
        let server = fake_server::start(move |_| Reply {
            status: 302,
            headers: vec![("Location".into(), target.clone())],
            body: Vec::new(),
        });
        let result = check(
            test_agent()
                .get(&format!("{}/v1/x", server.url))
                .header("Authorization", "Bearer secret")
                .call(),
        );
        match result {
            Err(Error::Redirect {
                code: 302,
                location,
            }) => {
                assert_eq!(location, format!("{}/v1/stolen", elsewhere.url))
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
        assert_eq!(elsewhere.connections(), 0);
        assert_eq!(server.hits("/v1/x"), 1);
        assert_eq!(server.requests()[0].method, "GET");
    }

    #[test]
    fn a_json_answer_past_the_limit_is_too_large() {
        let server = fake_server::start(|_| Reply::json(200, &format!("[{}1]", "1,".repeat(600))));
        let get = || check(test_agent().get(&server.url).call()).unwrap();
        let small: Result<Vec<u8>, Error> = read_json(get(), 4096);
        assert_eq!(small.unwrap().len(), 601);
        let large: Result<Vec<u8>, Error> = read_json(get(), 1000);
        assert!(matches!(large, Err(Error::TooLarge { limit: 1000 })));
        let bad: Result<String, Error> = read_json(get(), 4096);
        assert!(matches!(bad, Err(Error::Decode(_))));
    }

    #[test]
    fn a_connection_broken_mid_answer_is_a_transport_failure() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            // Promises 100 bytes, sends a few, and hangs up.
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":")
                .unwrap();
        });
        let response = check(test_agent().get(&url).call()).unwrap();
        server.join().unwrap();
        let broken: Result<serde_json::Value, Error> = read_json(response, 4096);
        assert!(matches!(broken, Err(Error::Transport(_))), "{broken:?}");
    }
}
