//! Every refusal of a request before its upgrade (or before its bridged request goes to the
//! agent), one variant each: the answer (status, the contract's JSON `code` and message,
//! headers) and the counter that says why, both decided here. [`Refusal::write`] is the one
//! way to send one: it bumps the variant's counter and `refused_by` the status, so no caller
//! counts a refusal of its own.

use super::capacity::RETRY_AFTER_S;
use super::ip::IpRefusal;
use crate::auth::AuthError;
use crate::http::write::AnswerStream;
use crate::http::{HeadError, Response, RouteError};
use crate::stats::{bump, CoreStats};
use std::cell::Cell;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request head breaks HTTP or the head limits (400, 431).
    Head(HeadError),
    /// The target is no valid route, session id, role or resume count (400).
    Route(RouteError),
    /// No such route on this listener (404).
    NotFound,
    /// A WebSocket route without a valid upgrade, as `http::upgrade` answers it (400, 405,
    /// 426); counted by status only.
    Upgrade(Response),
    /// The client's address connects too fast (`limits.ip_connect_rate`): 429,
    /// `ip_rate_refused`.
    IpRate(IpRefusal),
    /// The client's address holds too many open connections (`limits.max_connections_per_ip`):
    /// 429, `ip_open_refused`.
    IpOpen(IpRefusal),
    /// The client's address is outside the listener's address lists
    /// (`security.allowed_cidrs`/`denied_cidrs`, or `admin.allowed_cidrs` when `admin`):
    /// 403 `ip_not_allowed`, `ip_list_refused` or `admin_ip_refused`.
    IpList { admin: bool },
    /// The Origin may not connect (`security.allowed_origins`): 403, `origin_refused`.
    Origin(&'static str),
    /// The token is missing, invalid or grants less (401, 403), `auth_refused`.
    Auth(AuthError),
    /// Whole-server capacity (`limits.max_connections`, `limits.max_sessions`): 503,
    /// `capacity_refused`.
    Capacity(&'static str),
    /// This worker holds `limits.max_connections_per_worker` connections: 503,
    /// `worker_full_refused`.
    WorkerFull,
    /// Both of the session's seats are taken by live peers of other roles (409).
    SessionFull,
    /// The core the connection belongs on has a full inbox (503, retry in a second); the
    /// failed handoff itself is `handoffs_refused`, counted where it fails.
    HandoffBusy,
    /// This node cannot carry the peer to its session's owner node: 503,
    /// `cluster_carry_failed`.
    OwnerUnreachable(&'static str),
    /// A peer carried here by another node whose session has moved on meanwhile: it is never
    /// carried twice (503 `owner_moved`, retry in a second), `cluster_unavailable`.
    OwnerMoved,
    /// The session's owner could not be looked up (Redis down, the breaker open, the queue
    /// full, no answer in time; the reason says which): 503 `cluster_unavailable`, retry in
    /// two seconds, `cluster_unavailable`.
    ClusterUnavailable(&'static str),
    /// A plain-text request on the TLS listener: 400 in clear, saying so,
    /// `tls_handshake_failed_not_tls`.
    NotTls,
    /// A CORS preflight on the bridge from an origin not in `cors.allowed_origins`: 403 with
    /// no CORS headers, `cors_preflights_refused` (bridge/cors.rs).
    CorsOrigin,
    /// A tunnel data connection whose id names no public connection waiting here (404
    /// `tunnel_connection_unknown`), `tunnel_unknown_refused`.
    TunnelUnknown,
}

impl Refusal {
    /// The answer the client reads.
    pub fn response(&self) -> Response {
        match self {
            Refusal::Head(e) => e.response(),
            Refusal::Route(e) => e.response(),
            Refusal::NotFound => Response::error(404, "not_found", "no such route"),
            Refusal::Upgrade(r) => r.clone(),
            Refusal::IpRate(r) | Refusal::IpOpen(r) => ip_answer(*r),
            Refusal::Origin(reason) => Response::error(403, "origin_not_allowed", reason),
            Refusal::IpList { .. } => Response::error(
                403,
                "ip_not_allowed",
                "connections from this address are not allowed",
            ),
            Refusal::Auth(e) => auth_answer(*e),
            Refusal::Capacity(reason) => retry_later("at_capacity", reason, RETRY_AFTER_S),
            Refusal::WorkerFull => retry_later(
                "at_capacity",
                "this worker is at its connection limit",
                RETRY_AFTER_S,
            ),
            Refusal::SessionFull => {
                Response::error(409, "session_full", "this session already has two peers")
            }
            Refusal::HandoffBusy => retry_later(
                "overloaded",
                "the worker this connection belongs on is busy; retry shortly",
                1,
            ),
            Refusal::OwnerUnreachable(msg) => retry_later("owner_unreachable", msg, 1),
            Refusal::OwnerMoved => {
                retry_later("owner_moved", "the session moved to another node; retry", 1)
            }
            Refusal::ClusterUnavailable(why) => retry_later("cluster_unavailable", why, 2),
            Refusal::NotTls => Response::error(
                400,
                "tls_required",
                "this port speaks TLS: use https:// or wss://",
            ),
            Refusal::CorsOrigin => Response::error(
                403,
                "cors_origin_not_allowed",
                "this origin may not call the bridge from a browser (cors.allowed_origins)",
            ),
            Refusal::TunnelUnknown => Response::error(
                404,
                "tunnel_connection_unknown",
                "no public connection waits for this id (unknown, expired or already joined)",
            ),
        }
    }

    /// The counter that says why, besides `refused_by` the status.
    pub fn counter<'a>(&self, stats: &'a CoreStats) -> Option<&'a Cell<u64>> {
        match self {
            Refusal::Head(_)
            | Refusal::Route(_)
            | Refusal::NotFound
            | Refusal::Upgrade(_)
            | Refusal::SessionFull
            | Refusal::HandoffBusy => None,
            Refusal::IpRate(_) => Some(&stats.ip_rate_refused),
            Refusal::IpOpen(_) => Some(&stats.ip_open_refused),
            Refusal::Origin(_) => Some(&stats.origin_refused),
            Refusal::IpList { admin: false } => Some(&stats.ip_list_refused),
            Refusal::IpList { admin: true } => Some(&stats.admin_ip_refused),
            Refusal::Auth(_) => Some(&stats.auth_refused),
            Refusal::Capacity(_) => Some(&stats.capacity_refused),
            Refusal::WorkerFull => Some(&stats.worker_full_refused),
            Refusal::OwnerUnreachable(_) => Some(&stats.cluster_carry_failed),
            Refusal::NotTls => Some(&stats.tls_handshake_failed_not_tls),
            Refusal::CorsOrigin => Some(&stats.cors_preflights_refused),
            Refusal::TunnelUnknown => Some(&stats.tunnel_unknown_refused),
            Refusal::OwnerMoved | Refusal::ClusterUnavailable(_) => {
                Some(&stats.cluster_unavailable)
            }
        }
    }

    /// Counts the refusal, then writes it and closes the connection.
    pub async fn write(self, stats: &CoreStats, stream: &mut impl AnswerStream) {
        if let Some(c) = self.counter(stats) {
            bump(c, 1);
        }
        crate::http::write::refuse(stats, stream, self.response()).await;
    }
}

/// A 503 that says when to come back: every refusal for a lack of room, here or elsewhere.
fn retry_later(code: &str, message: &str, retry_after_s: u64) -> Response {
    Response::error(503, code, message).with_header("Retry-After", retry_after_s.to_string())
}

fn ip_answer(r: IpRefusal) -> Response {
    match r {
        IpRefusal::Rate { retry_after_s } => Response::error(
            429,
            "rate_limited",
            "too many new connections from this address; retry later",
        )
        .with_header("Retry-After", retry_after_s.to_string()),
        IpRefusal::Open => Response::error(
            429,
            "too_many_connections",
            "too many open connections from this address",
        )
        .with_header("Retry-After", "5"),
    }
}

fn auth_answer(e: AuthError) -> Response {
    let resp = Response::error(e.status(), e.code(), e.message());
    // RFC 7235 section 3.1: a 401 names the scheme; RFC 6750 section 3 says how.
    match e {
        // No token came (a certificate no grant names is not a token): no error code, RFC
        // 6750 section 3.1.
        AuthError::Missing | AuthError::CertNotGranted => {
            resp.with_header("WWW-Authenticate", "Bearer")
        }
        _ if e.status() == 401 => {
            resp.with_header("WWW-Authenticate", "Bearer error=\"invalid_token\"")
        }
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Refusal> {
        vec![
            Refusal::Head(HeadError::TooLarge),
            Refusal::NotFound,
            Refusal::IpRate(IpRefusal::Rate { retry_after_s: 3 }),
            Refusal::IpOpen(IpRefusal::Open),
            Refusal::Origin("this origin may not connect"),
            Refusal::Auth(AuthError::Missing),
            Refusal::Capacity("the server is at its connection limit"),
            Refusal::WorkerFull,
            Refusal::SessionFull,
            Refusal::HandoffBusy,
            Refusal::OwnerUnreachable("the session's node cannot be reached"),
            Refusal::ClusterUnavailable("the cluster registry cannot be reached"),
            Refusal::CorsOrigin,
            Refusal::TunnelUnknown,
            Refusal::IpList { admin: false },
            Refusal::IpList { admin: true },
        ]
    }

    #[test]
    fn each_refusal_has_its_answer_and_its_own_counter() {
        let stats = CoreStats::default();
        let mut counters: Vec<*const Cell<u64>> = Vec::new();
        for r in every() {
            let resp = r.response();
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert!(
                body["code"].is_string() && body["error"].is_string(),
                "{r:?}"
            );
            assert!(resp.status >= 400, "{r:?}");
            if let Some(c) = r.counter(&stats) {
                assert!(
                    !counters.contains(&(c as *const _)),
                    "{r:?} shares a counter"
                );
                counters.push(c);
            }
        }
        assert_eq!(counters.len(), 12);
        // The two ways a lookup fails share their counter, each with its own answer.
        let (moved, down) = (
            Refusal::OwnerMoved,
            Refusal::ClusterUnavailable("the cluster registry cannot be reached"),
        );
        assert!(std::ptr::eq(
            moved.counter(&stats).unwrap(),
            down.counter(&stats).unwrap()
        ));
        let retry = |r: &Refusal| {
            let resp = r.response();
            let v = resp.headers.iter().find(|(n, _)| *n == "Retry-After");
            (resp.status, v.map(|(_, v)| v.clone()))
        };
        assert_eq!(retry(&moved), (503, Some("1".to_string())));
        assert_eq!(retry(&down), (503, Some("2".to_string())));
        let rate = Refusal::IpRate(IpRefusal::Rate { retry_after_s: 3 }).response();
        assert_eq!((rate.status, rate.headers[1].1.as_str()), (429, "3"));
        let auth = Refusal::Auth(AuthError::Signature).response();
        assert!(auth
            .headers
            .iter()
            .any(|(n, v)| *n == "WWW-Authenticate" && v.contains("invalid_token")));
    }
}
