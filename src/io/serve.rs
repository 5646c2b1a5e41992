//! The health and metrics listener, served from the loop's own thread.
//!
//! It never waits: the listener and every accepted socket are
//! non-blocking, a partial request is kept for the next poll, and one poll
//! spends at most [`POLL_BUDGET`] on all clients together. A client is held
//! at most [`CLIENT_DEADLINE`] from its accept, and at most
//! [`MAX_CLIENTS`] are held at once: a new client past the cap evicts the
//! oldest one still sending its request once that one has been held
//! [`EVICT_AFTER`], read once more first; while all are younger, new
//! connections wait in the kernel's queue. So idle or dribbling connections
//! cannot keep a fresh probe from being answered, a flood cannot drop a
//! probe whose request is a moment late, and nothing holds the loop.

use crate::io::poll::Interest;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The time one `poll` may spend on all clients together; the rest waits
/// for the next poll.
pub const POLL_BUDGET: Duration = Duration::from_millis(5);

/// How long a client is held from its accept, whatever it sent by then.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// How many clients are held open at once.
pub const MAX_CLIENTS: usize = 64;

/// How long a client still reading its request is held before a newer one
/// may take its place: a probe's request follows its connection within
/// this even on a loaded machine. While every held client is younger,
/// accepts wait (new connections queue in the kernel, their requests with
/// them) rather than drop a client that has had no chance.
pub const EVICT_AFTER: Duration = Duration::from_millis(25);

/// How many connections one poll accepts. No more than [`MAX_CLIENTS`], so
/// a client accepted before its request arrived is read again at the next
/// poll before a flood of new connections can evict it.
const ACCEPTS_PER_POLL: usize = MAX_CLIENTS;

/// The longest request head read; a longer one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// How many finished handshakes the kernel queues for `accept` (capped by
/// `net.core.somaxconn`). Past it the kernel drops new SYNs, and a probe
/// then waits out a 1 s retransmission: so well above [`MAX_CLIENTS`] plus
/// the hundreds of idle connections a client may throw at the port.
const BACKLOG: i32 = 1024;

/// An answer this large or larger (a /metrics of thousands of workloads)
/// is rendered at most once per [`SHARE_FOR`] and shared by every client
/// writing it, so clients that never read hold one copy, not one each.
const SHARED_FROM: usize = 64 * 1024;

/// How long a large answer is given again instead of rendered anew.
const SHARE_FOR: Duration = Duration::from_secs(1);

