//! The routes: `/v1/echo` echoes; `/v1/relay/{session}[?role=R]` pairs two connections and
//! forwards every data message whole, same opcode, in order.
//!
//! Pairing follows ringrelay's contract where the load generator can tell: without a role a
//! connection takes the first free of `a` and `b`; a third connection is refused with 409
//! before the upgrade; when one peer leaves the other waits for a new partner. Messages sent
//! before the partner arrives are kept (up to 1 MiB, then reading stops) and delivered first.
//! Left out on purpose (not measured by the bench): events, replacing a peer of the same role
//! (refused with 409 here), tokens, origins, per-IP limits, pings from the relay.
//!
//! The first peer's task owns the pair once the second arrives (handed over by a oneshot);
//! two pumps, one per direction, run in that task, so a message goes from one socket to the
//! other without crossing a channel or another task.
#[path = "../../common/route.rs"]
mod route;
use route::Route;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Kept for a peer whose partner has not arrived yet (as the uWebSockets peer keeps).
const EARLY_LIMIT: usize = 1 << 20;
/// Largest message, as ringrelay's default `limits.max_message_bytes`.
const MAX_MESSAGE: usize = 1 << 20;

type Ws<S> = WebSocketStream<S>;

/// The sessions of one listener, shared by its tasks on one thread.
pub struct Sessions<S>(Rc<RefCell<Inner<S>>>);

impl<S> Default for Sessions<S> {
    fn default() -> Self {
        Sessions(Rc::new(RefCell::new(Inner {
            map: HashMap::new(),
            next_id: 0,
        })))
    }
}

impl<S> Clone for Sessions<S> {
    fn clone(&self) -> Self {
        Sessions(self.0.clone())
    }
}

struct Inner<S> {
    map: HashMap<String, Slot<S>>,
    next_id: u64,
}

enum Slot<S> {
    /// One peer, waiting in its own task; the second is sent to it through `partner`.
    Waiting {
        id: u64,
        role: String,
        partner: oneshot::Sender<Peer<S>>,
    },
    /// Two peers, relayed by the first one's task.
    Paired,
}

struct Peer<S> {
    ws: Ws<S>,
    role: String,
    id: u64,
}

/// An upgraded connection and the route it asked for.
pub enum Conn<S> {
    Echo(Ws<S>),
    Relay {
        session: String,
        role: Option<String>,
        ws: Ws<S>,
    },
}

/// What became of a connection that joined its session.
enum Joined<S> {
    /// The first of its session: it waits for a partner on `rx`.
    First(Peer<S>, oneshot::Receiver<Peer<S>>),
    /// Handed to the waiting peer's task.
    Handed,
    /// The session filled up between the check before the upgrade and now.
    Full(Ws<S>),
}

impl<S> Sessions<S> {
    /// Whether a connection for `session` with `role` could join now (checked before the
    /// upgrade, so that a refusal is a 409 as ringrelay answers).
    fn can_join(&self, session: &str, role: Option<&str>) -> bool {
        match self.0.borrow().map.get(session) {
            None => true,
            Some(Slot::Waiting { role: taken, .. }) => role != Some(taken.as_str()),
            Some(Slot::Paired) => false,
        }
    }

    fn join(&self, session: String, role: Option<String>, ws: Ws<S>) -> Joined<S> {
        let mut inner = self.0.borrow_mut();
        inner.next_id += 1;
        let id = inner.next_id;
        let waiting = match inner.map.remove(&session) {
            None => None,
            Some(Slot::Waiting {
                id: first,
                role: taken,
                partner,
            }) => Some((first, taken, partner)),
            Some(Slot::Paired) => {
                inner.map.insert(session, Slot::Paired);
                return Joined::Full(ws);
            }
        };
        let Some((first, taken, partner)) = waiting else {
            let role = role.unwrap_or_else(|| "a".to_string());
            let (tx, rx) = oneshot::channel();
            inner.map.insert(session, waiting_slot(id, &role, tx));
            return Joined::First(Peer { ws, role, id }, rx);
        };
        let role = match role {
            Some(r) if r == taken => {
                inner
                    .map
                    .insert(session, waiting_slot(first, &taken, partner));
                return Joined::Full(ws);
            }
            Some(r) => r,
            None if taken == "a" => "b".to_string(),
            None => "a".to_string(),
        };
        inner.map.insert(session.clone(), Slot::Paired);
        match partner.send(Peer { ws, role, id }) {
            Ok(()) => Joined::Handed,
            // The waiting task is gone without clearing its slot (it always clears it first,
            // so this does not happen): this peer becomes the first instead.
            Err(peer) => {
                let (tx, rx) = oneshot::channel();
                inner
                    .map
                    .insert(session, waiting_slot(peer.id, &peer.role, tx));
                Joined::First(peer, rx)
            }
        }
    }

    /// A peer whose partner left waits again.
    fn wait_again(&self, session: &str, peer: &Peer<S>) -> oneshot::Receiver<Peer<S>> {
        let (tx, rx) = oneshot::channel();
        let slot = waiting_slot(peer.id, &peer.role, tx);
        self.0.borrow_mut().map.insert(session.to_string(), slot);
        rx
    }

    /// The waiting peer `id` left: its session goes.
    fn leave_waiting(&self, session: &str, id: u64) {
        let mut inner = self.0.borrow_mut();
        if matches!(inner.map.get(session), Some(Slot::Waiting { id: w, .. }) if *w == id) {
            inner.map.remove(session);
        }
    }

    /// Both peers of a pair left.
    fn remove(&self, session: &str) {
        self.0.borrow_mut().map.remove(session);
    }
}

fn waiting_slot<S>(id: u64, role: &str, partner: oneshot::Sender<Peer<S>>) -> Slot<S> {
    Slot::Waiting {
        id,
        role: role.to_string(),
        partner,
    }
}

