//! Parsing the request head.

use thiserror::Error;

/// The parts of a request head the relay looks at, owned so the head can cross cores and
/// outlive its read buffer. Header names are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    /// HTTP minor version (0 or 1).
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    #[error("request header block too large")]
    TooLarge,
    #[error("too many request headers")]
    TooManyHeaders,
    #[error("malformed request")]
    Malformed,
}

impl HeadError {
    pub fn status(self) -> u16 {
        self.answer().0
    }

    /// Status, error code and message of the refusal, one arm per error.
    pub fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            HeadError::Malformed => (400, "bad_request", "malformed HTTP request"),
            HeadError::TooLarge => (431, "header_too_large", "request header block too large"),
            HeadError::TooManyHeaders => (431, "header_too_large", "too many request headers"),
        }
    }

    /// The refusal, with the contract's JSON body.
    pub fn response(self) -> super::Response {
        let (status, code, message) = self.answer();
        super::Response::error(status, code, message)
    }
}

impl RequestHead {
    /// A head with these headers (names as given: lower-case them), for unit tests elsewhere.
    #[cfg(test)]
    pub(crate) fn with_headers(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// First value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// Value of a query parameter, percent-decoded; `None` when absent.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the end of a request head as bytes arrive, looking at each byte once, and checks the
/// size and line-count limits against what is buffered so far: a slow client that sends its
/// head a byte at a time costs one pass over it, not one parse per read.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadScan {
    scanned: usize,
    lines: usize,
}

impl HeadScan {
    /// `Ok(Some(n))`: the head is the first `n` bytes of `buf` (which holds at least what the
    /// previous call saw). `Ok(None)`: not finished yet, and within the limits.
    pub fn feed(
        &mut self,
        buf: &[u8],
        max_bytes: usize,
        max_headers: usize,
    ) -> Result<Option<usize>, HeadError> {
        for i in self.scanned..buf.len() {
            if buf[i] != b'\n' {
                continue;
            }
            // A line that is empty (bare LF or CR LF) after at least one other line ends it.
            let blank = (i >= 1 && buf[i - 1] == b'\n')
                || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n');
            if blank {
                self.scanned = i + 1;
                return if i + 1 > max_bytes {
                    Err(HeadError::TooLarge)
                } else {
                    Ok(Some(i + 1))
                };
            }
            self.lines += 1;
            // The request line plus `max_headers` header lines.
            if self.lines > max_headers + 1 {
                return Err(HeadError::TooManyHeaders);
            }
        }
        self.scanned = buf.len();
        if buf.len() >= max_bytes {
            return Err(HeadError::TooLarge);
        }
        Ok(None)
    }
}

/// Parses a request head from the bytes buffered so far. `Ok(None)`: incomplete, read more
/// (the caller enforces `max_bytes` on what it buffers). `Ok(Some((head, n)))`: the head took
/// the first `n` bytes; anything after belongs to the connection's next layer.
pub fn parse_head(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let n = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= max_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
    };
    if n > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let target = req.path.ok_or(HeadError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?;
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Some((
        RequestHead {
            method: req.method.ok_or(HeadError::Malformed)?.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            version: req.version.ok_or(HeadError::Malformed)?,
            headers,
        },
        n,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /v1/relay/abc?role=desktop&events=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nEXTRA";

    #[test]
    fn parses_at_every_cut() {
        let head_len = REQ.len() - 5;
        for cut in 0..head_len {
            assert_eq!(parse_head(&REQ[..cut], 8192, 32), Ok(None), "cut {cut}");
        }
        let (h, n) = parse_head(REQ, 8192, 32).unwrap().unwrap();
        assert_eq!(n, head_len);
        assert_eq!(h.path, "/v1/relay/abc");
        assert_eq!(h.query_param("role").as_deref(), Some("desktop"));
        assert_eq!(h.query_param("events").as_deref(), Some("1"));
        assert_eq!(h.query_param("token"), None);
        assert_eq!(h.header("upgrade"), Some("websocket"));
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend([b'a'; 300]);
        assert_eq!(parse_head(&big, 256, 32), Err(HeadError::TooLarge));
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(req.as_bytes(), 8192, 32),
            Err(HeadError::TooManyHeaders)
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n", 8192, 32),
            Err(HeadError::Malformed)
        );
    }

    /// The scan agrees with a full parse wherever the request is cut, and sees each byte once.
    #[test]
    fn scan_finds_the_end_at_every_cut() {
        let head_len = REQ.len() - 5;
        for cut in 0..REQ.len() {
            let mut scan = HeadScan::default();
            assert_eq!(
                scan.feed(&REQ[..cut], 8192, 32),
                Ok((cut >= head_len).then_some(head_len))
            );
            if cut < head_len {
                assert_eq!(scan.feed(REQ, 8192, 32), Ok(Some(head_len)), "cut {cut}");
            }
        }
        let bare_lf = b"GET / HTTP/1.1\nHost: x\n\nrest";
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(bare_lf, 8192, 32), Ok(Some(bare_lf.len() - 4)));
    }

    #[test]
    fn scan_enforces_limits_before_the_end() {
        let mut scan = HeadScan::default();
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}");
        assert_eq!(
            scan.feed(req.as_bytes(), 8192, 32),
            Err(HeadError::TooManyHeaders)
        );
        let mut scan = HeadScan::default();
        let big = [b'a'; 300];
        assert_eq!(scan.feed(&big[..100], 256, 32), Ok(None));
        assert_eq!(scan.feed(&big, 256, 32), Err(HeadError::TooLarge));
        // A complete head one byte over the limit is refused as well.
        let mut scan = HeadScan::default();
        let req = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan.feed(req, req.len() - 1, 32), Err(HeadError::TooLarge));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
