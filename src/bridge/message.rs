//! The two JSON messages of the bridge (the schema is in docs/bridge.md), both directions in
//! one place: the relay writes requests and reads answers, the agent (`crate::agent`) reads
//! requests and writes answers. A request goes to the agent as one text frame; the agent's
//! answer comes back as one. Each side checks what it reads field by field, and nothing in an
//! answer may break the HTTP response it becomes (no CR or LF in headers, no status outside
//! 200–599), nor anything in a request the HTTP request the agent makes of it.

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
    /// The key the agent's connection was given in its upgrade answer: marks the request as
    /// the relay's (docs/bridge.md). Written early, so a cut request still shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_key: Option<String>,
    pub method: String,
    /// Path below the session, with the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
}

impl HttpRequestMsg {
    pub fn new(
        id: String,
        relay_key: Option<String>,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> HttpRequestMsg {
        HttpRequestMsg {
            kind: "http_request",
            id,
            relay_key,
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

/// An agent's answer, decoded; the struct is the session layer's, since the requests waiting
/// for it are kept there (`session::bridged`).
pub use crate::session::bridged::HttpResponseMsg;

/// The answer's wire form: `type` first, then `id`, so that the relay decides at once and an
/// oversized answer's id is read before its body (any order works, this one is cheapest).
#[derive(Serialize)]
struct AnswerOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: u16,
    headers: &'a [(String, String)],
    body_b64: String,
}

impl HttpResponseMsg {
    /// The answer as the agent sends it.
    pub fn to_json(&self) -> String {
        let out = AnswerOut {
            kind: "http_response",
            id: &self.id,
            status: self.status,
            headers: &self.headers,
            body_b64: STANDARD.encode(&self.body),
        };
        // Strings and integers always serialise.
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// A request as the agent reads it: the relay's `http_request`, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgedRequest {
    pub id: String,
    pub relay_key: Option<String>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct RequestIn {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    relay_key: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body_b64: String,
}

/// Just enough of a broken request to answer it.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestMsgError {
    #[error("not an http_request message")]
    NotARequest,
    #[error("the http_request message breaks the schema")]
    Shape,
    #[error("the request method is not an HTTP token")]
    Method,
    #[error("the request path does not start with / or holds a space or control character")]
    Path,
    #[error("a request header is not a valid HTTP header")]
    Header,
    #[error("the request body is not valid base64")]
    Body,
}

/// Reads an `http_request`. On failure, the request's id comes with the error when it could
/// be read (so the agent can answer that request), and `NotARequest` means the message is
/// something else: another peer's message, to be left alone.
pub fn parse_request(json: &[u8]) -> Result<BridgedRequest, (Option<String>, RequestMsgError)> {
    let w: RequestIn = match serde_json::from_slice(json) {
        Ok(w) => w,
        Err(_) => {
            return Err(match serde_json::from_slice::<IdOnly>(json) {
                Ok(i) if i.kind == "http_request" && valid_id(&i.id) => {
                    (Some(i.id), RequestMsgError::Shape)
                }
                _ => (None, RequestMsgError::NotARequest),
            })
        }
    };
    if w.kind != "http_request" {
        return Err((None, RequestMsgError::NotARequest));
    }
    if !valid_id(&w.id) {
        return Err((None, RequestMsgError::Shape));
    }
    let fail = |e| Err((Some(w.id.clone()), e));
    if !token(&w.method) {
        return fail(RequestMsgError::Method);
    }
    if !w.path.starts_with('/') || w.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return fail(RequestMsgError::Path);
    }
    if !w.headers.iter().all(|(n, v)| token(n) && field_value(v)) {
        return fail(RequestMsgError::Header);
    }
    let Ok(body) = STANDARD.decode(w.body_b64.as_bytes()) else {
        return fail(RequestMsgError::Body);
    };
    Ok(BridgedRequest {
        id: w.id,
        relay_key: w.relay_key,
        method: w.method,
        path: w.path,
        headers: w.headers,
        body,
    })
}

/// Just the key of a request that broke the schema (its JSON being readable).
#[derive(Deserialize)]
struct KeyOnly {
    #[serde(default)]
    relay_key: Option<String>,
}

/// The `relay_key` of a request `parse_request` refused with an id, so the agent can tell
/// whether the relay sent it before answering under that id.
pub fn request_key(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<KeyOnly>(json).ok()?.relay_key
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
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
    if !valid_id(&w.id) {
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
            None,
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

    #[test]
    fn an_answer_is_recognised_by_the_relay_and_round_trips() {
        let m = HttpResponseMsg {
            id: "7f".into(),
            status: 201,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"\x00\xffok".to_vec(),
        };
        let json = m.to_json();
        let s = super::super::sniff::sniff(json.as_bytes());
        assert_eq!((s.answer(true), s.id()), (Some(true), Some("7f")));
        assert!(
            json.starts_with(r#"{"type":"http_response","id":"7f","#),
            "{json}"
        );
        assert_eq!(parse_response(json.as_bytes(), 16), Ok(m));
    }

    #[test]
    fn a_request_the_relay_writes_is_read_back_whole() {
        let out = HttpRequestMsg::new(
            "a1".into(),
            Some("k".into()),
            "PATCH".into(),
            "/u/1?x=%20".into(),
            vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
            b"\x00body\xff",
        );
        let r = parse_request(out.to_json().as_bytes()).unwrap();
        assert_eq!(
            r,
            BridgedRequest {
                id: "a1".into(),
                relay_key: Some("k".into()),
                method: "PATCH".into(),
                path: "/u/1?x=%20".into(),
                headers: out.headers.clone(),
                body: b"\x00body\xff".to_vec(),
            }
        );
    }

    #[test]
    fn broken_requests_name_their_id_when_it_can_be_read() {
        use RequestMsgError::*;
        let req = |over: &str| {
            format!(
                r#"{{"type":"http_request","id":"r9","method":"GET","path":"/","headers":[],"body_b64":""{over}}}"#
            )
        };
        assert!(parse_request(req("").as_bytes()).is_ok());
        let cases: Vec<(String, Option<&str>, RequestMsgError)> = vec![
            ("hello".into(), None, NotARequest),
            (r#"{"type":"chat","id":"r9"}"#.into(), None, NotARequest),
            (
                r#"{"type":"http_response","id":"r9","status":200}"#.into(),
                None,
                NotARequest,
            ),
            (
                r#"{"type":"http_request","id":"r9"}"#.into(),
                Some("r9"),
                Shape,
            ),
            (
                r#"{"type":"http_request","id":""}"#.into(),
                None,
                NotARequest,
            ),
            (req("").replace(r#""GET""#, r#""G T""#), Some("r9"), Method),
            (
                req("").replace(r#""path":"/""#, r#""path":"x""#),
                Some("r9"),
                Path,
            ),
            (
                req("").replace(r#""path":"/""#, r#""path":"/a\r\nX: 1""#),
                Some("r9"),
                Path,
            ),
            (
                req("").replace(r#""headers":[]"#, r#""headers":[["x","a\nb"]]"#),
                Some("r9"),
                Header,
            ),
            (
                req("").replace(r#""headers":[]"#, r#""headers":[["a b","1"]]"#),
                Some("r9"),
                Header,
            ),
            (
                req("").replace(r#""body_b64":"""#, r#""body_b64":"%%""#),
                Some("r9"),
                Body,
            ),
        ];
        for (json, id, want) in cases {
            assert_eq!(
                parse_request(json.as_bytes()),
                Err((id.map(String::from), want)),
                "{json}"
            );
        }
    }
}
