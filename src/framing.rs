//! Reading one HTTP/1.1 response as its bytes arrive: the head, then the
//! body (chunked, of a known length, or up to the connection's end) cut into
//! lines. Pure — bytes in, pieces out — so that every way the network may
//! split a response is tested in-process; `stream` does the I/O.

/// The longest response head, and the longest chunk header or trailer line.
pub const HEAD_LIMIT: usize = 64 * 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// The head is not an HTTP/1.x head, or is longer than [`HEAD_LIMIT`].
    BadHead(&'static str),
    /// A chunk header, a chunk's end or a trailer is malformed.
    BadChunk(&'static str),
    /// One line of the body passed the limit (in bytes).
    LineTooLong(u64),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::BadHead(why) => write!(f, "malformed response head: {why}"),
            FramingError::BadChunk(why) => write!(f, "malformed chunked body: {why}"),
            FramingError::LineTooLong(limit) => write!(f, "a line passed {limit} bytes"),
        }
    }
}

/// What the decoder found, in order: one `Head`, the body's `Line`s, and
/// `End` when the body is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The status code and, for a redirect, the `Location` header.
    Head {
        /// The status code.
        status: u16,
        /// The `Location` header, when there is one.
        location: Option<String>,
    },
    /// One line of the body, without its `\n`.
    Line(Vec<u8>),
    /// The body is complete (the connection is not reused).
    End,
}

/// The head's fields read so far.
#[derive(Default)]
struct Head {
    status: Option<u16>,
    chunked: bool,
    length: Option<u64>,
    location: Option<String>,
    bytes: usize,
}

enum State {
    Head(Head),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left in the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailer(usize),
    /// Bytes left of a body of known length.
    Length(u64),
    /// The body runs to the end of the connection.
    UntilClose,
    Done,
    Failed(FramingError),
}

/// Decodes one response fed to it in pieces of any size.
pub struct Framing {
    state: State,
    /// A head, chunk-size or trailer line not complete yet.
    control: Vec<u8>,
    /// Body bytes since the last newline.
    line: Vec<u8>,
    line_limit: u64,
}

impl Framing {
    /// A decoder whose body lines may be at most `line_limit` bytes long.
    pub fn new(line_limit: u64) -> Framing {
        Framing {
            state: State::Head(Head::default()),
            control: Vec::new(),
            line: Vec::new(),
            line_limit,
        }
    }

    /// Decodes `bytes`, appending what they complete to `out`. After an
    /// error every later call fails the same way; bytes after `End` are
    /// ignored.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), FramingError> {
        while !bytes.is_empty() {
            if let Err(e) = self.step(&mut bytes, out) {
                self.state = State::Failed(e.clone());
                return Err(e);
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// The connection ended. `true` when that completes the response (a
    /// body that runs to the end, or one already complete); `false` when
    /// the response was cut off.
    pub fn end_of_input(&mut self, out: &mut Vec<Piece>) -> bool {
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                out.push(Piece::End);
                true
            }
            State::Done => true,
            _ => false,
        }
    }

