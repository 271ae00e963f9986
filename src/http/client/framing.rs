//! How long a message body is, from its head. No I/O. Chunked bodies are decoded by the
//! crate's one decoder, `crate::http::chunked`.

use super::WireError;

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
}
