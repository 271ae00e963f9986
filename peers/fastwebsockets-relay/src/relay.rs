//! The routes: `/v1/echo` echoes; `/v1/relay/{session}[?role=R]` pairs two connections and
//! forwards every data message whole, same opcode, in order.
//!
//! Pairing follows ringrelay's contract where the load generator can tell: without a role a
//! connection takes the first free of `a` and `b`; a third connection is refused with 409
//! before the upgrade; when one peer leaves the other waits for a new partner. Messages sent
//! before the partner arrives are kept (up to 1 MiB, then that connection is closed with 1009)
//! and delivered first. Left out on purpose (not measured by the bench): events, replacing a
//! peer of the same role (refused with 409 here), tokens, origins, per-IP limits, pings from
//! the relay.
//!
//! Each connection runs one task that reads its own socket (fastwebsockets' `FragmentCollectorRead`,
//! so a message arrives whole; pongs and the close answer go out through the connection's own
//! writer) and writes each message straight into its partner's writer. A writer is shared by
//! its connection (control answers) and the partner (forwarded messages), hence the async
//! mutex around it: the split API's way to let two tasks write one socket.
#[path = "../../common/route.rs"]
mod route;
use route::Route;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{
    FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::sync::Mutex;

/// Messages a peer sent before its partner arrived, with their opcodes.
type Early = Vec<(OpCode, Vec<u8>)>;

/// Kept for a peer whose partner has not arrived yet (as the uWebSockets peer keeps).
const EARLY_LIMIT: usize = 1 << 20;
/// Largest message, as ringrelay's default `limits.max_message_bytes`.
const MAX_MESSAGE: usize = 1 << 20;

type Writer = Rc<Mutex<WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>>>;

/// The sessions of the listener, shared by its tasks on one thread.
#[derive(Clone, Default)]
pub struct Sessions(Rc<RefCell<Inner>>);

#[derive(Default)]
struct Inner {
    map: HashMap<String, [Option<Side>; 2]>,
    next_id: u64,
}

/// One peer of a session.
struct Side {
    id: u64,
    role: String,
    writer: Writer,
    /// Messages it sent before its partner arrived, and their bytes.
    early: Early,
    early_bytes: usize,
}

impl Sessions {
    /// Whether a connection for `session` with `role` could join now (checked before the
    /// upgrade, so that a refusal is a 409 as ringrelay answers).
    fn can_join(&self, session: &str, role: Option<&str>) -> bool {
        let inner = self.0.borrow();
        let Some(sides) = inner.map.get(session) else {
            return true;
        };
        let taken = |r: &str| sides.iter().flatten().any(|s| s.role == r);
        sides.iter().any(Option::is_none) && !role.is_some_and(taken)
    }

    /// Adds a peer; returns its id and the messages its partner sent before it came, or
    /// `None` when the session filled up since `can_join`.
    fn join(&self, session: &str, role: Option<String>, writer: Writer) -> Option<(u64, Early)> {
        if !self.can_join(session, role.as_deref()) {
            return None;
        }
        let mut inner = self.0.borrow_mut();
        inner.next_id += 1;
        let id = inner.next_id;
        let sides = inner.map.entry(session.to_string()).or_default();
        let taken = |r: &str| sides.iter().flatten().any(|s| s.role == r);
        let role = role.unwrap_or_else(|| if taken("a") { "b" } else { "a" }.to_string());
        let free = sides.iter().position(Option::is_none)?;
        let early = sides[1 - free]
            .as_mut()
            .map(|p| {
                p.early_bytes = 0;
                std::mem::take(&mut p.early)
            })
            .unwrap_or_default();
        sides[free] = Some(Side {
            id,
            role,
            writer,
            early: Vec::new(),
            early_bytes: 0,
        });
        Some((id, early))
    }

    /// The writer of `id`'s partner, if it has one now.
    fn partner(&self, session: &str, id: u64) -> Option<Writer> {
        let inner = self.0.borrow();
        let sides = inner.map.get(session)?;
        sides
            .iter()
            .flatten()
            .find(|s| s.id != id)
            .map(|s| s.writer.clone())
    }

    /// Keeps a message from `id` for the partner to come; false past the limit.
    fn keep(&self, session: &str, id: u64, opcode: OpCode, data: Vec<u8>) -> bool {
        let mut inner = self.0.borrow_mut();
        let Some(me) = inner
            .map
            .get_mut(session)
            .and_then(|sides| sides.iter_mut().flatten().find(|s| s.id == id))
        else {
            return false;
        };
        me.early_bytes += data.len();
        me.early.push((opcode, data));
        me.early_bytes <= EARLY_LIMIT
    }

    /// `id` left; the session goes when both have.
    fn leave(&self, session: &str, id: u64) {
        let mut inner = self.0.borrow_mut();
        let Some(sides) = inner.map.get_mut(session) else {
            return;
        };
        for s in sides.iter_mut() {
            if s.as_ref().is_some_and(|s| s.id == id) {
                *s = None;
            }
        }
        if sides.iter().all(Option::is_none) {
            inner.map.remove(session);
        }
    }
}

/// Answers one HTTP request: 101 (and a task for the connection) for a known route with room,
/// otherwise the status ringrelay would give (404, 400, 409, 426) with a JSON body.
pub fn route(mut req: Request<Incoming>, sessions: &Sessions) -> Response<Full<Bytes>> {
    let route = match parse_route(req.uri().path(), req.uri().query()) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Route::Relay { session, role } = &route {
        if !sessions.can_join(session, role.as_deref()) {
            return refusal(
                StatusCode::CONFLICT,
                "session_full",
                "this session already has its peers",
            );
        }
    }
    if !upgrade::is_upgrade_request(&req) {
        return refusal(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "a WebSocket upgrade is required",
        );
    }
    let (resp, fut) = match upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(_) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_upgrade",
                "bad WebSocket upgrade",
            )
        }
    };
    tokio::task::spawn_local(serve(fut, route, sessions.clone()));
    resp.map(|_| Full::new(Bytes::new()))
}

