//! How long a bridged request's body is, from its head alone. Anything two parsers could
//! read differently (RFC 9112 section 6.3 and the request-smuggling attacks built on it) is
//! refused with 400 instead of guessed at.

use crate::http::RequestHead;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (no Content-Length, no Transfer-Encoding).
    Empty,
    Fixed(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FramingError {
    #[error("both Content-Length and Transfer-Encoding are present")]
    LengthAndEncoding,
    #[error("Content-Length is not a single non-negative integer")]
    BadLength,
    #[error("a Transfer-Encoding other than chunked alone")]
    UnsupportedEncoding,
}

impl FramingError {
    /// The machine code of the refusal (status 400 for all).
    pub fn code(self) -> &'static str {
        match self {
            FramingError::LengthAndEncoding => "ambiguous_framing",
            FramingError::BadLength => "bad_content_length",
            FramingError::UnsupportedEncoding => "unsupported_transfer_encoding",
        }
    }
}

fn values<'a>(head: &'a RequestHead, name: &'a str) -> impl Iterator<Item = &'a str> {
    head.headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub fn body_length(head: &RequestHead) -> Result<BodyLength, FramingError> {
    let lengths: Vec<&str> = values(head, "content-length")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let encodings: Vec<String> = values(head, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    match (lengths.is_empty(), encodings.is_empty()) {
        (true, true) => Ok(BodyLength::Empty),
        (false, false) => Err(FramingError::LengthAndEncoding),
        (true, false) => match encodings.as_slice() {
            [only] if only == "chunked" => Ok(BodyLength::Chunked),
            _ => Err(FramingError::UnsupportedEncoding),
        },
        (false, true) => {
            // Repeated, even with the same value, is refused: a proxy in front may have
            // picked another one.
            let [one] = lengths.as_slice() else {
                return Err(FramingError::BadLength);
            };
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::BadLength);
            }
            one.parse()
                .map(BodyLength::Fixed)
                .map_err(|_| FramingError::BadLength)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::with_headers("POST", "/v1/http/s/x", headers)
    }

    #[test]
    fn unambiguous_framings() {
        assert_eq!(body_length(&head(&[])), Ok(BodyLength::Empty));
        let cl = head(&[("content-length", "42")]);
        assert_eq!(body_length(&cl), Ok(BodyLength::Fixed(42)));
        let te = head(&[("transfer-encoding", "Chunked")]);
        assert_eq!(body_length(&te), Ok(BodyLength::Chunked));
    }

    #[test]
    fn anything_two_parsers_could_read_differently_is_refused() {
        use FramingError::*;
        let cases: &[(&[(&str, &str)], FramingError)] = &[
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                LengthAndEncoding,
            ),
            (
                &[("content-length", "5"), ("content-length", "5")],
                BadLength,
            ),
            (&[("content-length", "5, 5")], BadLength),
            (&[("content-length", "-1")], BadLength),
            (&[("content-length", "+5")], BadLength),
            (&[("content-length", "0x10")], BadLength),
            (&[("content-length", "")], BadLength),
            (&[("content-length", "99999999999999999999999")], BadLength),
            (
                &[("transfer-encoding", "gzip, chunked")],
                UnsupportedEncoding,
            ),
            (
                &[("transfer-encoding", "chunked, chunked")],
                UnsupportedEncoding,
            ),
            (&[("transfer-encoding", "identity")], UnsupportedEncoding),
        ];
        for (headers, want) in cases {
            assert_eq!(body_length(&head(headers)), Err(*want), "{headers:?}");
        }
    }
}
