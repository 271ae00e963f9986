//! Writing an HTTP answer on a connection that ends with it: every answer closes the
//! connection, politely, so the client reads it before the reset an unread request body would
//! otherwise cause. Shared by the HTTP phase, the relay's late refusals, the bridge and the
//! cluster's carrying node, which all sit above this module. Over TLS every answer carries
//! `Strict-Transport-Security` (`security.hsts_max_age`), added here so no path forgets it.

use super::Response;
use crate::stats::{CoreStats, RefusedStatus};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::time::Duration;

/// A stream an answer is written on: plain TCP, or the server's stream that may be TLS.
pub trait AnswerStream: AsyncReadRent + AsyncWriteRent {
    /// The `Strict-Transport-Security` value every answer on it carries, if any (TLS only).
    fn hsts(&self) -> Option<String> {
        None
    }

    /// Header lines (each ending in CRLF) every answer on it carries, if any: CORS for a
    /// bridged request from an allowed origin (`bridge::cors`), set once its head is read.
    fn answer_lines(&self) -> Option<&str> {
        None
    }

    /// What the access log knows of the connection (`None`: it is off, or not logged here).
    fn access_note(&self) -> Option<&crate::stats::access::Note> {
        None
    }
}

impl AnswerStream for TcpStream {}

/// Writes a refusal and counts it by its status in `refused_by` (the one place that does).
pub async fn refuse(stats: &CoreStats, stream: &mut impl AnswerStream, resp: Response) {
    stats.refused(RefusedStatus::Status(resp.status));
    if let Some(note) = stream.access_note() {
        crate::stats::access::refused(stats, Some(note), Some(resp.status), &error_code(&resp));
    }
    answer(stream, resp).await;
}

/// The contract's error `code` in a refusal's JSON body (`""` when it has none).
pub(crate) fn error_code(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("code")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Writes an answer that is not a refusal (health, stats, the demo page), then closes.
pub async fn answer(stream: &mut impl AnswerStream, resp: Response) {
    write_and_close(stream, resp.to_bytes()).await
}

/// Adds `Strict-Transport-Security: value` after the status line of the response in `bytes`
/// (which has none: the relay never writes one of its own).
pub fn add_hsts(bytes: &mut Vec<u8>, value: &str) {
    let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let line = format!("Strict-Transport-Security: {value}\r\n");
    bytes.splice(eol + 2..eol + 2, line.into_bytes());
}

/// Adds header `lines` (each ending in CRLF) after the status line of the response in
/// `bytes`.
pub fn add_lines(bytes: &mut Vec<u8>, lines: &str) {
    let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    bytes.splice(eol + 2..eol + 2, lines.bytes());
}

/// Writes a whole HTTP response, then closes so the client reads it before any reset an
/// unread request body would cause.
pub async fn write_and_close(stream: &mut impl AnswerStream, mut bytes: Vec<u8>) {
    if let Some(v) = stream.hsts() {
        add_hsts(&mut bytes, &v);
    }
    if let Some(lines) = stream.answer_lines() {
        add_lines(&mut bytes, lines);
    }
    let (r, _) = stream.write_all(bytes).await;
    if r.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 4096];
        for _ in 0..16 {
            let (r, b) = stream.read(buf).await;
            buf = b;
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_millis(500), drain).await;
}

#[cfg(test)]
mod tests {
    use super::add_hsts;

    #[test]
    fn hsts_goes_right_after_the_status_line() {
        let mut b = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        add_hsts(&mut b, "max-age=60");
        assert_eq!(
            b,
            b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\nContent-Length: 0\r\n\r\n"
        );
        let mut none = b"no line end".to_vec();
        add_hsts(&mut none, "max-age=60");
        assert_eq!(none, b"no line end");
    }
}
