//! Every answer the bridge makes itself instead of the agent's, one variant each: its status,
//! the contract's JSON `code` and message, its headers and the counter that says why, decided
//! here. [`Failure::reply`] is the one way to turn one into a response, and it counts it, so
//! no step of a bridged request bumps a failure counter of its own.
//!
//! These come after admission (whose refusals are `limits::Refusal`, counted by `refused_by`):
//! a bridged request's answer is counted by its status class (`bridge_responses_4xx`, `5xx`)
//! whoever made it, the agent or the bridge, so the two kinds stay apart.

use super::framing::FramingError;
use super::serve::Reply;
use crate::http::Response;
use crate::stats::{bump, CoreStats};
use std::cell::Cell;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not exactly one Host in HTTP/1.1 (400): two could be read differently by the agent's
    /// HTTP stack and the API behind it.
    BadHost,
    /// A method outside `bridge.allowed_methods` (405, with `Allow`: the list, joined).
    MethodNotAllowed(String),
    /// The head's body framing is ambiguous or unsupported (400, the framing error's code).
    Framing(FramingError),
    /// The body is over `bridge.max_body_bytes` (413).
    BodyTooLarge(usize),
    /// The chunked body does not parse (400).
    BadChunkedBody,
    /// The connection ended before the body was whole (400).
    IncompleteBody,
    /// The client went away while told to go on (`100 Continue`); nobody reads this (400).
    ClientGone,
    /// The body did not arrive within `limits.handshake_timeout` (408).
    BodyTimeout,
    /// No agent is connected to the session (502), `bridge_agent_absent`.
    AgentNotConnected,
    /// The agent holds `bridge.max_in_flight` requests (503, retry in a second),
    /// `bridge_busy_refused`.
    Busy,
    /// No answer within `bridge.timeout` (504), `bridge_timeouts`.
    AgentTimeout,
    /// The agent's answer does not follow the bridge's schema (502).
    BadAgentAnswer,
    /// The agent's answer body is over `bridge.max_response_bytes` (502).
    AgentResponseTooLarge,
    /// The agent left before answering (502).
    AgentDisconnected,
    /// The relay is handing its connections to a new binary and closed the agent's so that
    /// it reconnects there (503, retry in a second; `handover_bridged_refused`).
    Upgrading,
}

impl Failure {
    /// The answer the client reads.
    pub fn response(&self) -> Response {
        let e = Response::error;
        match self {
            Failure::BadHost => e(
                400,
                "bad_host",
                "an HTTP/1.1 request needs exactly one Host header",
            ),
            Failure::MethodNotAllowed(allow) => e(
                405,
                "method_not_allowed",
                "this method is not bridged to the agent",
            )
            .with_header("Allow", allow.clone()),
            Failure::Framing(f) => e(400, f.code(), &f.to_string()),
            Failure::BodyTooLarge(max) => e(
                413,
                "body_too_large",
                &format!("the request body is over bridge.max_body_bytes ({max})"),
            ),
            Failure::BadChunkedBody => e(
                400,
                "bad_chunked_body",
                "the chunked request body is malformed",
            ),
            Failure::IncompleteBody => e(
                400,
                "incomplete_body",
                "the connection ended before the request body was complete",
            ),
            Failure::ClientGone => e(400, "client_gone", "the client went away"),
            Failure::BodyTimeout => e(
                408,
                "body_timeout",
                "the request body did not arrive within limits.handshake_timeout",
            ),
            Failure::AgentNotConnected => e(
                502,
                "agent_not_connected",
                "no agent is connected to this session",
            ),
            Failure::Busy => e(
                503,
                "bridge_busy",
                "the agent has too many requests in flight; retry shortly",
            )
            .with_header("Retry-After", "1"),
            Failure::AgentTimeout => e(
                504,
                "agent_timeout",
                "the agent did not answer within bridge.timeout",
            ),
            Failure::BadAgentAnswer => e(
                502,
                "bad_agent_answer",
                "the agent's answer did not follow the bridge schema",
            ),
            Failure::AgentResponseTooLarge => e(
                502,
                "agent_response_too_large",
                "the agent's answer body is over bridge.max_response_bytes",
            ),
            Failure::AgentDisconnected => e(
                502,
                "agent_disconnected",
                "the agent disconnected before answering",
            ),
            Failure::Upgrading => e(
                503,
                "server_upgrading",
                "the relay is upgrading and the agent is reconnecting; retry shortly",
            )
            .with_header("Retry-After", "1"),
        }
    }

    /// The counter that says why, besides the status class every bridged answer is counted
    /// by.
    pub fn counter<'a>(&self, stats: &'a CoreStats) -> Option<&'a Cell<u64>> {
        match self {
            Failure::AgentNotConnected => Some(&stats.bridge_agent_absent),
            Failure::Busy => Some(&stats.bridge_busy_refused),
            Failure::AgentTimeout => Some(&stats.bridge_timeouts),
            Failure::BadHost
            | Failure::MethodNotAllowed(_)
            | Failure::Framing(_)
            | Failure::BodyTooLarge(_)
            | Failure::BadChunkedBody
            | Failure::IncompleteBody
            | Failure::ClientGone
            | Failure::BodyTimeout
            | Failure::BadAgentAnswer
            | Failure::AgentResponseTooLarge
            | Failure::AgentDisconnected
            | Failure::Upgrading => None,
        }
    }

    /// Counts the failure and makes it the response to write.
    pub fn reply(self, stats: &CoreStats) -> Reply {
        if let Some(c) = self.counter(stats) {
            bump(c, 1);
        }
        self.response().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Failure> {
        vec![
            Failure::BadHost,
            Failure::MethodNotAllowed("GET, POST".into()),
            Failure::Framing(FramingError::BadLength),
            Failure::BodyTooLarge(1024),
            Failure::BadChunkedBody,
            Failure::IncompleteBody,
            Failure::ClientGone,
            Failure::BodyTimeout,
            Failure::AgentNotConnected,
            Failure::Busy,
            Failure::AgentTimeout,
            Failure::BadAgentAnswer,
            Failure::AgentResponseTooLarge,
            Failure::AgentDisconnected,
            Failure::Upgrading,
        ]
    }

    #[test]
    fn each_failure_has_its_answer_and_is_counted_once_by_reply() {
        let mut codes = Vec::new();
        for f in every() {
            let resp = f.response();
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            let code = body["code"].as_str().expect("a code").to_string();
            assert!(body["error"].is_string(), "{f:?}");
            assert!((400..=599).contains(&resp.status), "{f:?}");
            assert!(!codes.contains(&code), "{f:?} shares the code {code}");
            codes.push(code);
            let stats = CoreStats::default();
            let before = f.counter(&stats).map(Cell::get);
            let reply = f.clone().reply(&stats);
            assert_eq!(reply.status, resp.status, "{f:?}");
            assert_eq!(
                f.counter(&stats).map(Cell::get),
                before.map(|n| n + 1),
                "{f:?}"
            );
        }
        let allow = Failure::MethodNotAllowed("GET, POST".into()).response();
        assert!(allow
            .headers
            .iter()
            .any(|(n, v)| *n == "Allow" && v == "GET, POST"));
    }
}