/// How long the listener is left alone after `accept` failed for want of
/// resources (no file descriptors): it stays readable, and the loop would
/// spin on it.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// An answer: status code, content type, body.
pub type Answer = (u16, &'static str, String);

/// A non-blocking HTTP listener.
pub struct Server {
    listener: TcpListener,
    /// Held clients, oldest accept first.
    clients: Vec<Client>,
    /// Where servicing starts next poll, so a spent budget favours no one.
    turn: usize,
    /// Large answers rendered lately.
    shared: Shared,
    /// No `accept` before then: the last one failed for want of resources.
    accept_paused_until: Option<Instant>,
}

/// Large answers rendered lately, by path ([`SHARED_FROM`]).
#[derive(Default)]
struct Shared {
    recent: Vec<(String, Instant, Rc<[u8]>)>,
}

impl Shared {
    /// The bytes answering a GET (`with_body`) or HEAD of `path` at `now`.
    fn reply(
        &mut self,
        path: &str,
        with_body: bool,
        answer: &dyn Fn(&str) -> Answer,
        now: Instant,
    ) -> Rc<[u8]> {
        self.recent
            .retain(|(_, at, _)| now.duration_since(*at) < SHARE_FOR);
        let recent = self.recent.iter().find(|(p, ..)| with_body && p == path);
        if let Some((.., bytes)) = recent {
            return Rc::clone(bytes);
        }
        let bytes: Rc<[u8]> = render(&answer(path), with_body).into();
        if with_body && bytes.len() >= SHARED_FROM {
            self.recent.push((path.to_string(), now, Rc::clone(&bytes)));
        }
        bytes
    }
}

/// One accepted connection and where it is in its exchange.
struct Client {
    stream: TcpStream,
    accepted: Instant,
    phase: Phase,
}

enum Phase {
    /// The request head read so far.
    Reading(Vec<u8>),
    /// The whole answer and how much of it the socket took.
    Writing { bytes: Rc<[u8]>, sent: usize },
}

/// Where a client stands after being serviced.
#[derive(Debug)]
enum Step {
    /// Waiting for the socket; keep it for the next poll.
    Pending,
    /// The answer went out whole.
    Done,
    /// The client closed before sending a whole request head.
    Closed,
    /// The socket failed.
    Failed(io::Error),
}

impl Server {
    /// Listens on `address` (`HOST:PORT`).
    pub fn bind(address: &str) -> io::Result<Server> {
        let listener = listen(address)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            clients: Vec::new(),
            turn: 0,
            shared: Shared::default(),
            accept_paused_until: None,
        })
    }

    /// What the listener waits for: new connections (unless accepting is
    /// paused), and each held client's next read or write.
    pub fn interests(&self, out: &mut Vec<Interest>) {
        if self
            .accept_paused_until
            .is_none_or(|until| Instant::now() >= until)
        {
            out.push(Interest::Read(self.listener.as_raw_fd()));
        }
        for client in &self.clients {
            let fd = client.stream.as_raw_fd();
            out.push(match client.phase {
                Phase::Reading(_) => Interest::Read(fd),
                Phase::Writing { .. } => Interest::Write(fd),
            });
        }
    }

    /// The bound address (useful when the port was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Advances every client without waiting on any socket, answering each
    /// whole request with `answer(path)`, then returns within about
    /// [`POLL_BUDGET`]. Held clients are serviced before new ones are
    /// accepted, so a client accepted last poll is read before any eviction.
    pub fn poll(&mut self, answer: &dyn Fn(&str) -> Answer) {
        let started = Instant::now();
        self.clients
            .retain(|client| started.duration_since(client.accepted) < CLIENT_DEADLINE);
        self.service_held(started, answer);
        self.accept_new(started, answer);
    }

    /// Services held clients round-robin until done or out of budget.
    fn service_held(&mut self, started: Instant, answer: &dyn Fn(&str) -> Answer) {
        let count = self.clients.len();
        let first = self.turn % count.max(1);
        self.turn = self.turn.wrapping_add(1);
        let mut finished = Vec::new();
        for index in (first..count).chain(0..first) {
            if started.elapsed() >= POLL_BUDGET {
                break;
            }
            if settled(self.clients[index].advance(answer, &mut self.shared)) {
                finished.push(index);
            }
        }
        finished.sort_unstable();
        for index in finished.into_iter().rev() {
            self.clients.remove(index);
        }
    }

    /// Accepts waiting connections until none wait, the budget is spent or
    /// [`ACCEPTS_PER_POLL`] were accepted. Each is serviced at once, since
    /// most clients send their request with the connection; one still
    /// pending is held, making room past the cap.
    fn accept_new(&mut self, started: Instant, answer: &dyn Fn(&str) -> Answer) {
        if self
            .accept_paused_until
            .is_some_and(|until| started < until)
        {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPTS_PER_POLL {
            if started.elapsed() >= POLL_BUDGET {
                return;
            }
            if let Some(until) = self.full_until(Instant::now()) {
                self.accept_paused_until = Some(until);
                return;
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: the connection waits in the
                    // queue, the listener stays readable; come back later.
                    log::debug!("health listener: accept failed: {e}; pausing accepts");
                    self.accept_paused_until = Some(started + ACCEPT_PAUSE);
                    return;
                }
            };
            let Some(mut client) = Client::new(stream) else {
                continue;
            };
            if settled(client.advance(answer, &mut self.shared)) {
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                self.make_room(answer);
            }
            self.clients.push(client);
        }
    }

    /// When the held clients are [`MAX_CLIENTS`] and none may make room
    /// yet ([`evictee`]): when the oldest still reading may.
    fn full_until(&self, now: Instant) -> Option<Instant> {
        if self.clients.len() < MAX_CLIENTS || evictee(&self.standing(now)).is_some() {
            return None;
        }
        let oldest = self.clients.iter().find(|c| c.reading())?;
        Some(oldest.accepted + EVICT_AFTER)
    }

    /// Each held client (oldest first): whether it is still reading its
    /// request, and how long it has been held at `now`.
    fn standing(&self, now: Instant) -> Vec<(bool, Duration)> {
        self.clients
            .iter()
            .map(|c| (c.reading(), now.saturating_duration_since(c.accepted)))
            .collect()
    }

    /// Drops the [`evictee`] for a new client, servicing it once more first:
    /// a request that arrived since its last read is answered, not lost.
    fn make_room(&mut self, answer: &dyn Fn(&str) -> Answer) {
        let index = evictee(&self.standing(Instant::now())).unwrap_or(0);
        if !settled(self.clients[index].advance(answer, &mut self.shared)) {
            log::debug!("health client dropped for a newer one ({MAX_CLIENTS} held)");
        }
        self.clients.remove(index);
    }
}

