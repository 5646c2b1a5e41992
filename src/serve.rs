//! The health and metrics listener, served from the loop's own thread: it
//! never blocks, and answers whatever is waiting each time it is polled.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// How long one client may take to send its request line.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(200);

/// An answer: status code, content type, body.
pub type Answer = (u16, &'static str, String);

/// A non-blocking HTTP listener.
pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Listens on `address` (`HOST:PORT`).
    pub fn bind(address: &str) -> io::Result<Server> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(Server { listener })
    }

    /// The bound address (useful when the port was 0).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers every connection waiting now with `answer(path)`, then
    /// returns. A slow or broken client is dropped, never waited for long.
    pub fn poll(&mut self, answer: &dyn Fn(&str) -> Answer) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = respond(stream, answer) {
                log::debug!("health client dropped: {e}");
            }
        }
    }
}

fn respond(mut stream: TcpStream, answer: &dyn Fn(&str) -> Answer) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (code, content_type, body) = match (words.next(), words.next()) {
        (Some("GET" | "HEAD"), Some(target)) => answer(target.split('?').next().unwrap_or(target)),
        _ => (405, "text/plain", "method not allowed\n".into()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
