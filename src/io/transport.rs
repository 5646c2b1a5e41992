//! The TCP connections of the HTTP agent (see [`crate::io::http::agent`]),
//! whose every wait also serves the loop: connecting and waiting for an
//! answer go through [`reactor::wait_for`], so a health check that arrives
//! while a Vault or API request is in flight is answered at once, and the
//! request still ends by its timeout.

use crate::io::poll::{self, Interest};
use crate::io::reactor;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::Instant;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};
use ureq::Timeout;

/// Opens [`Socket`]s; in a chain, passes on a transport an earlier
/// connector made (a CONNECT proxy's).
#[derive(Debug, Default)]
pub struct Connect;

/// One TCP connection; reads wait in [`reactor::wait_for`].
pub struct Socket {
    /// Shared (weakly) with the agent's shutdown handle, as ureq's own.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
}

impl<In: Transport> Connector<In> for Connect {
    type Out = Either<In, Socket>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let stream =
            connect_any(&details.addrs, deadline(details.timeout)).map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => ureq::Error::Timeout(Timeout::Connect),
                _ => e.into(),
            })?;
        let config = details.config;
        stream.set_nodelay(config.no_delay())?;
        let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
        let socket = Socket {
            stream: Arc::new(stream),
            buffers,
        };
        (details.register_shutdown)(socket.shutdown_handle())?;
        Ok(Some(Either::B(socket)))
    }
}

/// When a wait of `timeout` ends (`None`: never).
fn deadline(timeout: NextTimeout) -> Option<Instant> {
    timeout
        .not_zero()
        .and_then(|left| Instant::now().checked_add(*left))
}

/// The part of the time to `deadline` one address gets when `more` others
/// follow it: half of what is left, or all of it for the last one.
fn share(deadline: Option<Instant>, more: usize) -> Option<Instant> {
    let deadline = deadline?;
    if more == 0 {
        return Some(deadline);
    }
    let now = Instant::now();
    Some(now + deadline.saturating_duration_since(now) / 2)
}

/// A connection to the first of `addrs` that takes one by `deadline`
/// (`None`: no limit), each given its [`share`] of the time; the last
/// failure when none does.
pub fn connect_any(addrs: &[SocketAddr], deadline: Option<Instant>) -> io::Result<TcpStream> {
    let mut failure = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for (index, addr) in addrs.iter().enumerate() {
        match connect(*addr, share(deadline, addrs.len() - 1 - index)) {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

/// A blocking TCP connection to `addr` by `deadline` (`None`: no limit;
/// past it, `TimedOut`), connected without blocking so that the wait
/// serves the loop.
fn connect(addr: SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Type};
    let socket =
        socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if !reactor::wait_for(Interest::Write(socket.as_raw_fd()), deadline) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

impl Socket {
    fn shutdown_handle(&self) -> Weak<dyn ShutdownHandle> {
        Arc::downgrade(&self.stream) as Weak<dyn ShutdownHandle>
    }
}

impl Transport for Socket {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let left = remaining(timeout)?;
        self.stream.set_write_timeout(left)?;
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| timed_out(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let left = remaining(timeout)?;
        let ready = Interest::Read(self.stream.as_raw_fd());
        if !reactor::wait_for(ready, deadline(timeout)) {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        // Ready, so the read does not wait; the timeout guards a spurious wake.
        self.stream.set_read_timeout(left)?;
        let input = self.buffers.input_append_buf();
        let read = loop {
            match (&*self.stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => break result.map_err(|e| timed_out(e, timeout))?,
            }
        };
        self.buffers.input_appended(read);
        Ok(read > 0)
    }

    /// Open while nothing is there to read: a pooled connection the server
    /// closed (or wrote to unasked) is readable.
    fn is_open(&mut self) -> bool {
        let ready = [Interest::Read(self.stream.as_raw_fd())];
        !poll::until_ready(&ready, std::time::Duration::ZERO)
    }
}

/// The time `timeout` leaves (`None`: no limit), or the timeout error when
/// none is left.
fn remaining(timeout: NextTimeout) -> Result<Option<std::time::Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|left| *left))
}

/// A socket error as ureq reports it: a timed-out (or would-block, which a
/// socket timeout also gives) read or write is `timeout`'s error.
fn timed_out(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ureq::Error::Timeout(timeout.reason),
        _ => e.into(),
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::serve::Server;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Reads one request head from `reader`; `false` when the peer closed.
    fn read_head(reader: &mut impl BufRead) -> bool {
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            if line == "\r\n" {
                return true;
            }
        }
    }

    /// A server that answers each request on a connection once `go` says
    /// so (or at once without it), and counts its accepts.
    fn upstream(go: Option<mpsc::Receiver<()>>) -> (SocketAddr, mpsc::Receiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (accepted, accepts) = mpsc::channel();
        std::thread::spawn(move || {
            for (count, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let _ = accepted.send(count + 1);
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                while read_head(&mut reader) {
                    if let Some(go) = &go {
                        go.recv_timeout(Duration::from_secs(30)).unwrap();
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes";
                    stream.write_all(answer).unwrap();
                }
            }
        });
        (address, accepts)
    }

    fn agent(timeout: Duration) -> ureq::Agent {
        crate::io::http::agent(timeout, &crate::io::http::Tls::default(), None).unwrap()
    }

    #[test]
    fn a_health_check_is_answered_while_a_request_waits_for_its_answer() {
        let health = Server::bind("127.0.0.1:0").unwrap();
        let health_address = health.local_addr().unwrap();
        reactor::Reactor::new(Some(health), reactor::Signals::default()).install();
        let (go, hold) = mpsc::channel();
        let (address, _) = upstream(Some(hold));
        // The upstream answers only after the health check was answered, so
        // this passes only when the request's wait serves the listener.
        let probe = std::thread::spawn(move || {
            let mut client = TcpStream::connect(health_address).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            go.send(()).unwrap();
            reply
        });
        let mut response = agent(Duration::from_secs(5))
            .get(format!("http://{address}/v1/secret"))
            .call()
            .expect("the request is answered after the health check");
        assert_eq!(response.body_mut().read_to_string().unwrap(), "yes");
        let reply = probe.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        reactor::Reactor::uninstall();
    }

    #[test]
    fn a_request_without_an_answer_ends_at_its_timeout() {
        let (_go, hold) = mpsc::channel();
        let (address, _) = upstream(Some(hold));
        let result = agent(Duration::from_millis(300))
            .get(format!("http://{address}/"))
            .call();
        assert!(matches!(result, Err(ureq::Error::Timeout(_))), "{result:?}");
    }

    #[test]
    fn a_kept_alive_connection_is_reused_and_a_refused_one_is_an_error() {
        let (address, accepts) = upstream(None);
        let agent = agent(Duration::from_secs(10));
        for _ in 0..3 {
            let mut response = agent.get(format!("http://{address}/")).call().unwrap();
            assert_eq!(response.body_mut().read_to_string().unwrap(), "yes");
        }
        assert_eq!(accepts.try_iter().last(), Some(1), "one connection for all");

        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let result = agent.get(format!("http://{closed}/")).call();
        assert!(matches!(result, Err(ureq::Error::Io(_))), "{result:?}");
    }
}