fn parse_route(path: &str, query: Option<&str>) -> Result<Route, Response<Full<Bytes>>> {
    route::parse(path, query).map_err(|(status, code, error)| {
        refusal(
            StatusCode::from_u16(status).expect("a valid status"),
            code,
            error,
        )
    })
}

fn refusal(status: StatusCode, code: &str, error: &str) -> Response<Full<Bytes>> {
    let body = format!(r#"{{"error":"{error}","code":"{code}"}}"#);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

/// Runs an upgraded connection to its end.
async fn serve(fut: UpgradeFut, route: Route, sessions: Sessions) {
    let Ok(mut ws) = fut.await else {
        return;
    };
    ws.set_max_message_size(MAX_MESSAGE);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let (rx, tx) = ws.split(tokio::io::split);
    let mut rx = FragmentCollectorRead::new(rx);
    let tx: Writer = Rc::new(Mutex::new(tx));
    match route {
        Route::Echo => {
            while let Some((op, payload)) = next_message(&mut rx, &tx).await {
                if write(&tx, op, payload).await.is_err() {
                    break;
                }
            }
        }
        Route::Relay { session, role } => {
            let Some((id, early)) = sessions.join(&session, role, tx.clone()) else {
                // The session filled up between the check before the upgrade and now.
                let _ = tx
                    .lock()
                    .await
                    .write_frame(Frame::close(1013, b"session full"))
                    .await;
                return;
            };
            relay(&mut rx, &tx, &sessions, &session, id, early).await;
            sessions.leave(&session, id);
        }
    }
}

/// Delivers what the partner sent before this peer came, then forwards this peer's messages
/// to whoever is its partner at the time (keeping them while it has none).
async fn relay(
    rx: &mut FragmentCollectorRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>,
    tx: &Writer,
    sessions: &Sessions,
    session: &str,
    id: u64,
    early: Vec<(OpCode, Vec<u8>)>,
) {
    for (op, data) in early {
        if write(tx, op, Payload::Owned(data)).await.is_err() {
            return;
        }
    }
    while let Some((op, payload)) = next_message(rx, tx).await {
        match sessions.partner(session, id) {
            // A failed write means the partner is going; its own task clears its side.
            Some(partner) => drop(write(&partner, op, payload).await),
            None => {
                if !sessions.keep(session, id, op, payload.to_vec()) {
                    let close = Frame::close(1009, b"too much before the partner came");
                    let _ = tx.lock().await.write_frame(close).await;
                    return;
                }
            }
        }
    }
}

/// The next data message; `None` when the connection closed or failed. Pongs and the close
/// answer go out through `tx` (fastwebsockets' obligated sends).
async fn next_message(
    rx: &mut FragmentCollectorRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>,
    tx: &Writer,
) -> Option<(OpCode, Payload<'static>)> {
    loop {
        let mut obligated = |frame: Frame<'static>| {
            let tx = tx.clone();
            async move { tx.lock().await.write_frame(frame).await }
        };
        let frame = rx.read_frame(&mut obligated).await.ok()?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => return Some((frame.opcode, frame.payload)),
            OpCode::Close => return None,
            _ => {}
        }
    }
}

async fn write(tx: &Writer, op: OpCode, payload: Payload<'static>) -> Result<(), WebSocketError> {
    tx.lock()
        .await
        .write_frame(Frame::new(true, op, None, payload))
        .await
}