/// A listener on `address` with an accept queue of [`BACKLOG`]: std
/// listens with 128, which 300 idle connections overflow, and a probe's
/// connection would then wait for a SYN retry whatever `poll` does.
fn listen(address: &str) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted daemon can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether a client is finished with (answered, gone or failed); logs why
/// it was dropped when it was not answered.
fn settled(step: Step) -> bool {
    match step {
        Step::Pending => false,
        Step::Done => true,
        Step::Closed => {
            log::debug!("health client closed before a whole request");
            true
        }
        Step::Failed(e) => {
            log::debug!("health client dropped: {e}");
            true
        }
    }
}

/// Which held client to drop for a new one, given whether each (oldest
/// first) is still reading its request and how long it has been held: the
/// oldest still reading, once held [`EVICT_AFTER`], since it had the
/// longest chance; with none reading, the oldest, whose answer is stuck;
/// `None` while every client still reading is younger.
fn evictee(clients: &[(bool, Duration)]) -> Option<usize> {
    match clients.iter().position(|(reading, _)| *reading) {
        Some(oldest) => (clients[oldest].1 >= EVICT_AFTER).then_some(oldest),
        None => (!clients.is_empty()).then_some(0),
    }
}

impl Client {
    /// A client for a fresh connection, or `None` when the socket cannot
    /// be made non-blocking (it is closed then).
    fn new(stream: TcpStream) -> Option<Client> {
        if let Err(e) = stream.set_nonblocking(true) {
            log::debug!("health client dropped: {e}");
            return None;
        }
        Some(Client {
            stream,
            accepted: Instant::now(),
            phase: Phase::Reading(Vec::new()),
        })
    }

    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Reading(_))
    }

    /// Reads what has arrived and, once the head is whole (or too long),
    /// writes what the socket takes of the answer.
    fn advance(&mut self, answer: &dyn Fn(&str) -> Answer, shared: &mut Shared) -> Step {
        if let Phase::Reading(head) = &mut self.phase {
            match read_available(&mut self.stream, head) {
                Ok(false) => return Step::Closed,
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Step::Failed(e),
            }
            let Some(reply) = reply_to(head, answer, shared) else {
                return Step::Pending;
            };
            self.phase = Phase::Writing {
                bytes: reply,
                sent: 0,
            };
        }
        match &mut self.phase {
            Phase::Writing { bytes, sent } => write_available(&mut self.stream, bytes, sent),
            Phase::Reading(_) => Step::Pending,
        }
    }
}

