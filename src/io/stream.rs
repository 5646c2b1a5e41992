//! One long-lived HTTP/1.1 GET whose answer is read as it arrives and never
//! waited for: the collector's watch streams. Opening one (connect, TLS
//! handshake, sending the request) is a request like any other, bounded by
//! a timeout, and its waits serve the loop ([`crate::io::reactor::wait_for`]);
//! after that its socket is non-blocking and each [`Stream::read`] takes
//! only what has already arrived. [`crate::io::exchange`] writes the request
//! and decodes the answer, [`crate::io::lines`] cuts its body into lines.

use crate::error::Error;
use crate::io::exchange::{Exchange, ExchangeError, HEAD_LIMIT};
use crate::io::http::ERROR_BODY_LIMIT;
use crate::io::lines::Lines;
use crate::io::proxy::Proxy;
use crate::policy::allow::Addr;
use rustls::pki_types::ServerName;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where streams go: a server's address and, for https, its TLS setup.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    /// A path the server is mounted under (`/k8s/clusters/c-1`), or empty.
    prefix: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Its host name's addresses, looked up with a bound and remembered
    /// as the HTTP client's are.
    resolver: Arc<crate::io::resolve::Cached>,
    /// The proxy its connections tunnel through ([`crate::io::proxy`]).
    proxy: Option<Proxy>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}{}", self.host, self.port, self.prefix)
    }
}

impl Target {
    /// The target of a base URL `http[s]://host[:port][/prefix]`; `tls`
    /// is used for https and must be given then.
    pub fn new(base: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Target, Error> {
        Target::through(base, tls, None)
    }

    /// The same target, its connections tunnelled through `proxy` (a
    /// CONNECT; TLS goes on end to end inside it).
    pub fn through(
        base: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        proxy: Option<Proxy>,
    ) -> Result<Target, Error> {
        let bad = |why: &str| Error::Decode(format!("API server URL {base:?}: {why}"));
        // The origin is parsed as a Vault address is; the rest is the prefix.
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let (origin, prefix) = match base[after_scheme..].find('/') {
            Some(i) => base.split_at(after_scheme + i),
            None => (base, ""),
        };
        let addr = Addr::parse(origin).map_err(|why| bad(&why.to_string()))?;
        let https = addr.scheme == "https";
        let (host, port) = (
            addr.host.trim_start_matches('[').trim_end_matches(']'),
            addr.port,
        );
        let tls = match (https, tls) {
            (false, _) => None,
            (true, None) => return Err(bad("https without a TLS configuration")),
            (true, Some(config)) => {
                let name = ServerName::try_from(host.to_string()).map_err(|_| bad("bad host"))?;
                Some((config, name))
            }
        };
        Ok(Target {
            host: host.to_string(),
            port,
            prefix: prefix.trim_end_matches('/').to_string(),
            tls,
            resolver: Arc::new(crate::io::resolve::Cached::new()),
            proxy,
        })
    }
}

/// The socket, plain or inside TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(socket) => socket,
            Conn::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(socket) => socket.read(buf),
            Conn::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(socket) => socket.write(buf),
            Conn::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(socket) => socket.flush(),
            Conn::Tls(tls) => tls.flush(),
        }
    }
}

/// Whether a stream is still open after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// More may come.
    Open,
    /// The answer ended (or the connection did): nothing more will come.
    Ended,
}

/// What the answer's head said.
enum Status {
    /// No head yet; an error if none came by this time.
    Awaited(Instant),
    /// 2xx: body lines are the stream's content.
    Ok,
    /// An error status: its body is kept (capped) for the message.
    Failed(u16, Vec<u8>),
}

/// An open GET whose body lines are read as they arrive.
pub struct Stream {
    conn: Conn,
    exchange: Exchange,
    lines: Lines,
    status: Status,
    opened: Instant,
}

/// A transport error.
fn transport(what: &str, error: std::io::Error) -> Error {
    Error::Transport(format!("{what}: {error}"))
}

/// An answer that was cut off is a transport error (as with the HTTP
/// client); one that is not HTTP as it should be cannot be decoded.
fn exchange_error(error: ExchangeError) -> Error {
    match error {
        ExchangeError::Cut | ExchangeError::Request(_) | ExchangeError::RequestHead(_) => {
            Error::Transport(error.to_string())
        }
        _ => Error::Decode(error.to_string()),
    }
}

