//! One HTTP/1.1 GET as bytes, by `ureq-proto` (ureq's own sans-IO state
//! machine): the request head to send, then the answer — its head, then its
//! body (chunked, of a known length, or up to the connection's end) decoded
//! as its bytes arrive, however the network splits them. No I/O, so every
//! split is tested in-process; [`crate::io::stream`] does the I/O.

use std::fmt;
use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvResponseResult, SendRequestResult};
use ureq_proto::http::{header, Request, Response};
use ureq_proto::BodyMode;

/// The longest answer head, and the longest chunk header or trailer line.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// The longest `Location` kept (characters): it is server-chosen text.
const LOCATION_LIMIT: usize = 256;

/// Why a request could not be written or its answer read.
#[derive(Debug)]
pub enum ExchangeError {
    /// The path or a header cannot be sent (not valid in HTTP).
    Request(ureq_proto::http::Error),
    /// The request head could not be written.
    RequestHead(ureq_proto::Error),
    /// The answer's head is not an HTTP/1.x head.
    BadHead(ureq_proto::Error),
    /// The answer's head passed [`HEAD_LIMIT`].
    HeadTooLong,
    /// A chunk header, a chunk's end or a trailer is malformed.
    BadChunk(ureq_proto::Error),
    /// A chunk header or trailer line passed [`HEAD_LIMIT`].
    ChunkLineTooLong,
    /// The connection closed before the answer was complete.
    Cut,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Request(e) => write!(f, "the request cannot be sent: {e}"),
            ExchangeError::RequestHead(e) => write!(f, "the request cannot be written: {e}"),
            ExchangeError::BadHead(e) => write!(f, "malformed response head: {e}"),
            ExchangeError::HeadTooLong => write!(f, "malformed response head: longer than 64 KiB"),
            ExchangeError::BadChunk(e) => write!(f, "malformed chunked body: {e}"),
            ExchangeError::ChunkLineTooLong => {
                write!(
                    f,
                    "malformed chunked body: a control line longer than 64 KiB"
                )
            }
            ExchangeError::Cut => write!(f, "the connection closed before the answer was complete"),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExchangeError::Request(e) => Some(e),
            ExchangeError::RequestHead(e) | ExchangeError::BadHead(e) => Some(e),
            ExchangeError::BadChunk(e) => Some(e),
            ExchangeError::HeadTooLong | ExchangeError::ChunkLineTooLong | ExchangeError::Cut => {
                None
            }
        }
    }
}

/// What the answer's head says that the caller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The last `Location` header, cut to 256 characters, when there is one.
    pub location: Option<String>,
}

enum Phase {
    Head(Call<RecvResponse>),
    Body(Call<RecvBody>),
    /// The answer is complete.
    Done,
}

/// One GET: [`Exchange::get`] gives the request head to send, then
/// [`Exchange::receive`] takes the answer's bytes in pieces of any size.
pub struct Exchange {
    phase: Phase,
    head: Option<Head>,
    /// Bytes received and not used yet: a head, chunk header or trailer
    /// line not complete yet.
    pending: Vec<u8>,
}

impl Exchange {
    /// A GET of `path_and_query` (origin form, `/…`) with `headers` (`Host`
    /// among them: it is not added), and its head to send.
    pub fn get(
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Exchange, Vec<u8>), ExchangeError> {
        let request = headers
            .iter()
            .fold(Request::get(path_and_query), |r, (name, value)| {
                r.header(*name, *value)
            })
            .body(())
            .map_err(ExchangeError::Request)?;
        let mut call = Call::new(request)
            .map_err(ExchangeError::RequestHead)?
            .proceed();
        // Room for all of it, so that no line overflows the buffer.
        let size = path_and_query.len()
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
            + 64;
        let mut head = vec![0; size];
        let mut used = 0;
        while !call.can_proceed() {
            used += call
                .write(&mut head[used..])
                .map_err(ExchangeError::RequestHead)?;
        }
        head.truncate(used);
        let call = match call.proceed() {
            Ok(Some(SendRequestResult::RecvResponse(call))) => call,
            Err(e) => return Err(ExchangeError::RequestHead(e)),
            Ok(_) => unreachable!("a GET without a body goes on to its answer"),
        };
        let exchange = Exchange {
            phase: Phase::Head(call),
            head: None,
            pending: Vec::new(),
        };
        Ok((exchange, head))
    }

