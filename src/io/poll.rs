//! `poll(2)`: the one system call the thread sleeps in. What it waits for
//! and what it does on waking is [`crate::io::reactor`]'s.

use std::os::fd::RawFd;
use std::time::Duration;

/// What the loop waits for on one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Bytes (or a new connection, or the peer's close) to read.
    Read(RawFd),
    /// Room to write.
    Write(RawFd),
}

/// The longest sleep in place of a `poll` that failed (it never should), so
/// that a caller waiting for long still looks again.
const POLL_FAILED_PAUSE: Duration = Duration::from_millis(50);

/// Sleeps until one of `interests` is ready, a signal arrives, or `timeout`
/// passes (at most that long in any case, rounded up to a whole
/// millisecond; if `poll` fails otherwise, a plain sleep of at most
/// [`POLL_FAILED_PAUSE`]). Whether the
/// first of `interests` is ready (or closed, or failed).
pub fn until_ready(interests: &[Interest], timeout: Duration) -> bool {
    let mut fds: Vec<libc::pollfd> = interests
        .iter()
        .map(|interest| match *interest {
            Interest::Read(fd) => (fd, libc::POLLIN),
            Interest::Write(fd) => (fd, libc::POLLOUT),
        })
        .map(|(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd structs for the whole call; poll only writes their `revents`.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
        std::thread::sleep(timeout.min(POLL_FAILED_PAUSE));
    }
    ready > 0 && fds.first().is_some_and(|fd| fd.revents != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    #[test]
    fn a_ready_socket_ends_the_wait_and_none_sleeps_the_whole_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let interests = [Interest::Read(server.as_raw_fd())];

        let started = Instant::now();
        until_ready(&interests, Duration::from_millis(300));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "nothing was ready"
        );

        client.write_all(b"x").unwrap();
        let started = Instant::now();
        until_ready(&interests, Duration::from_secs(30));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the byte"
        );

        let started = Instant::now();
        until_ready(
            &[Interest::Write(client.as_raw_fd())],
            Duration::from_secs(30),
        );
        assert!(started.elapsed() < Duration::from_secs(10), "room to write");
    }
}
