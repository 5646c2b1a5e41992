//! Every wait of the one thread, in one place. The reactor owns what the
//! thread waits for besides the request in flight: the health listener and
//! its clients, the [`Status`] they are answered from, and the signal flags.
//! Two waits use it:
//!
//! - [`wait_for`]: a request's socket (the transport's connect and reads,
//!   a watch stream's opening). While it waits, health checks are answered,
//!   so a slow Vault or API server never delays a probe; the request still
//!   ends by its deadline.
//! - [`sleep`]: the idle loop, with the watch streams' sockets, so a watch
//!   event or a health check wakes it at once.
//!
//! The daemon installs its reactor for the thread ([`Reactor::install`]);
//! with none installed (tests, tools) the waits only wait. The reactor knows
//! nothing of the layers above: the passes ask it ([`stopping`]) and tell it
//! ([`status`]) between their steps, and the one thing it runs for them is
//! the Lease tick the daemon registers ([`set_lease_tick`]), at every request
//! boundary and while a request waits, so that no chain of requests, nor
//! one slow request, outlasts the Lease.

use crate::io::poll::{self, Interest};
use crate::io::serve::{Answer, Server};
use crate::policy::metrics::Metrics;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest one `poll` of [`wait_for`] sleeps before it asks again what
/// to wait for (the health listener may have paused its accepts).
const SLICE: Duration = Duration::from_millis(50);

/// Flags the signal handlers set.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: stop at the next step.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: run both passes now.
    pub run_now: Arc<AtomicBool>,
}

impl Signals {
    /// Registers the handlers (they only set flags).
    pub fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let signals = Signals::default();
        signal_hook::flag::register(SIGTERM, Arc::clone(&signals.stop))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&signals.stop))?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&signals.run_now))?;
        Ok(signals)
    }
}

/// What `/readyz` answers from. A leader (or the only replica) is ready
/// when its last passes reached their servers; a standby when its Lease
/// requests reach the API server, so that it does not hold up a rolling
/// update of the daemon's own Deployment.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The last collector pass reached the API server.
    pub collected: bool,
    /// The last reloader pass reached a Vault server.
    pub reloaded: bool,
    /// `Some(reaches the API server)` while this replica is a standby.
    pub standby: Option<bool>,
}

impl Readiness {
    fn ready(&self) -> bool {
        match self.standby {
            Some(reaches_api) => reaches_api,
            None => self.collected && self.reloaded,
        }
    }
}

/// What the health listener answers from: the loop writes it after each
/// pass and Lease tick.
#[derive(Default)]
pub struct Status {
    /// Served on `/metrics`.
    pub metrics: Metrics,
    /// Served on `/readyz`.
    pub readiness: Readiness,
}

/// The thread's waits: the health listener, its answers, the signals and
/// the Lease tick.
pub struct Reactor {
    server: Option<Server>,
    status: Status,
    signals: Signals,
    /// Renews the Lease when due (it knows when); `None` while it runs.
    lease_tick: Option<Box<dyn FnMut()>>,
}

thread_local! {
    static REACTOR: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

/// Runs `f` on the thread's reactor, unless none is installed or `f`'s
/// caller is already inside it (nothing in it waits, so that never
/// happens; this only keeps a mistake from panicking).
fn with<R>(f: impl FnOnce(&mut Reactor) -> R) -> Option<R> {
    REACTOR.with(|cell| cell.try_borrow_mut().ok()?.as_mut().map(f))
}

impl Reactor {
    /// A reactor answering on `server` (none: no health checks) and
    /// reading `signals`.
    pub fn new(server: Option<Server>, signals: Signals) -> Reactor {
        Reactor {
            server,
            status: Status::default(),
            signals,
            lease_tick: None,
        }
    }

    /// Makes this the thread's reactor, in place of any before it.
    pub fn install(self) {
        REACTOR.with(|cell| *cell.borrow_mut() = Some(self));
    }

    /// Takes the thread's reactor away (the waits then only wait).
    pub fn uninstall() -> Option<Reactor> {
        REACTOR.with(|cell| cell.borrow_mut().take())
    }

    fn interests(&self, out: &mut Vec<Interest>) {
        if let Some(server) = &self.server {
            server.interests(out);
        }
    }

    /// Answers the health clients that are ready, without waiting.
    fn serve(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let status = &self.status;
            server.poll(&|path| answer(path, status));
        }
    }
}

