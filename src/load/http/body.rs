//! How long a message body is, from its head, and a decoder for chunked bodies. No I/O: both
//! work on whatever bytes the caller has, so any split of the input can be tested.

use super::error::WireError;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// What the head says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Neither Content-Length nor Transfer-Encoding: no body in a request, a body that runs
    /// to the end of the connection in a response.
    Unframed,
    Length(u64),
    Chunked,
}

fn named<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii())
}

/// The body's framing. A repeated Content-Length is accepted only when every value is the
/// same (RFC 9110 section 8.6); one beside Transfer-Encoding is refused, as a message two
/// parsers could frame differently.
pub fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, WireError> {
    let mut length = None;
    for t in named(headers, "content-length").flat_map(tokens) {
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(WireError::BadLength);
        }
        // At most 19 digits: always fits in a u64.
        let n = t.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(WireError::BadLength);
        }
        length = Some(n);
    }
    let last = named(headers, "transfer-encoding")
        .flat_map(tokens)
        .filter(|t| !t.is_empty())
        .last();
    match (length, last) {
        (Some(_), Some(_)) => Err(WireError::Ambiguous),
        (Some(n), None) => Ok(Framing::Length(n)),
        (None, Some(t)) if t.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        (None, Some(_)) => Err(WireError::UnsupportedEncoding),
        (None, None) => Ok(Framing::Unframed),
    }
}

/// Whether the connection ends after this message: `Connection: close`, or HTTP/1.0 without
/// `Connection: keep-alive`.
pub fn closes(version: Option<u8>, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = false;
    let mut keep = false;
    for t in named(headers, "connection").flat_map(tokens) {
        close |= t.eq_ignore_ascii_case(b"close");
        keep |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    close || (version != Some(1) && !keep)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
    Done,
}

/// Decodes a chunked body incrementally (RFC 9112 section 7.1): chunk extensions and
/// trailers are read and ignored.
#[derive(Debug, Clone, Default)]
pub struct ChunkDecoder {
    state: State,
}

impl ChunkDecoder {
    /// Consumes what it can of `buf`, handing each piece of body data to `data`. Returns the
    /// bytes consumed and whether the body is complete. A line cut by the end of `buf` is not
    /// consumed: the caller keeps it and calls again with more.
    pub fn feed(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), WireError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Done => return Ok((pos, true)),
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((pos, false));
                    }
                    let n = left.min(rest.len() as u64) as usize;
                    data(&rest[..n]);
                    pos += n;
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        l => State::Data(l),
                    };
                }
                State::Size | State::DataEnd | State::Trailer => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            return Err(WireError::Chunk("line too long"));
                        }
                        return Ok((pos, false));
                    };
                    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                    pos += end + 1;
                    self.state = match self.state {
                        State::Size => match chunk_size(line)? {
                            0 => State::Trailer,
                            n => State::Data(n),
                        },
                        State::DataEnd if line.is_empty() => State::Size,
                        State::DataEnd => {
                            return Err(WireError::Chunk("data longer than its size"))
                        }
                        _ if line.is_empty() => State::Done,
                        _ => State::Trailer,
                    };
                }
            }
        }
    }
}

/// `1a;ext=x` → 26. Hex digits up to the first `;`, whitespace allowed before it.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(WireError::Chunk("bad chunk size"));
    }
    hex.iter().try_fold(0u64, |n, &d| {
        let v = (d as char)
            .to_digit(16)
            .ok_or(WireError::Chunk("bad chunk size"))?;
        Ok((n << 4) | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        pairs
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing(&h(&[])), Ok(Framing::Unframed));
        assert_eq!(
            framing(&h(&[("Content-Length", "12")])),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(&h(&[("content-length", "5, 5"), ("Content-Length", "5")])),
            Ok(Framing::Length(5))
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "5, 6",
            "99999999999999999999",
            "0x10",
        ] {
            assert_eq!(
                framing(&h(&[("Content-Length", bad)])),
                Err(WireError::BadLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing(&h(&[("Transfer-Encoding", "gzip, chunked")])),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(&h(&[("Transfer-Encoding", "chunked, gzip")])),
            Err(WireError::UnsupportedEncoding)
        );
        assert_eq!(
            framing(&h(&[
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "3")
            ])),
            Err(WireError::Ambiguous)
        );
    }

    #[test]
    fn connection_close() {
        assert!(!closes(Some(1), &h(&[])));
        assert!(closes(Some(1), &h(&[("Connection", "Close")])));
        assert!(closes(Some(1), &h(&[("connection", "upgrade, close")])));
        assert!(closes(Some(0), &h(&[])));
        assert!(!closes(Some(0), &h(&[("Connection", "keep-alive")])));
    }

    const BODY: &[u8] =
        b"4\r\nWiki\r\n7;name=value\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";

    /// Feeds `input` cut at `cuts`, keeping unconsumed bytes as a caller would.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), WireError> {
        let mut dec = ChunkDecoder::default();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            pending.extend_from_slice(&input[last..c]);
            last = c;
            let (used, done) = dec.feed(&pending, |d| out.extend_from_slice(d))?;
            pending.drain(..used);
            if done {
                // Unconsumed: what was fed and not taken, and what was not fed yet.
                return Ok((out, pending.len() + input.len() - last));
            }
        }
        Err(WireError::Truncated("test input"))
    }

    #[test]
    fn chunked_at_every_split() {
        let want = b"Wikipedia in \r\nchunks.".to_vec();
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"NEXT");
        for a in 0..=BODY.len() {
            for b in a..=BODY.len() {
                let (out, left) = decode_split(&input, &[a, b]).unwrap();
                assert_eq!(out, want, "cuts {a} {b}");
                assert_eq!(left, 4, "the next message's bytes stay unconsumed");
            }
        }
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(
            decode_split(b"zz\r\n", &[]),
            Err(WireError::Chunk("bad chunk size"))
        );
        assert_eq!(
            decode_split(b"2\r\nabc\r\n0\r\n\r\n", &[]),
            Err(WireError::Chunk("data longer than its size"))
        );
        assert_eq!(
            decode_split(b"1000000000000000\r\n", &[]),
            Err(WireError::Chunk("bad chunk size"))
        );
        let long = vec![b'1'; MAX_LINE + 2];
        assert_eq!(
            decode_split(&long, &[]),
            Err(WireError::Chunk("line too long"))
        );
        // Bare LF line ends are read too.
        assert_eq!(decode_split(b"1\nx\n0\n\n", &[]).unwrap().0, b"x");
    }
}
