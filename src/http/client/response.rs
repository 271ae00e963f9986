//! Reads one HTTP/1.1 response incrementally, without I/O: the head is parsed once it is
//! whole, the body is handed on decoded as it arrives, and the bytes after the response are
//! left alone. What is kept is the caller's choice ([`ResponseSink`]): the load generator
//! keeps nothing but the length, the agent keeps the head and the body for its answer.

use super::error::WireError;
use super::framing::{closes, framing, Framing};
use super::MAX_HEADERS;
use crate::http::chunked::{ChunkedDecoder, ChunkedError};

/// Where a [`ResponseReader`] puts the response's head and body.
pub trait ResponseSink {
    /// The final (not 1xx) head, once.
    fn head(&mut self, _status: u16, _headers: &[httparse::Header<'_>]) {}
    /// Body bytes, decoded (no chunk framing), in order.
    fn body(&mut self, _data: &[u8]) {}
}

/// Keeps nothing.
impl ResponseSink for () {}

/// Longest response head accepted.
pub const MAX_HEAD: usize = 32 << 10;

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_len: u64,
    /// The server ends the connection after it (it said so, or the body ran to the end).
    pub close: bool,
}

#[derive(Debug, Clone)]
enum State {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

#[derive(Debug, Clone)]
pub struct ResponseReader {
    state: State,
    /// The request was HEAD: the answer has no body whatever its head says.
    head_request: bool,
    /// Longest body accepted (decoded); past it the response is refused.
    max_body: u64,
    status: u16,
    body_len: u64,
    close: bool,
}

impl ResponseReader {
    /// A reader that accepts a body of any length.
    pub fn new(head_request: bool) -> ResponseReader {
        ResponseReader::with_body_limit(head_request, u64::MAX)
    }

    /// A reader that refuses a body over `max_body` bytes ([`WireError::BodyTooLarge`]), as
    /// soon as the head or the body so far shows it.
    pub fn with_body_limit(head_request: bool, max_body: u64) -> ResponseReader {
        ResponseReader {
            state: State::Head,
            head_request,
            max_body,
            status: 0,
            body_len: 0,
            close: false,
        }
    }

    fn answer(&mut self) -> Answer {
        self.state = State::Done;
        Answer {
            status: self.status,
            body_len: self.body_len,
            close: self.close,
        }
    }

    /// Consumes what it can of `buf` (which starts where the last call stopped consuming).
    /// Returns the bytes consumed and the answer once it is complete. A head cut by the end
    /// of `buf` is not consumed: the caller keeps it and calls again with more.
    pub fn feed(
        &mut self,
        buf: &[u8],
        sink: &mut impl ResponseSink,
    ) -> Result<(usize, Option<Answer>), WireError> {
        let max_body = self.max_body;
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match &mut self.state {
                State::Done => return Ok((pos, Some(self.answer()))),
                State::Head => {
                    let Some(used) = self.head(rest, sink)? else {
                        return Ok((pos, None));
                    };
                    pos += used;
                }
                State::Length(left) => {
                    let n = (*left).min(rest.len() as u64);
                    *left -= n;
                    self.body_len += n;
                    sink.body(&rest[..n as usize]);
                    pos += n as usize;
                    if *left == 0 {
                        return Ok((pos, Some(self.answer())));
                    }
                    return Ok((pos, None));
                }
                State::Chunked(dec) => {
                    let mut len = 0;
                    let (used, done) = dec
                        .feed(rest, |d| {
                            len += d.len() as u64;
                            sink.body(d);
                        })
                        .map_err(|e| match e {
                            ChunkedError::TooLarge => WireError::BodyTooLarge(max_body),
                            e => WireError::Chunk(e),
                        })?;
                    self.body_len += len;
                    pos += used;
                    if done {
                        return Ok((pos, Some(self.answer())));
                    }
                    return Ok((pos, None));
                }
                State::UntilClose => {
                    self.body_len += rest.len() as u64;
                    if self.body_len > self.max_body {
                        return Err(WireError::BodyTooLarge(self.max_body));
                    }
                    sink.body(rest);
                    return Ok((buf.len(), None));
                }
            }
        }
    }

    /// The connection reached its end: the answer, if the body was one that runs to the end.
    pub fn finish(&mut self) -> Result<Answer, WireError> {
        match self.state {
            State::UntilClose | State::Done => Ok(self.answer()),
            State::Head => Err(WireError::Truncated("response head")),
            _ => Err(WireError::Truncated("response body")),
        }
    }