/// Appends what has arrived to `head` until it is whole, longer than
/// [`MAX_HEAD`], or the socket would block (`Err(WouldBlock)`). `Ok(false)`
/// when the peer closed first.
fn read_available(stream: &mut TcpStream, head: &mut Vec<u8>) -> io::Result<bool> {
    let mut buffer = [0u8; 1024];
    while head_end(head).is_none() && head.len() <= MAX_HEAD {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(true)
}

/// Writes from `bytes[*sent..]` until all is sent (`Done`) or the socket
/// would block (`Pending`).
fn write_available(stream: &mut TcpStream, bytes: &[u8], sent: &mut usize) -> Step {
    while *sent < bytes.len() {
        match stream.write(&bytes[*sent..]) {
            Ok(0) => return Step::Failed(io::ErrorKind::WriteZero.into()),
            Ok(written) => *sent += written,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Failed(e),
        }
    }
    Step::Done
}

/// The end of a whole request head (just past its blank line), if any.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// What a request asks for.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    /// A GET of this path (query dropped).
    Get(&'a str),
    /// A HEAD of this path (query dropped).
    Head(&'a str),
    /// Any other method, or no target.
    Unsupported,
}

/// How many header lines a request head may have; past it the request is
/// not served (health probes send a handful).
const MAX_HEADERS: usize = 64;

/// Reads the request line of a whole head (with `httparse`).
fn parse_request(head: &[u8]) -> Request<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Request::Unsupported;
    }
    let path = request.path.map(|t| t.split('?').next().unwrap_or(t));
    match (request.method, path) {
        (Some("GET"), Some(path)) => Request::Get(path),
        (Some("HEAD"), Some(path)) => Request::Head(path),
        _ => Request::Unsupported,
    }
}

/// The bytes answering `head` once it is whole or too long, else `None`;
/// a large one `shared` with the other clients asking the same.
fn reply_to(head: &[u8], answer: &dyn Fn(&str) -> Answer, shared: &mut Shared) -> Option<Rc<[u8]>> {
    let Some(end) = head_end(head).filter(|&end| end <= MAX_HEAD) else {
        return (head.len() > MAX_HEAD).then(|| {
            let too_long = (431, "text/plain", "request head too long\n".into());
            render(&too_long, true).into()
        });
    };
    let now = Instant::now();
    Some(match parse_request(&head[..end]) {
        Request::Get(path) => shared.reply(path, true, answer, now),
        Request::Head(path) => shared.reply(path, false, answer, now),
        Request::Unsupported => {
            let refused = (405, "text/plain", "method not allowed\n".into());
            render(&refused, true).into()
        }
    })
}