impl Stream {
    /// Connects to `target` and sends `GET path_and_query` with `headers`
    /// (`Connection: close`), each step within `timeout`; the answer is left
    /// to [`Stream::read`], whose lines may be at most `line_limit` bytes,
    /// and whose head must come within `timeout` too.
    pub fn open(
        target: &Target,
        path_and_query: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
        line_limit: u64,
    ) -> Result<Stream, Error> {
        let deadline = Instant::now() + timeout;
        let socket = connect(target, deadline, timeout)?;
        let mut conn = match &target.tls {
            None => Conn::Plain(socket),
            Some((config, name)) => {
                let client = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| Error::Transport(format!("TLS: {e}")))?;
                let mut tls = rustls::StreamOwned::new(client, socket);
                handshake(&mut tls, deadline)?;
                Conn::Tls(Box::new(tls))
            }
        };
        let host = match target.host.contains(':') {
            true => format!("[{}]:{}", target.host, target.port),
            false => format!("{}:{}", target.host, target.port),
        };
        let mut all = vec![
            ("Host", host.as_str()),
            (
                "User-Agent",
                concat!("vault-secrets-reloader/", env!("CARGO_PKG_VERSION")),
            ),
            ("Connection", "close"),
        ];
        all.extend_from_slice(headers);
        let path = format!("{}{path_and_query}", target.prefix);
        let (exchange, request) = Exchange::get(&path, &all).map_err(exchange_error)?;
        conn.write_all(&request)
            .and_then(|()| conn.flush())
            .map_err(|e| transport("sending the request", e))?;
        conn.socket()
            .set_nonblocking(true)
            .map_err(|e| transport("socket", e))?;
        let now = Instant::now();
        Ok(Stream {
            conn,
            exchange,
            lines: Lines::new(line_limit),
            status: Status::Awaited(now + timeout),
            opened: now,
        })
    }

    /// The socket, for the loop to wait on.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.conn.socket().as_raw_fd()
    }

    /// How long ago the stream was opened.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// Appends the body lines that have arrived to `lines`, reading at most
    /// about `budget` bytes, without waiting. An error status is an error
    /// (with the server's message), as is a head that did not come in time,
    /// a malformed answer, or a line past the limit.
    pub fn read(&mut self, lines: &mut Vec<Vec<u8>>, budget: usize) -> Result<Flow, Error> {
        let mut buf = [0u8; 8192];
        // Decoded bytes on their way to `lines`: held for this call only,
        // so that hundreds of idle streams keep no buffer each.
        let mut body = Vec::new();
        let mut taken = 0;
        while taken < budget {
            let n = match self.conn.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(transport("reading the stream", e)),
            };
            if n == 0 {
                let whole = self.exchange.close();
                return self.ended(whole);
            }
            taken += n;
            // The head and the body decoded before an error count first.
            let received = self.exchange.receive(&buf[..n], &mut body);
            self.take_head()?;
            self.route(&mut body, lines)?;
            if received.map_err(exchange_error)? {
                return self.ended(Ok(()));
            }
        }
        match self.status {
            Status::Awaited(deadline) if Instant::now() > deadline => Err(Error::Transport(
                "no answer to the watch request in time".into(),
            )),
            _ => Ok(Flow::Open),
        }
    }

    /// Sets the status once the answer's head has come; a redirect is an
    /// error (never followed: the token would go along).
    fn take_head(&mut self) -> Result<(), Error> {
        let (Status::Awaited(_), Some(head)) = (&self.status, self.exchange.head()) else {
            return Ok(());
        };
        self.status = match head.status {
            200..=299 => Status::Ok,
            300..=399 => {
                let location = head.location.as_deref().unwrap_or_default();
                return Err(Error::redirect(head.status, location));
            }
            code => Status::Failed(code, Vec::new()),
        };
        Ok(())
    }

    /// Moves the decoded `body` bytes on, leaving it empty: after a
    /// success, the lines they complete to `lines`; after an error status,
    /// to its message (capped).
    fn route(&mut self, body: &mut Vec<u8>, lines: &mut Vec<Vec<u8>>) -> Result<(), Error> {
        let routed = match &mut self.status {
            Status::Ok => self.lines.split(body, lines),
            Status::Failed(_, kept) => {
                let room = (ERROR_BODY_LIMIT as usize).saturating_sub(kept.len());
                kept.extend_from_slice(&body[..body.len().min(room)]);
                Ok(())
            }
            // No body comes before its head.
            Status::Awaited(_) => Ok(()),
        };
        body.clear();
        routed
    }

    /// The answer is over, `whole` saying whether it was complete: `Ended`
    /// after a success (a watch cut off mid-body ends at its last whole
    /// line, as a complete one does: the next resumes from there), else the
    /// error it was.
    fn ended(&self, whole: Result<(), ExchangeError>) -> Result<Flow, Error> {
        match &self.status {
            Status::Ok => Ok(Flow::Ended),
            Status::Failed(code, body) => {
                Err(Error::from_status(*code, &String::from_utf8_lossy(body)))
            }
            // Without its head an answer is never whole.
            Status::Awaited(_) => Err(exchange_error(whole.err().unwrap_or(ExchangeError::Cut))),
        }
    }
}