    /// The body's last bytes that no newline ended (an error body's text,
    /// or a cut event), taken out.
    pub fn take_partial_line(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.line)
    }

    /// Consumes a prefix of `bytes` in the current state.
    fn step(&mut self, bytes: &mut &[u8], out: &mut Vec<Piece>) -> Result<(), FramingError> {
        match &mut self.state {
            State::Head(_) => self.head_step(bytes, out),
            State::ChunkSize => {
                if let Some(line) = self.control_line(bytes, HEAD_LIMIT)? {
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailer(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                Ok(())
            }
            State::ChunkData(left) | State::Length(left) => {
                let left = *left;
                let chunked = matches!(self.state, State::ChunkData(_));
                let take = left.min(bytes.len() as u64) as usize;
                self.body(&bytes[..take], out)?;
                *bytes = &bytes[take..];
                self.state = match (left - take as u64, chunked) {
                    (0, true) => State::ChunkEnd,
                    (0, false) => Self::done(out),
                    (left, true) => State::ChunkData(left),
                    (left, false) => State::Length(left),
                };
                Ok(())
            }
            State::ChunkEnd => {
                let longer = FramingError::BadChunk("data longer than its size");
                match self.control_line(bytes, 2) {
                    Ok(Some(line)) if line.is_empty() => self.state = State::ChunkSize,
                    Ok(None) => {}
                    _ => return Err(longer),
                }
                Ok(())
            }
            State::Trailer(seen) => {
                let seen = *seen;
                let room = HEAD_LIMIT.saturating_sub(seen);
                if let Some(line) = self.control_line(bytes, room)? {
                    self.state = match line.is_empty() {
                        true => Self::done(out),
                        false => State::Trailer(seen + line.len() + 2),
                    };
                }
                Ok(())
            }
            State::UntilClose => {
                self.body(bytes, out)?;
                *bytes = &[];
                Ok(())
            }
            State::Done | State::Failed(_) => {
                *bytes = &[];
                Ok(())
            }
        }
    }

    fn done(out: &mut Vec<Piece>) -> State {
        out.push(Piece::End);
        State::Done
    }

    /// Reads head lines; at the empty line, emits the head and picks the
    /// body's framing.
    fn head_step(&mut self, bytes: &mut &[u8], out: &mut Vec<Piece>) -> Result<(), FramingError> {
        let State::Head(head) = &self.state else {
            unreachable!("head_step runs in the head state")
        };
        let room = HEAD_LIMIT.saturating_sub(head.bytes);
        let Some(line) = self.control_line(bytes, room)? else {
            return Ok(());
        };
        let State::Head(head) = &mut self.state else {
            unreachable!("control_line keeps the state")
        };
        head.bytes += line.len() + 2;
        let text = std::str::from_utf8(&line).map_err(|_| FramingError::BadHead("not text"))?;
        if head.status.is_none() {
            head.status = Some(status_code(text)?);
            return Ok(());
        }
        if !text.is_empty() {
            header(head, text)?;
            return Ok(());
        }
        let head = std::mem::take(head);
        out.push(Piece::Head {
            status: head.status.unwrap_or_default(),
            location: head.location,
        });
        self.state = match (head.chunked, head.length) {
            (true, _) => State::ChunkSize,
            (false, Some(0)) => Self::done(out),
            (false, Some(length)) => State::Length(length),
            (false, None) => State::UntilClose,
        };
        Ok(())
    }

    /// Moves bytes into the pending control line until a `\n`; the line
    /// without its CRLF once complete. At most `limit` bytes, CRLF included.
    fn control_line(
        &mut self,
        bytes: &mut &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, FramingError> {
        let end = bytes.iter().position(|b| *b == b'\n');
        let take = end.map_or(bytes.len(), |i| i + 1);
        if self.control.len() + take > limit {
            return Err(match self.state {
                State::Head(_) => FramingError::BadHead("longer than 64 KiB"),
                _ => FramingError::BadChunk("control line too long"),
            });
        }
        self.control.extend_from_slice(&bytes[..take]);
        *bytes = &bytes[take..];
        if end.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.control);
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// Cuts body bytes into lines.
    fn body(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> Result<(), FramingError> {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.extend_line(&rest[..i])?;
            out.push(Piece::Line(std::mem::take(&mut self.line)));
            rest = &rest[i + 1..];
        }
        self.extend_line(rest)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if (self.line.len() + bytes.len()) as u64 > self.line_limit {
            return Err(FramingError::LineTooLong(self.line_limit));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// The status code of a status line such as `HTTP/1.1 200 OK`.
fn status_code(line: &str) -> Result<u16, FramingError> {
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(FramingError::BadHead("not an HTTP/1.x status line"));
    }
    match code.parse::<u16>() {
        Ok(status @ 100..=999) if code.len() == 3 => Ok(status),
        _ => Err(FramingError::BadHead("no status code")),
    }
}

/// Records the header fields that frame the body, and `Location`.
fn header(head: &mut Head, line: &str) -> Result<(), FramingError> {
    let (name, value) = line
        .split_once(':')
        .ok_or(FramingError::BadHead("a header line without a colon"))?;
    let value = value.trim();
    if name.eq_ignore_ascii_case("transfer-encoding") {
        head.chunked = value
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    } else if name.eq_ignore_ascii_case("content-length") {
        let length = value
            .parse()
            .map_err(|_| FramingError::BadHead("a Content-Length that is not a number"))?;
        if head.length.is_some_and(|seen| seen != length) {
            return Err(FramingError::BadHead("two different Content-Lengths"));
        }
        head.length = Some(length);
    } else if name.eq_ignore_ascii_case("location") {
        head.location = Some(value.chars().take(256).collect());
    }
    Ok(())
}

/// The size in a chunk-size line (hex, extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let text = std::str::from_utf8(line).map_err(|_| FramingError::BadChunk("not text"))?;
    let digits = text.split(';').next().unwrap_or("").trim();
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FramingError::BadChunk("no usable chunk size"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| FramingError::BadChunk("no usable chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT_A: &str = r#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#;
    const EVENT_B: &str = r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#;

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
            let ext = if i % 2 == 1 { ";name=\"v\"" } else { "" };
            out.extend_from_slice(format!("{:X}{ext}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = tail;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        out
    }

    /// Feeds `input` split at `at`, returning the pieces (or the error).
    fn decode_split(input: &[u8], at: &[usize]) -> Result<Vec<Piece>, FramingError> {
        let mut framing = Framing::new(1 << 20);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in at.iter().chain([input.len()].iter()) {
            framing.feed(&input[from..cut], &mut out)?;
            from = cut;
        }
        Ok(out)
    }

    fn expected(lines: &[&str]) -> Vec<Piece> {
        let mut pieces = vec![Piece::Head {
            status: 200,
            location: None,
        }];
        pieces.extend(lines.iter().map(|l| Piece::Line(l.as_bytes().to_vec())));
        pieces.push(Piece::End);
        pieces
    }

    #[test]
    fn events_split_at_every_byte_boundary_decode_the_same() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        for sizes in [[1000].as_slice(), &[1], &[7, 3], &[body.len() / 2]] {
            let input = chunked(&body, sizes);
            let want = expected(&[EVENT_A, EVENT_B]);
            for cut in 0..=input.len() {
                assert_eq!(
                    decode_split(&input, &[cut]),
                    Ok(want.clone()),
                    "{sizes:?} {cut}"
                );
            }
            let every: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                decode_split(&input, &every),
                Ok(want),
                "{sizes:?} byte by byte"
            );
        }
    }

    #[test]
    fn a_stream_cut_mid_event_keeps_the_whole_events_only() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        let input = chunked(&body, &[10]);
        let cut = input.len() - 40;
        let mut framing = Framing::new(1 << 20);
        let mut out = Vec::new();
        framing.feed(&input[..cut], &mut out).unwrap();
        assert!(!framing.end_of_input(&mut out), "a cut is not an end");
        assert_eq!(out[1], Piece::Line(EVENT_A.as_bytes().to_vec()));
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn bodies_of_known_length_and_to_the_connections_end() {
        let body = format!("{EVENT_A}\n{EVENT_B}\n");
        let sized = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            decode_split(sized.as_bytes(), &[30]),
            Ok(expected(&[EVENT_A, EVENT_B]))
        );
        let open = format!("HTTP/1.0 200 OK\r\n\r\n{body}");
        let mut framing = Framing::new(1 << 20);
        let mut out = Vec::new();
        framing.feed(open.as_bytes(), &mut out).unwrap();
        assert!(framing.end_of_input(&mut out));
        assert_eq!(out, expected(&[EVENT_A, EVENT_B]));
    }

    #[test]
    fn an_error_answer_keeps_its_head_and_text() {
        let input = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\n{\"code\":403}";
        let mut framing = Framing::new(1 << 20);
        let mut out = Vec::new();
        framing.feed(input, &mut out).unwrap();
        assert_eq!(
            out[0],
            Piece::Head {
                status: 403,
                location: None
            }
        );
        assert_eq!(out[1], Piece::End);
        assert_eq!(framing.take_partial_line(), b"{\"code\":403}");
        let redirect = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: https://x/\r\n\r\n";
        let out = decode_split(redirect, &[]).unwrap();
        let location = Some("https://x/".to_string());
        assert_eq!(
            out[0],
            Piece::Head {
                status: 307,
                location
            }
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        let long_line = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n{}",
            "x".repeat(9000)
        );
        let cases: [(&[u8], FramingError); 6] = [
            (
                b"SSH-2.0-OpenSSH\r\n",
                FramingError::BadHead("not an HTTP/1.x status line"),
            ),
            (b"HTTP/1.1 abc\r\n", FramingError::BadHead("no status code")),
            (
                b"HTTP/1.1 200 OK\r\nbroken\r\n",
                FramingError::BadHead("a header line without a colon"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                FramingError::BadChunk("no usable chunk size"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                FramingError::BadChunk("data longer than its size"),
            ),
            (long_line.as_bytes(), FramingError::LineTooLong(4096)),
        ];
        for (input, want) in cases {
            let mut framing = Framing::new(4096);
            let result = framing.feed(input, &mut Vec::new());
            assert_eq!(
                result,
                Err(want.clone()),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                framing.feed(b"more", &mut Vec::new()),
                Err(want),
                "stays failed"
            );
        }
        let endless = vec![b'a'; HEAD_LIMIT + 1];
        let result = Framing::new(4096).feed(&endless, &mut Vec::new());
        assert_eq!(result, Err(FramingError::BadHead("longer than 64 KiB")));
    }

    #[test]
    fn chunk_sizes_parse_as_hex_with_extensions() {
        let cases: [(&[u8], Option<u64>); 6] = [
            (b"1a", Some(26)),
            (b"1A;name=value", Some(26)),
            (b" 0 ", Some(0)),
            (b"", None),
            (b"fffffffffffffffff", None),
            (b"+1", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                chunk_size(line).ok(),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
