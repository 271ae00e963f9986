//! The two JSON messages of the bridge (the schema is in docs/bridge.md). A request goes to the
//! agent as one text frame; the agent's answer comes back as one. The agent is another party's
//! program: its answer is checked field by field, and nothing in it may break the HTTP
//! response it becomes (no CR or LF in headers, no status outside 200–599).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Request ids the relay generates are short; an agent echoing a longer one is broken.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpRequestMsg {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub method: String,
    /// Path below the session, with the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
}

impl HttpRequestMsg {
    pub fn new(
        id: String,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> HttpRequestMsg {
        HttpRequestMsg {
            kind: "http_request",
            id,
            method,
            path,
            headers,
            body_b64: STANDARD.encode(body),
        }
    }

    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseMsg {
    pub id: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body_b64: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AgentReplyError {
    #[error("the agent's answer is not an http_response object of the documented shape")]
    Shape,
    #[error("the agent's answer has an empty or overlong id")]
    Id,
    #[error("the agent's answer has a status outside 200-599")]
    Status,
    #[error("the agent's answer has a header that is not a valid HTTP header")]
    Header,
    #[error("the agent's answer has a body that is not valid base64")]
    Body,
    #[error("the agent's answer has a body over the limit")]
    TooLarge,
}

fn token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Parses and checks an agent's answer; the body may be at most `max_body` bytes once decoded.
pub fn parse_response(json: &[u8], max_body: usize) -> Result<HttpResponseMsg, AgentReplyError> {
    let w: Wire = serde_json::from_slice(json).map_err(|_| AgentReplyError::Shape)?;
    if w.kind != "http_response" {
        return Err(AgentReplyError::Shape);
    }
    if w.id.is_empty() || w.id.len() > MAX_ID_LEN {
        return Err(AgentReplyError::Id);
    }
    if !(200..=599).contains(&w.status) {
        return Err(AgentReplyError::Status);
    }
    if !w.headers.iter().all(|(n, v)| token(n) && field_value(v)) {
        return Err(AgentReplyError::Header);
    }
    // Refuse by the encoded length first, so an oversized body is never decoded.
    if w.body_b64.len() / 4 * 3 > max_body + 3 {
        return Err(AgentReplyError::TooLarge);
    }
    let body = STANDARD
        .decode(w.body_b64.as_bytes())
        .map_err(|_| AgentReplyError::Body)?;
    if body.len() > max_body {
        return Err(AgentReplyError::TooLarge);
    }
    Ok(HttpResponseMsg {
        id: w.id,
        status: w.status,
        headers: w.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_serialises_to_the_documented_shape() {
        let m = HttpRequestMsg::new(
            "r1".into(),
            "POST".into(),
            "/users?x=1".into(),
            vec![("accept".into(), "*/*".into())],
            b"\x00\xffhi",
        );
        let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "http_request", "id": "r1", "method": "POST", "path": "/users?x=1",
                "headers": [["accept", "*/*"]], "body_b64": "AP9oaQ=="
            })
        );
    }

    #[test]
    fn a_good_answer_parses() {
        let json = br#"{"type":"http_response","id":"r1","status":204,"headers":[["x-a","1"]],"body_b64":"aGk="}"#;
        let r = parse_response(json, 2).unwrap();
        assert_eq!(
            (r.id.as_str(), r.status, r.body.as_slice()),
            ("r1", 204, &b"hi"[..])
        );
        assert_eq!(r.headers, vec![("x-a".to_string(), "1".to_string())]);
        // Headers and body may be left out.
        let r = parse_response(br#"{"type":"http_response","id":"r","status":404}"#, 0).unwrap();
        assert!(r.headers.is_empty() && r.body.is_empty());
    }

    #[test]
    fn broken_answers_are_refused_by_kind() {
        use AgentReplyError::*;
        let long_id = "i".repeat(MAX_ID_LEN + 1);
        let cases: Vec<(String, AgentReplyError)> = vec![
            ("not json".into(), Shape),
            (r#"{"type":"http_request","id":"r","status":200}"#.into(), Shape),
            (r#"{"type":"http_response","status":200}"#.into(), Shape),
            (r#"{"type":"http_response","id":"r","status":"200"}"#.into(), Shape),
            (r#"{"type":"http_response","id":"r","status":200,"headers":[["a"]]}"#.into(), Shape),
            (r#"{"type":"http_response","id":"","status":200}"#.into(), Id),
            (format!(r#"{{"type":"http_response","id":"{long_id}","status":200}}"#), Id),
            (r#"{"type":"http_response","id":"r","status":101}"#.into(), Status),
            (r#"{"type":"http_response","id":"r","status":600}"#.into(), Status),
            (
                r#"{"type":"http_response","id":"r","status":200,"headers":[["x","a\r\nSet-Cookie: s=1"]]}"#.into(),
                Header,
            ),
            (r#"{"type":"http_response","id":"r","status":200,"headers":[["bad name","v"]]}"#.into(), Header),
            (r#"{"type":"http_response","id":"r","status":200,"body_b64":"%%%"}"#.into(), Body),
            (r#"{"type":"http_response","id":"r","status":200,"body_b64":"aGVsbG8="}"#.into(), TooLarge),
        ];
        for (json, want) in cases {
            assert_eq!(parse_response(json.as_bytes(), 4), Err(want), "{json}");
        }
        // Long enough to be refused unread: far over the limit when encoded.
        let big = format!(
            r#"{{"type":"http_response","id":"r","status":200,"body_b64":"{}"}}"#,
            "A".repeat(4000)
        );
        assert_eq!(parse_response(big.as_bytes(), 100), Err(TooLarge));
    }
}