/// A socket connected by `deadline`, with `timeout` for each read and
/// write (until it is made non-blocking).
/// Through the target's proxy when it has one.
fn connect(target: &Target, deadline: Instant, timeout: Duration) -> Result<TcpStream, Error> {
    let (host, port) = match &target.proxy {
        Some(proxy) => (proxy.host.as_str(), proxy.port),
        None => (target.host.as_str(), target.port),
    };
    let addrs = target
        .resolver
        .addrs(host, port, timeout)
        .map_err(|e| Error::Transport(format!("resolving {host}: {e}")))?;
    if addrs.is_empty() {
        return Err(Error::Transport(format!("{host} has no address")));
    }
    let mut socket = crate::io::transport::connect_any(&addrs, Some(deadline))
        .map_err(|e| transport("connecting", e))?;
    let setup = socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .and_then(|()| socket.set_nodelay(true));
    setup.map_err(|e| transport("socket", e))?;
    if let Some(proxy) = &target.proxy {
        tunnel(&mut socket, proxy, &target.host, target.port, deadline)?;
    }
    Ok(socket)
}

/// Asks `proxy`, connected on `socket`, for a tunnel to `host:port` by
/// `deadline`: a CONNECT whose answer must be a 2xx. Its waits serve the
/// loop. The answer is read a byte at a time: what follows its head is
/// the server's, for TLS.
fn tunnel(
    socket: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(), Error> {
    use crate::io::poll::Interest;
    use std::os::fd::AsRawFd;
    let authority = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(userinfo) = &proxy.userinfo {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(userinfo);
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    let via = |what: &str| format!("the proxy {proxy:?} {what} the tunnel to {authority}");
    socket
        .write_all(request.as_bytes())
        .map_err(|e| transport(&via("took no request for"), e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| transport("socket", e))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() <= HEAD_LIMIT {
        match socket.read(&mut byte) {
            Ok(0) => return Err(Error::Transport(via("closed before it answered for"))),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let ready = Interest::Read(socket.as_raw_fd());
                if !crate::io::reactor::wait_for(ready, Some(deadline)) {
                    return Err(Error::Transport(via("did not answer in time for")));
                }
            }
            Err(e) => return Err(transport(&via("failed"), e)),
        }
    }
    socket
        .set_nonblocking(false)
        .map_err(|e| transport("socket", e))?;
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default());
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(()),
        _ => Err(Error::Transport(format!(
            "{} ({})",
            via("refused"),
            line.chars().take(100).collect::<String>()
        ))),
    }
}

