//! A body cut into lines as its bytes arrive, each line at most a set
//! length: a watch sends one JSON event per line, and a line is held whole
//! before it is decoded.

use crate::error::Error;

/// The body's bytes since the last newline, and the longest line allowed.
pub struct Lines {
    partial: Vec<u8>,
    limit: u64,
}

impl Lines {
    /// Lines of at most `limit` bytes (without their `\n`).
    pub fn new(limit: u64) -> Lines {
        Lines {
            partial: Vec::new(),
            limit,
        }
    }

    /// Appends the lines `bytes` complete to `out`, without their `\n`, and
    /// keeps the rest for the next call (a last line no newline ends is
    /// never given). [`Error::TooLarge`] when a line passes the limit; the
    /// lines before it are in `out`.
    pub fn split(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), Error> {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.extend(&rest[..i])?;
            out.push(std::mem::take(&mut self.partial));
            rest = &rest[i + 1..];
        }
        self.extend(rest)
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if (self.partial.len() + bytes.len()) as u64 > self.limit {
            return Err(Error::TooLarge { limit: self.limit });
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let body = b"{\"a\":1}\n\n{\"b\":22}\r\nno end";
        let want: Vec<&[u8]> = vec![b"{\"a\":1}", b"", b"{\"b\":22}\r"];
        for cut in 0..=body.len() {
            let mut lines = Lines::new(100);
            let mut out = Vec::new();
            lines.split(&body[..cut], &mut out).unwrap();
            lines.split(&body[cut..], &mut out).unwrap();
            assert_eq!(out, want, "{cut}");
        }
    }

    #[test]
    fn a_line_past_the_limit_is_an_error_after_the_lines_before_it() {
        let mut lines = Lines::new(4);
        let mut out = Vec::new();
        lines.split(b"abcd\nab", &mut out).unwrap();
        assert_eq!(
            lines.split(b"c\nabcde", &mut out),
            Err(Error::TooLarge { limit: 4 })
        );
        assert_eq!(out, [b"abcd".to_vec(), b"abc".to_vec()]);
        let mut lines = Lines::new(4);
        assert_eq!(
            lines
                .split(b"ab", &mut out)
                .and(lines.split(b"cde", &mut out)),
            Err(Error::TooLarge { limit: 4 }),
            "counted across pieces"
        );
    }
}
