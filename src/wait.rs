//! Waiting for the loop's sockets instead of sleeping: the idle loop sleeps
//! until a health client, a new connection or a watch stream has something
//! to read (or room to write), or the idle poll runs out. So a health check
//! is answered, and a watch event applied, as soon as it arrives.
//!
//! A request's own waits (see [`crate::transport`]) go through
//! [`for_socket`], which also wakes for what the loop has registered with
//! [`set_meanwhile`], so a health check is answered while a Vault or API
//! request is in flight rather than after it.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

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

/// The longest one `poll` of [`for_socket`] sleeps before it asks again
/// what to wait for (the health listener may have paused its accepts).
const SLICE: Duration = Duration::from_millis(50);

/// What the loop keeps doing while its thread waits inside a request.
pub trait Meanwhile {
    /// Adds the sockets whose readiness means there is work to do.
    fn interests(&self, out: &mut Vec<Interest>);

    /// Does that work without waiting on any socket.
    fn serve(&mut self);
}

thread_local! {
    static MEANWHILE: RefCell<Option<Box<dyn Meanwhile>>> = const { RefCell::new(None) };
}

/// Sets what every wait of [`for_socket`] on this thread does meanwhile
/// (`None`: nothing), and returns what was set before.
pub fn set_meanwhile(work: Option<Box<dyn Meanwhile>>) -> Option<Box<dyn Meanwhile>> {
    MEANWHILE.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), work))
}

/// Runs `f` on what is set meanwhile, unless nothing is or a wait inside
/// it is already doing so (the work never waits, so never nests; this only
/// keeps a mistake from panicking).
fn with_meanwhile(f: impl FnOnce(&mut dyn Meanwhile)) {
    MEANWHILE.with(|cell| {
        if let Ok(mut work) = cell.try_borrow_mut() {
            if let Some(work) = work.as_mut() {
                f(work.as_mut());
            }
        }
    });
}

/// Waits until `socket` is ready or `deadline` passes (`None`: never),
/// doing the [`Meanwhile`] work whenever it is due; `true` when the socket
/// is ready. The thread waits on all these sockets at once, so neither the
/// request nor a health check waits for the other.
pub fn for_socket(socket: Interest, deadline: Option<Instant>) -> bool {
    let mut interests = Vec::new();
    loop {
        interests.clear();
        interests.push(socket);
        with_meanwhile(|work| work.interests(&mut interests));
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            return false;
        }
        // In slices: what the loop waits for (an accept that was paused)
        // is asked again at least this often.
        if until_ready(&interests, left.min(SLICE)) {
            return true;
        }
        with_meanwhile(|work| work.serve());
    }
}

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