/// Completes the TLS handshake by `deadline`. The socket is non-blocking
/// meanwhile, so that each wait for the server serves the loop.
fn handshake(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    deadline: Instant,
) -> Result<(), Error> {
    use crate::io::poll::Interest;
    use std::os::fd::AsRawFd;
    let socket = |e| transport("socket", e);
    tls.sock.set_nonblocking(true).map_err(socket)?;
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let fd = tls.sock.as_raw_fd();
                let ready = match tls.conn.wants_write() {
                    true => Interest::Write(fd),
                    false => Interest::Read(fd),
                };
                if !crate::io::reactor::wait_for(ready, Some(deadline)) {
                    return Err(transport("TLS handshake", ErrorKind::TimedOut.into()));
                }
            }
            Err(e) => return Err(transport("TLS handshake", e)),
        }
    }
    tls.sock.set_nonblocking(false).map_err(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn targets_are_read_from_base_urls() {
        let cases = [
            ("http://127.0.0.1:8080", Some(("127.0.0.1", 8080, ""))),
            ("http://127.0.0.1", Some(("127.0.0.1", 80, ""))),
            (
                "http://[::1]:6443/k8s/clusters/c-1/",
                Some(("::1", 6443, "/k8s/clusters/c-1")),
            ),
            ("http://[::1]", Some(("::1", 80, ""))),
            ("ftp://host", None),
            ("http://:80", None),
            ("http://host:port", None),
            ("https://host", None),
        ];
        for (base, want) in cases {
            let got = Target::new(base, None).ok();
            let got = got
                .as_ref()
                .map(|t| (t.host.as_str(), t.port, t.prefix.as_str()));
            assert_eq!(got, want, "{base}");
        }
    }

    /// A server that writes `answer` in the given pieces, pausing between
    /// them, then closes; what it received comes back through the handle.
    fn serve(pieces: Vec<Vec<u8>>) -> (Target, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            for piece in pieces {
                socket.write_all(&piece).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            String::from_utf8(request).unwrap()
        });
        let target = Target::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        (target, handle)
    }

    /// Reads `stream` until it ends or fails, never blocking: each read
    /// returns at once.
    fn drain(stream: &mut Stream) -> (Vec<String>, Result<Flow, Error>) {
        let mut lines = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let result = stream.read(&mut lines, 1 << 20);
            if result != Ok(Flow::Open) || Instant::now() > until {
                let lines = lines.into_iter().map(|l| String::from_utf8(l).unwrap());
                return (lines.collect(), result);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_arrive_as_they_are_sent_and_the_request_carries_the_headers() {
        let pieces = vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"6\r\n{\"a\":1\r\n".to_vec(),
            b"2\r\n}\n\r\n".to_vec(),
            b"8\r\n{\"b\":2}\n\r\n0\r\n\r\n".to_vec(),
        ];
        let (target, server) = serve(pieces);
        let headers = [("Authorization", "Bearer t")];
        let mut stream = Stream::open(
            &target,
            "/x?watch=1",
            &headers,
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        let started = Instant::now();
        let mut lines = Vec::new();
        assert_eq!(stream.read(&mut lines, 1 << 20), Ok(Flow::Open));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a read never waits"
        );
        let (rest, result) = drain(&mut stream);
        assert_eq!(result, Ok(Flow::Ended));
        let all: Vec<String> = lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .chain(rest)
            .collect();
        assert_eq!(all, ["{\"a\":1}", "{\"b\":2}"]);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /x?watch=1 HTTP/1.1\r\n"),
            "{request}"
        );
        // Header names go out in lower case (ureq-proto's way; HTTP ignores case).
        let port = target.port;
        for line in [
            format!("\r\nhost: 127.0.0.1:{port}\r\n"),
            "\r\nauthorization: Bearer t\r\n".into(),
            "\r\nconnection: close\r\n".into(),
            "\r\nuser-agent: vault-secrets-reloader/".into(),
        ] {
            assert!(request.contains(&line), "{line:?} in {request}");
        }
    }

    #[test]
    fn a_host_name_is_resolved_by_the_bounded_cached_resolver() {
        let pieces = vec![b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}\n".to_vec()];
        let (by_address, _server) = serve(pieces);
        let named = Target::new(&format!("http://localhost:{}", by_address.port), None).unwrap();
        let mut stream = Stream::open(&named, "/x", &[], Duration::from_secs(5), 1024).unwrap();
        assert_eq!(
            drain(&mut stream),
            (vec!["{\"a\":1}".to_string()], Ok(Flow::Ended))
        );
        let port = by_address.port;
        assert!(
            named.resolver.remembers(&format!("localhost:{port}")),
            "looked up through it"
        );
    }

    /// A CONNECT proxy for one connection that answers `status` and, on a
    /// 200, relays to `upstream` whatever name was asked for; gives back
    /// the head it was sent.
    fn connect_proxy(
        status: &'static str,
        upstream: u16,
    ) -> (Proxy, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut client, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                client.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            client
                .write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                .unwrap();
            if status.starts_with("200") {
                let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let mut back = server.try_clone().unwrap();
                let mut forth = client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back, &mut forth);
                    forth.shutdown(std::net::Shutdown::Both)
                });
                let _ = std::io::copy(&mut client, &mut server);
            }
            String::from_utf8(head).unwrap()
        });
        let proxy = Proxy {
            host: "127.0.0.1".into(),
            port,
            userinfo: Some("reloader:s3cret".into()),
        };
        (proxy, handle)
    }

    #[test]
    fn a_stream_goes_through_a_connect_proxy_which_resolves_the_name() {
        let pieces = vec![b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}\n".to_vec()];
        let (direct, server) = serve(pieces);
        let (proxy, asked) = connect_proxy("200 Connection established", direct.port);
        // A name only the proxy knows: the client never looks it up.
        let target =
            Target::through("http://kubernetes.default.svc:6443", None, Some(proxy)).unwrap();
        let mut stream = Stream::open(&target, "/x", &[], Duration::from_secs(5), 1024).unwrap();
        let lines = drain(&mut stream);
        assert_eq!(lines, (vec!["{\"a\":1}".to_string()], Ok(Flow::Ended)));
        let head = asked.join().unwrap();
        assert!(
            head.starts_with("CONNECT kubernetes.default.svc:6443 HTTP/1.1\r\n"),
            "{head}"
        );
        // base64("reloader:s3cret")
        assert!(head.contains("\r\nProxy-Authorization: Basic cmVsb2FkZXI6czNjcmV0\r\n"));
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /x HTTP/1.1\r\nhost: kubernetes.default.svc:6443\r\n"));
    }

    #[test]
    fn a_refused_tunnel_is_an_error_naming_the_proxy_not_its_password() {
        let (proxy, _asked) = connect_proxy("407 Proxy Authentication Required", 1);
        let target = Target::through("http://api.example:6443", None, Some(proxy)).unwrap();
        let error = Stream::open(&target, "/x", &[], Duration::from_secs(5), 1024)
            .err()
            .expect("refused");
        let text = error.to_string();
        assert!(
            text.contains("refused the tunnel to api.example:6443 (HTTP/1.1 407 Proxy Authentication Required)"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn an_error_body_of_empty_lines_is_held_to_its_cap() {
        let mut answer = b"HTTP/1.1 500 Internal Server Error\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'\n', 1 << 20));
        answer.extend(b"no newline at the end");
        let (target, _server) = serve(vec![answer]);
        let mut stream =
            Stream::open(&target, "/x?watch=1", &[], Duration::from_secs(5), 1024).unwrap();
        let (_, result) = drain(&mut stream);
        assert!(
            matches!(result, Err(Error::Status { code: 500, .. })),
            "{result:?}"
        );
        match &stream.status {
            Status::Failed(_, body) => assert_eq!(body.len(), ERROR_BODY_LIMIT as usize),
            _ => panic!("not failed"),
        }
    }

    #[test]
    fn error_answers_and_cut_connections_are_errors() {
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 14\r\n\r\n{\"code\": 403}\n";
        let long = format!("HTTP/1.1 200 OK\r\n\r\n{}\n", "x".repeat(2000));
        let cases: [(Vec<u8>, Error); 4] = [
            (long.into_bytes(), Error::TooLarge { limit: 1024 }),
            (forbidden.to_vec(), Error::Denied(403)),
            (
                b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere/\r\n\r\n".to_vec(),
                Error::redirect(302, "https://elsewhere/"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_vec(),
                Error::Decode(
                    "malformed chunked body: chunk length cannot be read as a number".into(),
                ),
            ),
        ];
        for (answer, want) in cases {
            let (target, _server) = serve(vec![answer]);
            let mut stream = Stream::open(&target, "/", &[], Duration::from_secs(5), 1024).unwrap();
            assert_eq!(drain(&mut stream).1, Err(want));
        }
        let (target, _server) = serve(vec![]);
        let mut stream = Stream::open(&target, "/", &[], Duration::from_secs(5), 1024).unwrap();
        let (_, result) = drain(&mut stream);
        assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    }

    #[test]
    fn a_cut_after_the_head_ends_the_stream_with_the_whole_lines() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"a\":1}\n{\r\n";
        let (target, _server) = serve(vec![answer.to_vec()]);
        let mut stream = Stream::open(&target, "/", &[], Duration::from_secs(5), 1024).unwrap();
        assert_eq!(
            drain(&mut stream),
            (vec!["{\"a\":1}".to_string()], Ok(Flow::Ended))
        );
    }

    #[test]
    fn a_server_that_never_answers_is_an_error_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let target = Target::new(&base, None).unwrap();
        let mut stream = Stream::open(&target, "/", &[], Duration::from_millis(200), 1024).unwrap();
        let (_, result) = drain(&mut stream);
        let want = Error::Transport("no answer to the watch request in time".into());
        assert_eq!(result, Err(want));
    }

    #[test]
    fn a_tls_handshake_without_an_answer_serves_the_loop_until_its_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let tls = crate::io::http::rustls_config(&crate::io::http::Tls::default()).unwrap();
        let target = Target::new(&base, Some(tls)).unwrap();
        let health = crate::io::serve::Server::bind("127.0.0.1:0").unwrap();
        let health_address = health.local_addr().unwrap();
        let signals = crate::io::reactor::Signals::default();
        crate::io::reactor::Reactor::new(Some(health), signals).install();
        let probe = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(health_address).unwrap();
            client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
            let mut reply = String::new();
            client.read_to_string(&mut reply).map(|_| reply)
        });
        let result = Stream::open(&target, "/", &[], Duration::from_secs(1), 1024);
        crate::io::reactor::Reactor::uninstall();
        let error = result.err().expect("no handshake, no stream");
        assert_eq!(
            error,
            Error::Transport("TLS handshake: timed out".into()),
            "{error:?}"
        );
        let reply = probe.join().unwrap().unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "the wait served the probe: {reply:?}"
        );
    }
}