    /// The answer's head, once it has come.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Decodes `input`, appending the body bytes it completes to `body`
    /// (the whole chunks before an error too). `true` once the answer is complete;
    /// bytes after its end are ignored. After an error, later calls fail.
    pub fn receive(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<bool, ExchangeError> {
        self.pending.extend_from_slice(input);
        self.read_head()?;
        if let Phase::Body(call) = &mut self.phase {
            let used = read_body(call, &self.pending, body)?;
            self.pending.drain(..used);
            if self.pending.len() > HEAD_LIMIT {
                return Err(ExchangeError::ChunkLineTooLong);
            }
            // A body up to the connection's end "can proceed" at any time.
            if call.can_proceed() && call.body_mode() != BodyMode::CloseDelimited {
                self.phase = Phase::Done;
            }
        }
        if let Phase::Done = self.phase {
            self.pending.clear();
            return Ok(true);
        }
        if self.pending.is_empty() {
            // Nothing carried over: give the room back (an idle watch
            // keeps no buffer).
            self.pending = Vec::new();
        }
        Ok(false)
    }

    /// The connection ended: `Ok` when that completes the answer (a body
    /// up to the connection's end, or an answer already complete),
    /// [`ExchangeError::Cut`] when the answer was cut off.
    pub fn close(&mut self) -> Result<(), ExchangeError> {
        match &self.phase {
            Phase::Done => Ok(()),
            Phase::Body(call) if call.body_mode() == BodyMode::CloseDelimited => {
                self.phase = Phase::Done;
                Ok(())
            }
            _ => Err(ExchangeError::Cut),
        }
    }

    /// Reads the head if it is complete, and goes on to the body (if one
    /// follows).
    fn read_head(&mut self) -> Result<(), ExchangeError> {
        let Phase::Head(call) = &mut self.phase else {
            return Ok(());
        };
        let Some(head) = take_head(call, &mut self.pending)? else {
            return Ok(());
        };
        self.head = Some(head);
        if let Phase::Head(call) = std::mem::replace(&mut self.phase, Phase::Done) {
            // A redirect or a status without a body is complete at its head.
            if let Some(RecvResponseResult::RecvBody(call)) = call.proceed() {
                self.phase = Phase::Body(call);
            }
        }
        Ok(())
    }
}

/// The head at the start of `pending`, taken out, once it is complete;
/// interim (1xx) answers are skipped.
fn take_head(
    call: &mut Call<RecvResponse>,
    pending: &mut Vec<u8>,
) -> Result<Option<Head>, ExchangeError> {
    loop {
        let (used, response) = call
            .try_response(pending, false)
            .map_err(ExchangeError::BadHead)?;
        if used > HEAD_LIMIT || (used == 0 && pending.len() > HEAD_LIMIT) {
            return Err(ExchangeError::HeadTooLong);
        }
        pending.drain(..used);
        match response {
            Some(response) => return Ok(Some(head_of(&response))),
            None if used == 0 => return Ok(None),
            None => {}
        }
    }
}

fn head_of(response: &Response<()>) -> Head {
    let location = response
        .headers()
        .get_all(header::LOCATION)
        .iter()
        .next_back();
    Head {
        status: response.status().as_u16(),
        location: location.map(|value| {
            let text = String::from_utf8_lossy(value.as_bytes());
            text.chars().take(LOCATION_LIMIT).collect()
        }),
    }
}

/// Decodes body bytes from `input` onto `body`; how much of `input` was
/// used (what is left is an incomplete chunk header or trailer line).
fn read_body(
    call: &mut Call<RecvBody>,
    input: &[u8],
    body: &mut Vec<u8>,
) -> Result<usize, ExchangeError> {
    // Decoded bytes are never more than the input.
    let mut made = body.len();
    body.resize(made + input.len(), 0);
    let mut used = 0;
    let result = loop {
        match call.read(&input[used..], &mut body[made..]) {
            Ok((0, 0)) => break Ok(used),
            Ok((input_used, output_used)) => {
                used += input_used;
                made += output_used;
            }
            Err(e) => break Err(ExchangeError::BadChunk(e)),
        }
    };
    body.truncate(made);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT_A: &str = r#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#;
    const EVENT_B: &str = r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#;

    fn exchange() -> Exchange {
        Exchange::get("/x", &[("Host", "h:1")]).unwrap().0
    }

    /// `body` sent as chunks of the given sizes, with extensions on odd ones,
    /// the final chunk and a trailer.
    fn chunked(body: &str, sizes: &[usize]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        let mut rest = body.as_bytes();
        for (i, size) in sizes.iter().cycle().enumerate() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            let ext = if i % 2 == 1 { ";v=1" } else { "" };
            out.extend_from_slice(format!("{:X}{ext}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = tail;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        out
    }

    /// What the exchange made of `input` split at `at`: the head, the body
    /// and whether it was complete at the last piece; or the error.
    fn decode_split(input: &[u8], at: &[usize]) -> Result<(Head, String, bool), ExchangeError> {
        let mut exchange = exchange();
        let mut body = Vec::new();
        let mut from = 0;
        let mut complete = false;
        for &cut in at.iter().chain([input.len()].iter()) {
            complete = exchange.receive(&input[from..cut], &mut body)?;
            from = cut;
        }
        let head = exchange.head().cloned().expect("a head");
        Ok((head, String::from_utf8(body).unwrap(), complete))
    }

    fn ok() -> Head {
        Head {
            status: 200,
            location: None,
        }
    }

    #[test]
    fn the_request_head_carries_the_path_and_the_headers() {
        let headers = [("Host", "api:6443"), ("Authorization", "Bearer t")];
        let (_, head) = Exchange::get("/x?watch=1&a=%2F", &headers).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /x?watch=1&a=%2F HTTP/1.1\r\nhost: api:6443\r\nauthorization: Bearer t\r\n\r\n"
        );
        let broken = Exchange::get("/x", &[("Authorization", "Bearer t\r\nX: y")]);
        assert!(
            matches!(broken, Err(ExchangeError::Request(_))),
            "a header that would split the head is refused"
        );
    }

    #[test]
    fn chunked_bodies_split_at_every_byte_boundary_decode_the_same() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        for sizes in [[1000].as_slice(), &[1], &[7, 3], &[body.len() / 2]] {
            let input = chunked(&body, sizes);
            let want = (ok(), body.clone(), true);
            for cut in 0..=input.len() {
                let got = decode_split(&input, &[cut]).unwrap();
                assert_eq!(got, want, "{sizes:?} {cut}");
            }
            let every: Vec<usize> = (1..input.len()).collect();
            let got = decode_split(&input, &every).unwrap();
            assert_eq!(got, want, "{sizes:?} byte by byte");
        }
    }

    #[test]
    fn an_idle_stream_keeps_no_buffer_between_reads() {
        let mut exchange = exchange();
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let event = format!("{:X}\r\n{EVENT_A}\n\r\n", EVENT_A.len() + 1);
        let mut body = Vec::new();
        assert!(!exchange.receive(head, &mut body).unwrap());
        assert!(!exchange.receive(event.as_bytes(), &mut body).unwrap());
        assert_eq!(body, format!("{EVENT_A}\n").as_bytes());
        // Hundreds of watches wait between events: none keeps its input.
        assert_eq!(exchange.pending.capacity(), 0);
        // A chunk header cut in two is carried over, and only that.
        assert!(!exchange.receive(b"1", &mut body).unwrap());
        assert_eq!(exchange.pending, b"1");
    }

    #[test]
    fn an_answer_cut_mid_chunk_is_not_complete() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        let input = chunked(&body, &[10]);
        for cut in [0, 20, input.len() - 40, input.len() - 5] {
            let mut exchange = exchange();
            let mut got = Vec::new();
            assert!(!exchange.receive(&input[..cut], &mut got).unwrap());
            assert!(matches!(exchange.close(), Err(ExchangeError::Cut)), "{cut}");
            assert!(body.as_bytes().starts_with(&got), "{cut}");
        }
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345";
        let mut exchange = exchange();
        assert!(!exchange.receive(sized, &mut Vec::new()).unwrap());
        assert!(matches!(exchange.close(), Err(ExchangeError::Cut)));
    }