/// Sets what renews the Lease: run at every wait of a request and while
/// it waits, with the reactor free (its own request's waits answer health
/// checks and do not run it again). It must return at once when no
/// renewal is due.
pub fn set_lease_tick(tick: Box<dyn FnMut()>) {
    with(|reactor| reactor.lease_tick = Some(tick));
}

/// Runs the Lease tick, unless none is set or it is running already.
fn tick_lease() {
    let Some(mut tick) = with(|reactor| reactor.lease_tick.take()).flatten() else {
        return;
    };
    tick();
    with(|reactor| {
        reactor.lease_tick.get_or_insert(tick);
    });
}

/// Waits until `socket` is ready or `deadline` passes (`None`: never),
/// answering health checks and renewing the Lease meanwhile; `true` when
/// the socket is ready. The thread waits on all these sockets at once, so
/// neither the request nor a health check waits for the other, and a chain
/// of fast requests still answers a waiting probe at each of them.
pub fn wait_for(socket: Interest, deadline: Option<Instant>) -> bool {
    let mut interests = Vec::new();
    loop {
        tick_lease();
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            return false;
        }
        interests.clear();
        interests.push(socket);
        with(|reactor| reactor.interests(&mut interests));
        // In slices: what the listener waits for (an accept that was
        // paused) is asked again at least this often.
        let ready = poll::until_ready(&interests, left.min(SLICE));
        with(Reactor::serve);
        if ready {
            return true;
        }
    }
}

/// The idle loop's wait: sleeps until one of `streams` or a health client
/// is ready, or `timeout` passes, then answers the health clients that are
/// ready. Reading the streams is the caller's.
pub fn sleep(streams: &[Interest], timeout: Duration) {
    let mut interests = streams.to_vec();
    with(|reactor| reactor.interests(&mut interests));
    poll::until_ready(&interests, timeout);
    with(Reactor::serve);
}

/// Answers what the health listener and its clients have sent, without
/// waiting: between two steps of a pass, which may send no request (and so
/// not wait in [`wait_for`]) for a long stretch.
pub fn serve_ready() {
    sleep(&[], Duration::ZERO);
}

/// Whether SIGTERM or SIGINT came: the loop stops at its next step.
pub fn stopping() -> bool {
    with(|reactor| reactor.signals.stop.load(Ordering::Relaxed)).unwrap_or(false)
}

/// Whether SIGHUP came since the last call.
pub fn run_now() -> bool {
    with(|reactor| reactor.signals.run_now.swap(false, Ordering::Relaxed)).unwrap_or(false)
}

/// Changes what the health listener answers from; `None` without a
/// reactor.
pub fn status<R>(f: impl FnOnce(&mut Status) -> R) -> Option<R> {
    with(|reactor| f(&mut reactor.status))
}

