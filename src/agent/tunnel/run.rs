//! The tunnel client's life: hold the control connection, join each public connection the
//! relay announces to the local service, reconnect with back-off (and the resume key, to get
//! the same port back), drain on SIGTERM.

use super::args::ExposePlan;
use super::event::{parse_event, TunnelEvent};
use super::join::{join, open_data, reset, DataDial};
use super::resume;
use crate::agent::backoff::{Backoff, Jitter};
use crate::agent::link::{connect, ConnectError, Dial, Link, Out, ReadError};
use crate::agent::relay_url::{parse_relay_url, RelayUrl};
use crate::agent::session::{self, Input, Next, Polled};
use crate::agent::stop::{on_signals, Latch};
use crate::ws::client::MaskSource;
use local_sync::mpsc::bounded::Tx;
use local_sync::semaphore::Semaphore;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After the client's own close, how long it waits for the relay's.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Largest control message taken (events are small JSON objects).
const MAX_EVENT: usize = 64 << 10;
/// The relay's close for a refusal that trying again will not change (quota, bad request,
/// policy): the client exits.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_NORMAL: u16 = 1000;
/// The relay's close for a control connection whose tunnel another one resumed: that one
/// holds the key, so taking the tunnel back would only push it out in turn.
const CLOSE_TAKEN_OVER: u16 = 4001;
/// The relay's close for "try again later", which a `moved` comes with.
const CLOSE_TRY_LATER: u16 = 1013;
/// `moved` followed in a row without a tunnel opening; past it a `moved` is waited out like
/// any 1013 (a node's entry outlives it by up to `cluster.node_ttl`).
const MAX_MOVES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot watch for SIGTERM: {0}")]
    Signals(std::io::Error),
    #[error("the relay refused the tunnel: {0}")]
    Refused(String),
    #[error("another client resumed this tunnel with its key (close 4001); this one steps aside")]
    TakenOver,
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

/// How one control connection ended.
#[derive(Debug)]
enum Ended {
    /// SIGTERM, drained and closed.
    Stopped,
    /// Closed by the relay with this code, after this error event if one came.
    Closed(Option<u16>, Option<String>),
    Lost(String),
}

/// What the client keeps across control connections.
struct Client {
    plan: ExposePlan,
    relay_addr: RefCell<Option<SocketAddr>>,
    stop: Rc<Latch>,
    /// The resume key of the tunnel held (from the last `tunnel_open`, or `--resume-file`).
    resume: RefCell<Option<String>>,
    /// The public address last printed.
    printed: RefCell<Option<String>>,
    /// Each joined pair's latch: setting it resets the pair (the drain's deadline).
    pairs: RefCell<HashMap<u64, Rc<Latch>>>,
    next_pair: Cell<u64>,
    /// Data connections being opened at once (`--max-upgrades`).
    upgrades: Semaphore,
    joined: Cell<u64>,
    failed: Cell<u64>,
    /// The node a `moved` sent the client to: control and data connections go there until
    /// connecting to it fails, then back to `--relay` (docs/tunnels.md#fleet).
    moved_to: RefCell<Option<RelayUrl>>,
    /// The node named by this control connection's `moved` event, if one came.
    moved_hint: RefCell<Option<String>>,
    /// `moved` followed since the last `tunnel_open`.
    moves: Cell<u32>,
}

/// Runs the client until SIGTERM (`Ok`) or a refusal for good.
pub async fn run(plan: ExposePlan) -> Result<(), TunnelError> {
    let stop = Rc::new(Latch::default());
    on_signals(stop.clone()).map_err(TunnelError::Signals)?;
    let mut backoff =
        session::process_backoff(plan.backoff_initial, plan.backoff_max, Jitter::Full);
    let resume = plan.resume_file.as_deref().and_then(resume::load);
    let client = Rc::new(Client {
        upgrades: Semaphore::new(plan.max_upgrades),
        plan,
        relay_addr: RefCell::new(None),
        stop,
        resume: RefCell::new(resume),
        printed: RefCell::new(None),
        pairs: RefCell::new(HashMap::new()),
        next_pair: Cell::new(0),
        joined: Cell::new(0),
        failed: Cell::new(0),
        moved_to: RefCell::new(None),
        moved_hint: RefCell::new(None),
        moves: Cell::new(0),
    });
    let result = connect_loop(&client, &mut backoff).await;
    tracing::info!(
        joined = client.joined.get(),
        failed = client.failed.get(),
        "tunnel client stopped"
    );
    result
}