    #[test]
    fn bodies_of_known_length_and_up_to_the_connections_end() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        let sized = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}and after",
            body.len()
        );
        for cut in 0..=sized.len() {
            let got = decode_split(sized.as_bytes(), &[cut]).unwrap();
            assert_eq!(got, (ok(), body.clone(), true), "{cut}");
        }
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            decode_split(empty, &[]).unwrap(),
            (ok(), String::new(), true)
        );
        let open = format!("HTTP/1.0 200 OK\r\n\r\n{body}");
        let mut exchange = exchange();
        let mut got = Vec::new();
        assert!(!exchange.receive(open.as_bytes(), &mut got).unwrap());
        assert!(exchange.close().is_ok(), "the close is its end");
        assert_eq!(got, body.as_bytes());
    }

    #[test]
    fn an_error_answer_keeps_its_head_and_body_and_a_redirect_is_only_reported() {
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\n{\"code\":403}";
        let got = decode_split(forbidden, &[]).unwrap();
        let head = Head {
            status: 403,
            location: None,
        };
        assert_eq!(got, (head, "{\"code\":403}".into(), true));
        let far = format!("https://x/{}", "a".repeat(1000));
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {far}\r\ncontent-length: 0\r\n\r\n"
        );
        let got = decode_split(redirect.as_bytes(), &[]).unwrap();
        let head = Head {
            status: 307,
            location: Some(far[..LOCATION_LIMIT].to_string()),
        };
        assert_eq!(got, (head, String::new(), true));
    }

    #[test]
    fn interim_answers_are_skipped() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let got = decode_split(input, &[10, 30]).unwrap();
        assert_eq!(got, (ok(), "ok".into(), true));
    }

    #[test]
    fn malformed_answers_are_errors_and_stay_errors() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(HEAD_LIMIT));
        let long_size = format!("{chunked}1{}", "0".repeat(HEAD_LIMIT));
        let bad_chunk = format!("{chunked}zz\r\n");
        let long_chunk = format!("{chunked}1\r\nab\r\n");
        let cases: [(&[u8], &str); 7] = [
            (b"SSH-2.0-OpenSSH\r\n", "malformed response head"),
            (b"HTTP/1.1 abc\r\n", "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
                "malformed response head",
            ),
            (long_head.as_bytes(), "response head: longer than 64 KiB"),
            (bad_chunk.as_bytes(), "chunked body: chunk length cannot be"),
            (long_chunk.as_bytes(), "chunked body: chunk expected crlf"),
            (long_size.as_bytes(), "chunked body: a control line longer"),
        ];
        for (input, want) in cases {
            let mut exchange = exchange();
            let text = String::from_utf8_lossy(&input[..input.len().min(60)]).to_string();
            let error = exchange.receive(input, &mut Vec::new()).err();
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(want), "{text}: {error}");
            let again = exchange.receive(b"\r\n\r\n", &mut Vec::new());
            assert!(again.is_err(), "{text}: stays failed");
        }
    }
}