/// Reads the upgrade request and answers it: 101 for a known route with room, otherwise the
/// status ringrelay would give (404, 400, 409) with a JSON body. `None`: no WebSocket.
pub async fn upgrade<S>(stream: S, sessions: &Sessions<S>) -> Option<Conn<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut route = None;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let r = parse_route(req.uri().path(), req.uri().query())?;
        if let Route::Relay { session, role } = &r {
            if !sessions.can_join(session, role.as_deref()) {
                return Err(refusal(
                    StatusCode::CONFLICT,
                    "session_full",
                    "this session already has its peers",
                ));
            }
        }
        route = Some(r);
        Ok(resp)
    };
    let config = WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
        .await
        .ok()?;
    Some(match route? {
        Route::Echo => Conn::Echo(ws),
        Route::Relay { session, role } => Conn::Relay { session, role, ws },
    })
}

// The callback's error type is tungstenite's (an HTTP response), not ours to shrink.
#[allow(clippy::result_large_err)]
fn parse_route(path: &str, query: Option<&str>) -> Result<Route, ErrorResponse> {
    route::parse(path, query).map_err(|(status, code, error)| {
        refusal(
            StatusCode::from_u16(status).expect("a valid status"),
            code,
            error,
        )
    })
}

fn refusal(status: StatusCode, code: &str, error: &str) -> ErrorResponse {
    let body = format!(r#"{{"error":"{error}","code":"{code}"}}"#);
    let mut resp = ErrorResponse::new(Some(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    resp
}

/// Runs an upgraded connection to its end.
pub async fn serve<S>(conn: Conn<S>, sessions: Sessions<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match conn {
        Conn::Echo(ws) => {
            let (mut tx, mut rx) = ws.split();
            pump(&mut rx, &mut tx).await;
        }
        Conn::Relay { session, role, ws } => match sessions.join(session.clone(), role, ws) {
            Joined::First(peer, rx) => hold(&sessions, &session, peer, rx).await,
            Joined::Handed => {}
            Joined::Full(mut ws) => {
                let frame = CloseFrame {
                    code: CloseCode::Again,
                    reason: "session full".into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
        },
    }
}

/// The first peer of a session: waits for its partner (keeping what it sends meanwhile),
/// relays the pair, and waits again if its partner leaves first.
async fn hold<S>(
    sessions: &Sessions<S>,
    session: &str,
    mut me: Peer<S>,
    mut rx: oneshot::Receiver<Peer<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut early = Vec::new();
    let mut early_bytes = 0;
    loop {
        let partner = tokio::select! {
            biased;
            p = &mut rx => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            m = me.ws.next(), if early_bytes < EARLY_LIMIT => {
                match m {
                    Some(Ok(m)) => {
                        if m.is_text() || m.is_binary() {
                            early_bytes += m.len();
                            early.push(m);
                        }
                        continue;
                    }
                    _ => {
                        sessions.leave_waiting(session, me.id);
                        return;
                    }
                }
            }
        };
        early_bytes = 0;
        match relay_pair(me, partner, std::mem::take(&mut early)).await {
            Some(survivor) => {
                me = survivor;
                rx = sessions.wait_again(session, &me);
            }
            None => {
                sessions.remove(session);
                return;
            }
        }
    }
}

/// Which end of a pump stopped it.
enum Gone {
    /// The connection read from closed or failed.
    Source,
    /// The connection written to failed.
    Sink,
}

/// Relays `a` and `b` until one of them leaves; returns the other, if it is still there.
/// Messages in flight toward the one that left are dropped with it.
async fn relay_pair<S>(a: Peer<S>, b: Peer<S>, early: Vec<Message>) -> Option<Peer<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_tx, mut a_rx) = a.ws.split();
    let (mut b_tx, mut b_rx) = b.ws.split();
    let mut early_ok = true;
    for m in early {
        early_ok = early_ok && b_tx.feed(m).await.is_ok();
    }
    let a_left = if !early_ok || b_tx.flush().await.is_err() {
        false
    } else {
        tokio::select! {
            g = pump(&mut a_rx, &mut b_tx) => matches!(g, Gone::Source),
            g = pump(&mut b_rx, &mut a_tx) => matches!(g, Gone::Sink),
        }
    };
    let a_ws = a_rx.reunite(a_tx).ok()?;
    let b_ws = b_rx.reunite(b_tx).ok()?;
    let (ws, role, id) = if a_left {
        (b_ws, b.role, b.id)
    } else {
        (a_ws, a.role, a.id)
    };
    Some(Peer { ws, role, id })
}

/// Forwards data messages from `rx` to `tx` until one of them ends. Messages already read
/// are queued without waiting and flushed together, as `StreamExt::forward` does, so a burst
/// leaves in one write (the idiomatic way; a `send` per message would flush each alone).
/// Ping, pong and close are per hop: tungstenite answers them on `rx`'s connection.
async fn pump<S>(rx: &mut SplitStream<Ws<S>>, tx: &mut SplitSink<Ws<S>, Message>) -> Gone
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let Some(Ok(first)) = rx.next().await else {
            return Gone::Source;
        };
        let mut next = Some(first);
        let mut source_ended = false;
        while let Some(m) = next.take() {
            if (m.is_text() || m.is_binary()) && tx.feed(m).await.is_err() {
                return Gone::Sink;
            }
            match rx.next().now_or_never() {
                None => {}
                Some(Some(Ok(m))) => next = Some(m),
                Some(_) => source_ended = true,
            }
        }
        if tx.flush().await.is_err() {
            return Gone::Sink;
        }
        if source_ended {
            return Gone::Source;
        }
    }
}