/// Connects, serves the control connection, waits and connects again, until stopped or
/// refused for good. SIGTERM while no control connection is up still drains open pairs.
async fn connect_loop(client: &Rc<Client>, backoff: &mut Backoff) -> Result<(), TunnelError> {
    let mut resume_refused = false;
    loop {
        let resume = client.resume.borrow().clone();
        let route = client.route(client.plan.control_route(None, resume.as_deref()), true);
        let attempt = monoio::select! {
            _ = client.stop.wait() => return drain(client).await,
            r = connect_once(client, &route) => r,
        };
        let retry_after = match attempt {
            Ok(link) => {
                let up = Instant::now();
                match serve(client, link).await {
                    Ended::Stopped => return Ok(()),
                    Ended::Closed(Some(CLOSE_POLICY), why) => {
                        let why = why.unwrap_or_else(|| "closed with 1008".into());
                        // A resume key the relay no longer knows is not the user's fault:
                        // forget it and ask once more for a fresh tunnel.
                        if resume.is_some() && !resume_refused {
                            tracing::warn!(%why, "the relay refused the resume key; asking for a new tunnel");
                            resume_refused = true;
                            client.forget_resume();
                            continue;
                        }
                        return Err(TunnelError::Refused(why));
                    }
                    Ended::Closed(Some(CLOSE_TAKEN_OVER), _) => {
                        drain(client).await?;
                        return Err(TunnelError::TakenOver);
                    }
                    Ended::Closed(Some(CLOSE_TRY_LATER), _) if client.follow_move() => continue,
                    Ended::Closed(code, why) => {
                        tracing::warn!(code = ?code, why = ?why, "the relay closed the tunnel")
                    }
                    Ended::Lost(why) => tracing::warn!(%why, "lost the relay"),
                }
                session::reset_if_stable(backoff, up);
                None
            }
            Err(e) if e.is_final() => return Err(TunnelError::Refused(e.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the relay");
                if client.moved_to.borrow_mut().take().is_some() {
                    tracing::info!(relay = %client.plan.relay.authority, "back to --relay");
                }
                e.retry_after()
            }
        };
        if !session::wait_to_reconnect(backoff, retry_after, &client.stop).await {
            return drain(client).await;
        }
    }
}

impl Client {
    fn forget_resume(&self) {
        *self.resume.borrow_mut() = None;
        if let Some(path) = &self.plan.resume_file {
            resume::forget(path);
        }
    }

    /// Follows this control connection's `moved`, if it had one and the hops allow: the
    /// next attempt goes to the node named, at once.
    fn follow_move(&self) -> bool {
        let Some(node) = self.moved_hint.borrow_mut().take() else {
            return false;
        };
        if self.moves.get() >= MAX_MOVES {
            return false;
        }
        match parse_relay_url(&node) {
            Ok(url) if !url.tls => {
                tracing::info!(%node, "the relay sent the tunnel to another node");
                self.moves.set(self.moves.get() + 1);
                *self.moved_to.borrow_mut() = Some(url);
                true
            }
            _ => {
                tracing::warn!(%node, "the relay named a node this client cannot use");
                false
            }
        }
    }

    /// The relay requests go to now: the node a `moved` named, else `--relay`.
    fn target(&self) -> RelayUrl {
        match &*self.moved_to.borrow() {
            Some(url) => url.clone(),
            None => self.plan.relay.clone(),
        }
    }

    /// A route made for `--relay`, for the relay requests go to now: under that node's base
    /// path; a control route also says it followed a `moved`, so it is not sent on again.
    fn route(&self, route: String, control: bool) -> String {
        let Some(to) = &*self.moved_to.borrow() else {
            return route;
        };
        let rest = route.strip_prefix(&self.plan.relay.base).unwrap_or(&route);
        if !control {
            return format!("{}{rest}", to.base);
        }
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!("{}{rest}{sep}moved=1", to.base)
    }

    /// The relay's address, resolved afresh for each control connection.
    fn relay_addr(&self) -> Option<SocketAddr> {
        *self.relay_addr.borrow()
    }
}

/// One control connection attempt, within `--connect-timeout`.
async fn connect_once(client: &Client, route: &str) -> Result<Link, ConnectError> {
    let plan = &client.plan;
    let target = client.target();
    let addr = target.resolve().map_err(ConnectError::Resolve)?;
    *client.relay_addr.borrow_mut() = Some(addr);
    let owned = plan.headers();
    let headers: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let dial = Dial {
        addr,
        authority: &target.authority,
        route,
        headers: &headers,
        max_message: MAX_EVENT,
        tls: None,
    };
    monoio::time::timeout(plan.connect_timeout, connect(dial))
        .await
        .map_err(|_| ConnectError::Timeout(plan.connect_timeout))?
}

/// Serves one control connection until it ends.
async fn serve(client: &Rc<Client>, mut link: Link) -> Ended {
    let ping_every = client.plan.ping_interval;
    let running = match session::start(&mut link, 64, MaskSource::new(), ping_every) {
        Ok(r) => r,
        Err(why) => return Ended::Lost(why),
    };
    let tx = &running.tx;
    let silent_limit = client.plan.ping_interval * 2;
    let mut last_error = None;
    let ended = loop {
        if let Some(end) = handle_buffered(client, &mut link, tx, &mut last_error).await {
            break end;
        }
        match session::wait_input(&link, &client.stop, silent_limit).await {
            Input::Stopped => break leave(client, &mut link, tx).await,
            Input::Silent => {
                break Ended::Lost(format!("nothing from the relay for {silent_limit:?}"))
            }
            Input::Failed(e) => break Ended::Lost(e.to_string()),
            Input::Readable => {}
        }
        match link.read_more().await {
            Ok(()) => {}
            Err(ReadError::Eof) => break Ended::Closed(None, last_error),
            Err(e) => break Ended::Lost(e.to_string()),
        }
    };
    running.finish(&link).await;
    ended
}

/// Every event already read; `Some` when the control connection is over.
async fn handle_buffered(
    client: &Rc<Client>,
    link: &mut Link,
    tx: &Tx<Out>,
    last_error: &mut Option<String>,
) -> Option<Ended> {
    loop {
        match session::next_message(link, tx).await {
            Next::Drained => return None,
            Next::Closed(code) => return Some(Ended::Closed(code, last_error.take())),
            Next::Broken(why) => return Some(Ended::Lost(why)),
            Next::Message {
                text: true,
                data,
                oversized: false,
            } => on_event(client, &data, last_error),
            Next::Message { .. } => tracing::warn!("a control message that is not an event"),
        }
    }
}

/// One event from the relay.
fn on_event(client: &Rc<Client>, data: &[u8], last_error: &mut Option<String>) {
    match parse_event(data) {
        Ok(TunnelEvent::Open {
            public,
            resume,
            grace_ms,
            ..
        }) => opened(client, &public, resume, grace_ms),
        Ok(TunnelEvent::Connection { id, peer }) => {
            tracing::debug!(%id, peer = ?peer, "public connection");
            monoio::spawn(accept(client.clone(), id));
        }
        Ok(TunnelEvent::Moved { node, message }) => {
            tracing::info!(%node, %message, "the relay names another node");
            *last_error = Some(format!("moved: {node}"));
            *client.moved_hint.borrow_mut() = Some(node);
        }
        Ok(TunnelEvent::Error { code, message }) => {
            tracing::warn!(%code, %message, "the relay refused the tunnel");
            *last_error = Some(format!("{code}: {message}"));
        }
        Ok(TunnelEvent::Other) => {}
        Err(e) => tracing::warn!(error = %e, "an event the client cannot read"),
    }
}

/// `tunnel_open`: prints the public address (when it is new) and keeps the resume key.
fn opened(client: &Client, public: &str, resume: Option<String>, grace_ms: Option<u64>) {
    let plan = &client.plan;
    let new = client.printed.borrow().as_deref() != Some(public);
    if new {
        let line = if plan.json {
            serde_json::json!({ "public": public }).to_string()
        } else {
            format!("public {public} -> {}", plan.local)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        *client.printed.borrow_mut() = Some(public.to_string());
    }
    tracing::info!(%public, local = %plan.local, grace_ms = ?grace_ms, resumable = resume.is_some(), "tunnel open");
    client.moves.set(0);
    if let (Some(path), Some(key)) = (&plan.resume_file, &resume) {
        if let Err(e) = resume::store(path, key, public) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the resume key");
        }
    }
    *client.resume.borrow_mut() = resume;
}

/// A public connection: the local service and the data connection, opened at once, joined.
/// When the local service refuses (or the client is draining) the data connection is reset
/// as soon as it is up, so the public client learns at once rather than after the relay's
/// accept timeout.
async fn accept(client: Rc<Client>, id: String) {
    let plan = &client.plan;
    let Some(addr) = client.relay_addr() else {
        return;
    };
    let route = client.route(plan.accept_route(&id), false);
    let target = client.target();
    let headers = plan.headers();
    let dial = DataDial {
        addr,
        authority: &target.authority,
        route: &route,
        headers: &headers,
        timeout: plan.connect_timeout,
    };
    let draining = client.stop.is_set();
    let local = async {
        if draining {
            return None;
        }
        let c = monoio::net::TcpStream::connect_addr(plan.local);
        match monoio::time::timeout(plan.connect_timeout, c).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(%id, local = %plan.local, error = %e, "the local service refused");
                None
            }
            Err(_) => {
                tracing::warn!(%id, local = %plan.local, "the local service did not answer");
                None
            }
        }
    };
    let data = async {
        let _permit = client.upgrades.acquire().await;
        open_data(&dial).await
    };
    let (local, data) = monoio::join!(local, data);
    let (local, data) = match (local, data) {
        (Some(l), Ok(d)) => (l, d),
        (_, Err(e)) => {
            client.failed.set(client.failed.get() + 1);
            return tracing::warn!(%id, error = %e, "no data connection");
        }
        (None, Ok(d)) => {
            client.failed.set(client.failed.get() + 1);
            return reset(d.stream);
        }
    };
    let n = client.next_pair.get();
    client.next_pair.set(n + 1);
    let dead = Rc::new(Latch::default());
    client.pairs.borrow_mut().insert(n, dead.clone());
    client.joined.set(client.joined.get() + 1);
    let moved = join(data, local, dead).await;
    client.pairs.borrow_mut().remove(&n);
    tracing::debug!(%id, inbound = moved.inbound, outbound = moved.outbound, reset = moved.reset, "public connection done");
}