/// An HTTP/1.1 response closing the connection; the headers always carry
/// the body's length, the body itself only `with_body` (not for HEAD).
fn render((code, content_type, body): &Answer, with_body: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut bytes = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far above the budget, so a loaded machine does not fail it, and far
    /// below what a blocking read of one client costs.
    const SLOW_POLL: Duration = Duration::from_millis(100);

    fn healthz(path: &str) -> Answer {
        (200, "text/plain", format!("path {path}\n"))
    }

    /// One poll, asserting it did not hold the thread.
    fn timed_poll(server: &mut Server) {
        let started = Instant::now();
        server.poll(&healthz);
        let took = started.elapsed();
        assert!(took < SLOW_POLL, "poll took {took:?}");
    }

    /// What a non-blocking client has received: `None` while nothing came,
    /// else the bytes up to the server's close.
    fn received(client: &mut TcpStream) -> Option<String> {
        let mut reply = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            match client.read(&mut buffer) {
                Ok(0) => return Some(String::from_utf8_lossy(&reply).into()),
                Ok(read) => reply.extend_from_slice(&buffer[..read]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && reply.is_empty() => return None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Some(String::from_utf8_lossy(&reply).into())
                }
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// Polls every 10 ms (each poll timed) until `client` got an answer;
    /// panics after `polls` polls.
    fn poll_until_answered(server: &mut Server, client: &mut TcpStream, polls: usize) -> String {
        for _ in 0..polls {
            timed_poll(server);
            if let Some(reply) = received(client) {
                return reply;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no answer within {polls} polls");
    }

    #[test]
    fn answers_waiting_clients_without_blocking() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        // Nobody waiting: returns at once.
        server.poll(&|_| unreachable!());
        let mut client = TcpStream::connect(address).unwrap();
        client
            .write_all(b"GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        server.poll(&|path| (200, "text/plain", format!("path {path}\n")));
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\npath /healthz\n"), "{reply}");
    }

    #[test]
    fn a_dribbling_client_is_kept_across_polls_and_answered() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        for byte in &request[..request.len() - 1] {
            client.write_all(&[*byte]).unwrap();
            timed_poll(&mut server);
            assert_eq!(received(&mut client), None, "answered a partial head");
        }
        client.write_all(&request[request.len() - 1..]).unwrap();
        let reply = poll_until_answered(&mut server, &mut client, 100);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\npath /healthz\n"), "{reply}");
    }

    #[test]
    fn a_fresh_client_is_answered_past_300_idle_connections() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        // All queued before any poll, as while the loop runs a pass. A
        // handshake the kernel would not queue waits out a 1 s SYN
        // retransmission, past this timeout. (Needs net.core.somaxconn of
        // at least 302, the default since Linux 5.4.)
        let connect = || {
            TcpStream::connect_timeout(&address, Duration::from_millis(500))
                .expect("the kernel did not queue the handshake")
        };
        let _idle: Vec<_> = (0..300).map(|_| connect()).collect();
        let mut fresh = connect();
        fresh.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        fresh.set_nonblocking(true).unwrap();
        let reply = poll_until_answered(&mut server, &mut fresh, 20);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert_eq!(server.clients.len(), MAX_CLIENTS);
    }

    /// A client connected to `address` that has sent nothing, once `server`
    /// holds it.
    fn held_idle(server: &mut Server, address: SocketAddr) -> TcpStream {
        let client = TcpStream::connect(address).unwrap();
        let held = server.clients.len();
        for _ in 0..100 {
            timed_poll(server);
            if server.clients.len() > held || held == MAX_CLIENTS {
                return client;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the connection was never accepted");
    }

    #[test]
    fn a_client_accepted_before_its_request_survives_a_flood_of_new_connections() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let _idle: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| held_idle(&mut server, address))
            .collect();
        // The probe is held before its request, and a flood queues behind it.
        let mut probe = TcpStream::connect(address).unwrap();
        let _flood: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        timed_poll(&mut server);
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        probe.set_nonblocking(true).unwrap();
        let reply = poll_until_answered(&mut server, &mut probe, 20);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    }

    #[test]
    fn an_evicted_client_whose_request_arrived_is_answered_not_dropped() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let mut probe = held_idle(&mut server, address);
        let _idle: Vec<_> = (1..MAX_CLIENTS)
            .map(|_| held_idle(&mut server, address))
            .collect();
        // The probe is the oldest held: the next client evicts it.
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let _newer = TcpStream::connect(address).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        server.accept_new(Instant::now(), &healthz);
        probe.set_nonblocking(true).unwrap();
        let reply = received(&mut probe).expect("the probe got an answer or a close");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    }

    #[test]
    fn a_client_past_its_deadline_is_dropped_whatever_it_sends() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let connected = Instant::now();
        client.set_nonblocking(true).unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\nX: ").unwrap();
        let dropped = loop {
            timed_poll(&mut server);
            if let Some(reply) = received(&mut client) {
                assert_eq!(reply, "", "answered an unfinished head");
                break connected.elapsed();
            }
            assert!(connected.elapsed() < CLIENT_DEADLINE * 2, "never dropped");
            // Still sending, though slowly: the deadline drops it anyway.
            let _ = client.write_all(b"a");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(dropped >= CLIENT_DEADLINE, "dropped early, at {dropped:?}");
        assert!(server.clients.is_empty());
    }

    #[test]
    fn head_gets_the_headers_and_no_body() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        client.write_all(b"HEAD /healthz HTTP/1.1\r\n\r\n").unwrap();
        client.set_nonblocking(true).unwrap();
        let reply = poll_until_answered(&mut server, &mut client, 100);
        // "path /healthz\n" is 14 bytes.
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("\r\nContent-Length: 14\r\n"), "{reply}");
        assert!(reply.ends_with("\r\nConnection: close\r\n\r\n"), "{reply}");
    }

    #[test]
    fn a_too_long_head_is_answered_431() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let mut request = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        request.resize(MAX_HEAD + 100, b'a');
        client.write_all(&request).unwrap();
        client.set_nonblocking(true).unwrap();
        let reply = poll_until_answered(&mut server, &mut client, 100);
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        let cases: [(&[u8], Option<usize>); 6] = [
            (b"", None),
            (b"GET / HTTP/1.1\r\n", None),
            (b"GET / HTTP/1.1\r\n\r", None),
            (b"GET / HTTP/1.1\r\n\r\n", Some(18)),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody", Some(27)),
            (b"\r\n\r\n", Some(4)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                head_end(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn parse_request_reads_method_and_path() {
        let cases: [(&[u8], Request); 9] = [
            (b"GET /healthz HTTP/1.1\r\n\r\n", Request::Get("/healthz")),
            (
                b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
                Request::Get("/metrics"),
            ),
            (b"HEAD /readyz HTTP/1.1\r\n\r\n", Request::Head("/readyz")),
            (b"POST /healthz HTTP/1.1\r\n\r\n", Request::Unsupported),
            (b"get /healthz HTTP/1.1\r\n\r\n", Request::Unsupported),
            (b"GET\r\n\r\n", Request::Unsupported),
            (b"GET  /healthz HTTP/1.1\r\n\r\n", Request::Unsupported),
            (b"\r\n\r\n", Request::Unsupported),
            (b"GET /\xff HTTP/1.1\r\n\r\n", Request::Unsupported),
        ];
        for (head, expected) in cases {
            assert_eq!(
                parse_request(head),
                expected,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        let probe =
            b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nUser-Agent: kube-probe/1.37\r\n\r\n";
        assert_eq!(parse_request(probe), Request::Get("/healthz"));
        let mut crowded = b"GET /healthz HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            crowded.extend(format!("X-{i}: y\r\n").bytes());
        }
        crowded.extend(b"\r\n");
        assert_eq!(parse_request(&crowded), Request::Unsupported);
    }

    #[test]
    fn clients_that_never_read_share_one_large_answer() {
        let renders = std::cell::Cell::new(0);
        let big = |_: &str| -> Answer {
            renders.set(renders.get() + 1);
            (200, "text/plain", "m".repeat(4 << 20))
        };
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..32 {
            // A small receive window, so no socket takes the whole answer.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&address.into()).unwrap();
            let mut client: TcpStream = socket.into();
            client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            clients.push(client);
            server.poll(&big);
        }
        for _ in 0..10 {
            server.poll(&big);
        }
        // 32 clients that read nothing hold their answers, and share one.
        assert_eq!(renders.get(), 1);
        let held: Vec<&Rc<[u8]>> = server
            .clients
            .iter()
            .filter_map(|c| match &c.phase {
                Phase::Writing { bytes, .. } => Some(bytes),
                Phase::Reading(_) => None,
            })
            .collect();
        assert_eq!(held.len(), 32);
        assert!(held.iter().all(|bytes| Rc::ptr_eq(bytes, held[0])));
        // Small answers are rendered for each request; a second later a
        // large one is rendered again.
        let mut shared = Shared::default();
        let now = Instant::now();
        let first = shared.reply("/metrics", true, &big, now);
        assert!(Rc::ptr_eq(
            &first,
            &shared.reply("/metrics", true, &big, now + SHARE_FOR / 2)
        ));
        assert!(!Rc::ptr_eq(
            &first,
            &shared.reply("/metrics", true, &big, now + SHARE_FOR)
        ));
        let small = shared.reply("/healthz", true, &healthz, now);
        assert!(!Rc::ptr_eq(
            &small,
            &shared.reply("/healthz", true, &healthz, now)
        ));
        drop(clients);
    }

    #[test]
    fn a_failing_accept_pauses_the_listener_instead_of_spinning() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let mut interests = Vec::new();
        server.interests(&mut interests);
        assert_eq!(interests.len(), 1, "the listener");
        server.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        interests.clear();
        server.interests(&mut interests);
        assert!(interests.is_empty(), "not polled while paused");
        // A connection waiting meanwhile is accepted once the pause is over.
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        client.set_nonblocking(true).unwrap();
        server.poll(&healthz);
        assert_eq!(received(&mut client), None, "paused");
        std::thread::sleep(ACCEPT_PAUSE);
        let reply = poll_until_answered(&mut server, &mut client, 50);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        interests.clear();
        server.interests(&mut interests);
        assert_eq!(interests.len(), 1);
    }

    #[test]
    fn reply_to_waits_answers_or_refuses() {
        let cases: [(&[u8], Option<&str>); 5] = [
            (b"GET /healthz HTTP/1.1\r\n", None),
            (
                b"GET /healthz HTTP/1.1\r\n\r\n",
                Some("HTTP/1.1 200 OK\r\n"),
            ),
            (
                b"HEAD /healthz HTTP/1.1\r\n\r\n",
                Some("HTTP/1.1 200 OK\r\n"),
            ),
            (
                b"DELETE /healthz HTTP/1.1\r\n\r\n",
                Some("HTTP/1.1 405 Method"),
            ),
            (&[b'a'; MAX_HEAD + 1], Some("HTTP/1.1 431 Request")),
        ];
        for (head, expected) in cases {
            let reply = reply_to(head, &healthz, &mut Shared::default())
                .map(|r| String::from_utf8(r.to_vec()).unwrap());
            let matches = match (&reply, expected) {
                (Some(reply), Some(start)) => reply.starts_with(start),
                (reply, expected) => reply.is_none() && expected.is_none(),
            };
            assert!(matches, "{:?}: {reply:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn evictee_is_the_oldest_still_reading_once_it_had_its_chance() {
        type Held<'a> = &'a [(bool, Duration)];
        let old = EVICT_AFTER;
        let young = EVICT_AFTER / 2;
        let cases: [(Held, Option<usize>); 7] = [
            (&[(true, old)], Some(0)),
            (&[(true, old), (true, old), (true, young)], Some(0)),
            (&[(false, old), (true, old), (true, young)], Some(1)),
            (&[(false, old), (false, old), (true, old)], Some(2)),
            (&[(false, old), (false, young)], Some(0)),
            (&[(false, old), (true, young), (true, young)], None),
            (&[], None),
        ];
        for (clients, expected) in cases {
            assert_eq!(evictee(clients), expected, "{clients:?}");
        }
    }

    #[test]
    fn a_probe_whose_request_is_late_outlives_a_flood_that_keeps_coming() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let _idle: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| held_idle(&mut server, address))
            .collect();
        std::thread::sleep(EVICT_AFTER);
        // Accepted before its request, with a flood behind it that takes
        // the place of every older client.
        let mut probe = TcpStream::connect(address).unwrap();
        let mut flood: Vec<_> = (1..MAX_CLIENTS)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        server.poll(&healthz);
        // More keep coming before its request does: it must not be the one
        // dropped for them.
        flood.extend((0..MAX_CLIENTS).map(|_| TcpStream::connect(address).unwrap()));
        std::thread::sleep(Duration::from_millis(5));
        server.poll(&healthz);
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        probe.set_nonblocking(true).unwrap();
        let reply = poll_until_answered(&mut server, &mut probe, 50);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    }

    #[test]
    fn a_full_house_of_young_clients_makes_new_ones_wait_not_drops_them() {
        let mut server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let idle: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| held_idle(&mut server, address))
            .collect();
        // A probe whose request comes a little late: it is not accepted
        // while every held client is young, so none of them is dropped.
        let mut probe = TcpStream::connect(address).unwrap();
        server.poll(&healthz);
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        assert!(server.accept_paused_until.is_some(), "accepts wait");
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        probe.set_nonblocking(true).unwrap();
        std::thread::sleep(EVICT_AFTER);
        let reply = poll_until_answered(&mut server, &mut probe, 50);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        drop(idle);
    }
}