fn answer(path: &str, status: &Status) -> Answer {
    let readiness = &status.readiness;
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match (readiness.ready(), readiness.standby.is_some()) {
            (true, false) => (200, "text/plain", "ok\n".into()),
            (true, true) => (200, "text/plain", "ok (standby)\n".into()),
            (false, false) => (
                503,
                "text/plain",
                "not ready: the last pass did not reach its server\n".into(),
            ),
            (false, true) => (
                503,
                "text/plain",
                "not ready: standby cannot reach the API server\n".into(),
            ),
        },
        "/metrics" => (200, "text/plain; version=0.0.4", status.metrics.render()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn probe(address: std::net::SocketAddr, path: &str) -> std::thread::JoinHandle<String> {
        let request = format!("GET {path} HTTP/1.1\r\n\r\n");
        std::thread::spawn(move || {
            let mut client = TcpStream::connect(address).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            client.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            reply
        })
    }

    #[test]
    fn a_health_check_is_answered_while_a_socket_is_waited_for() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        Reactor::new(Some(server), Signals::default()).install();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let prober = probe(address, "/healthz");
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(!wait_for(Interest::Read(quiet.as_raw_fd()), Some(deadline)));
        Reactor::uninstall();
        let reply = prober.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    }

    #[test]
    fn a_ready_socket_ends_the_wait_and_without_a_reactor_it_only_waits() {
        Reactor::uninstall();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let read = Interest::Read(server.as_raw_fd());
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(!wait_for(read, Some(soon)), "nothing to read");
        assert!(Instant::now() >= soon);
        client.write_all(b"x").unwrap();
        assert!(wait_for(
            read,
            Some(Instant::now() + Duration::from_secs(30))
        ));
        assert!(!stopping());
        assert!(status(|_| ()).is_none());
    }

    #[test]
    fn the_status_written_is_the_one_answered_and_signals_are_read_once() {
        let signals = Signals::default();
        let server = Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        Reactor::new(Some(server), signals.clone()).install();
        status(|status| status.metrics.watched_workloads = 42);
        let prober = probe(address, "/metrics");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !prober.is_finished() && Instant::now() < deadline {
            sleep(&[], Duration::from_millis(50));
        }
        let reply = prober.join().unwrap();
        assert!(reply.contains("watched_workloads 42"), "{reply}");
        signals.run_now.store(true, Ordering::Relaxed);
        assert!(run_now());
        assert!(!run_now(), "once per signal");
        signals.stop.store(true, Ordering::Relaxed);
        assert!(stopping());
        Reactor::uninstall();
    }

    #[test]
    fn the_lease_tick_runs_at_each_wait_and_never_inside_itself() {
        use std::cell::Cell;
        use std::rc::Rc;
        Reactor::new(None, Signals::default()).install();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let read = Interest::Read(quiet.as_raw_fd());
        let (runs, depth) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (counted, deepest) = (Rc::clone(&runs), Rc::clone(&depth));
        set_lease_tick(Box::new(move || {
            counted.set(counted.get() + 1);
            deepest.set(deepest.get() + 1);
            // The tick's own request waits: it must not run the tick again.
            wait_for(read, Some(Instant::now() + Duration::from_millis(1)));
            assert_eq!(deepest.get(), 1, "never nested");
            deepest.set(deepest.get() - 1);
        }));
        // 180 ms in slices of at most 50: at the start and after each slice.
        wait_for(read, Some(Instant::now() + Duration::from_millis(180)));
        Reactor::uninstall();
        assert!(runs.get() >= 4, "{} runs", runs.get());
    }

    #[test]
    fn a_standby_is_ready_when_it_reaches_the_api_server() {
        let mut status = Status::default();
        status.readiness.standby = Some(true);
        assert_eq!(answer("/readyz", &status).0, 200);
        assert_eq!(answer("/readyz", &status).2, "ok (standby)\n");
        status.readiness.standby = Some(false);
        assert_eq!(answer("/readyz", &status).0, 503);
        // Leading again: its own passes decide.
        status.readiness.standby = None;
        assert_eq!(answer("/readyz", &status).0, 503);
    }

    #[test]
    fn readiness_needs_both_passes() {
        let mut status = Status::default();
        assert_eq!(answer("/healthz", &status).0, 200);
        assert_eq!(answer("/readyz", &status).0, 503);
        status.readiness.collected = true;
        status.readiness.reloaded = true;
        assert_eq!(answer("/readyz", &status).0, 200);
        assert_eq!(answer("/nope", &status).0, 404);
        assert!(answer("/metrics", &status)
            .2
            .contains("watched_workloads 0"));
    }
}