/// SIGTERM with the control connection up: new public connections are refused (see
/// `accept`), open ones may finish within `--shutdown-grace`, then the rest are reset and
/// the tunnel closes with 1000, which releases the port at once.
async fn leave(client: &Rc<Client>, link: &mut Link, tx: &Tx<Out>) -> Ended {
    tracing::info!(open = client.pairs.borrow().len(), "draining");
    let deadline = Instant::now() + client.plan.shutdown_grace;
    let mut last_error = None;
    while !client.pairs.borrow().is_empty() && Instant::now() < deadline {
        if pump(client, link, tx, &mut last_error).await.is_some() {
            break;
        }
    }
    reset_all(client);
    if let Some(path) = &client.plan.resume_file {
        resume::forget(path);
    }
    if tx.send(Out::Close(CLOSE_NORMAL)).await.is_err() {
        return Ended::Stopped;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline {
        if pump(client, link, tx, &mut last_error).await.is_some() {
            break;
        }
    }
    Ended::Stopped
}

/// SIGTERM without a control connection: the open pairs may still finish.
async fn drain(client: &Rc<Client>) -> Result<(), TunnelError> {
    let deadline = Instant::now() + client.plan.shutdown_grace;
    while !client.pairs.borrow().is_empty() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    reset_all(client);
    Ok(())
}

fn reset_all(client: &Client) {
    for dead in client.pairs.borrow().values() {
        dead.set();
    }
}

/// One round of reading while draining: events already read, then a read if one comes
/// within a short wait. `Some` when the connection is over.
async fn pump(
    client: &Rc<Client>,
    link: &mut Link,
    tx: &Tx<Out>,
    last_error: &mut Option<String>,
) -> Option<Ended> {
    if let Some(end) = handle_buffered(client, link, tx, last_error).await {
        return Some(end);
    }
    match session::poll_read(link, Duration::from_millis(20)).await {
        Polled::Going => None,
        Polled::Eof => Some(Ended::Closed(None, None)),
        Polled::Lost(why) => Some(Ended::Lost(why)),
    }
}