    /// Parses a head at the start of `buf`; the bytes it took, or `None` for more. An
    /// interim (1xx) response is skipped: the final one follows it.
    fn head(
        &mut self,
        buf: &[u8],
        sink: &mut impl ResponseSink,
    ) -> Result<Option<usize>, WireError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
            Ok(_) => return Err(WireError::HeadTooLarge(MAX_HEAD)),
            Err(e) => return Err(WireError::Head(e)),
        };
        let status = resp.code.unwrap_or_default();
        match status {
            101 => return Err(WireError::Upgrade),
            100..=199 => return Ok(Some(len)),
            _ => {}
        }
        self.status = status;
        self.close = closes(resp.version, resp.headers);
        // RFC 9112 section 6.3: these never have a body, whatever the head says.
        let bodiless = self.head_request || status == 204 || status == 304;
        self.state = match framing(resp.headers)? {
            _ if bodiless => State::Done,
            Framing::Length(0) => State::Done,
            Framing::Length(n) if n > self.max_body => {
                return Err(WireError::BodyTooLarge(self.max_body))
            }
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkedDecoder::with_limit(self.max_body)),
            Framing::Unframed => {
                self.close = true;
                State::UntilClose
            }
        };
        sink.head(status, resp.headers);
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces cut at `cuts`, keeping unconsumed bytes as the client does,
    /// then the end of the connection if no answer came. Returns the answer and the bytes
    /// left unconsumed after it.
    fn read_split(
        input: &[u8],
        cuts: &[usize],
        head_request: bool,
    ) -> Result<(Answer, usize), WireError> {
        let mut r = ResponseReader::new(head_request);
        let mut pending = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            pending.extend_from_slice(&input[last..c]);
            last = c;
            let (used, done) = r.feed(&pending, &mut ())?;
            pending.drain(..used);
            if let Some(a) = done {
                // Unconsumed: what was fed and not taken, and what was not fed yet.
                return Ok((a, pending.len() + input.len() - last));
            }
        }
        Ok((r.finish()?, pending.len()))
    }

    fn every_split(input: &[u8], head_request: bool, want: Answer, left: usize) {
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(
                    read_split(input, &[a, b], head_request),
                    Ok((want, left)),
                    "cuts {a} {b}"
                );
            }
        }
    }

    #[test]
    fn content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhelloEXTRA";
        let want = Answer {
            status: 200,
            body_len: 5,
            close: true,
        };
        every_split(r, false, want, 5);
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let want = Answer {
            status: 404,
            body_len: 0,
            close: false,
        };
        every_split(r, false, want, 0);
    }

    #[test]
    fn chunked_and_interim() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let want = Answer {
            status: 201,
            body_len: 5,
            close: false,
        };
        every_split(r, false, want, 0);
    }

    #[test]
    fn until_close_and_bodiless() {
        let r = b"HTTP/1.0 200 OK\r\n\r\nall of this";
        let want = Answer {
            status: 200,
            body_len: 11,
            close: true,
        };
        every_split(r, false, want, 0);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        let want = Answer {
            status: 200,
            body_len: 0,
            close: false,
        };
        every_split(r, true, want, 0);
        let r = b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n";
        every_split(
            r,
            false,
            Answer {
                status: 204,
                ..want
            },
            0,
        );
    }

    #[test]
    fn errors() {
        let read = |r: &[u8]| read_split(r, &[], false);
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            Err(WireError::Truncated("response body"))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\n"),
            Err(WireError::Truncated("response head"))
        );
        assert_eq!(read(b""), Err(WireError::Truncated("response head")));
        assert!(matches!(
            read(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(WireError::Head(_))
        ));
        assert_eq!(
            read(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(WireError::Upgrade)
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(WireError::BadLength)
        );
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 1, b'a');
        assert_eq!(read(&huge), Err(WireError::HeadTooLarge(MAX_HEAD)));
    }

    /// Keeps the head and the body, as the agent does.
    #[derive(Default)]
    struct Keep {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    }

    impl ResponseSink for Keep {
        fn head(&mut self, status: u16, headers: &[httparse::Header<'_>]) {
            self.status = status;
            self.headers = headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect();
        }
        fn body(&mut self, data: &[u8]) {
            self.body.extend_from_slice(data);
        }
    }

    #[test]
    fn a_sink_gets_the_final_head_and_the_decoded_body_at_any_cut() {
        let input: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..=input.len() {
            let mut r = ResponseReader::new(false);
            let mut keep = Keep::default();
            let (used, done) = r.feed(&input[..cut], &mut keep).unwrap();
            let mut rest = input[used..].to_vec();
            let done = match done {
                Some(a) => a,
                None => r.feed(&rest, &mut keep).unwrap().1.unwrap(),
            };
            rest.clear();
            assert_eq!((done.status, done.body_len), (201, 5), "cut {cut}");
            assert_eq!(keep.status, 201);
            assert_eq!(
                keep.headers[0],
                ("X-A".to_string(), b"1".to_vec()),
                "cut {cut}"
            );
            assert_eq!(keep.body, b"abcde", "cut {cut}");
        }
    }

    #[test]
    fn a_body_over_the_limit_is_refused_by_every_framing() {
        let cases: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nhello",
        ];
        for input in cases {
            let mut r = ResponseReader::with_body_limit(false, 4);
            assert_eq!(
                r.feed(input, &mut ()),
                Err(WireError::BodyTooLarge(4)),
                "{}",
                String::from_utf8_lossy(input)
            );
            let mut r = ResponseReader::with_body_limit(false, 5);
            let got = r.feed(input, &mut ()).map(|(_, a)| a);
            let got = match got {
                Ok(None) => r.finish().map(Some),
                other => other,
            };
            assert_eq!(got.unwrap().unwrap().body_len, 5);
        }
        // A HEAD answer's Content-Length is no body at all.
        let mut r = ResponseReader::with_body_limit(true, 0);
        let (_, a) = r
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", &mut ())
            .unwrap();
        assert_eq!(a.unwrap().body_len, 0);
    }
}
