//! The agent's life: connect to the relay, serve bridged requests until the connection ends,
//! wait (back-off with jitter), connect again; leave cleanly on SIGTERM.

use super::args::Plan;
use super::backoff::{Backoff, Jitter};
use super::exchange::{answer, cut_request, from_relay, idempotent, target_request, Failure};
use super::link::{connect, ConnectError, Dial, Link, Out};
use super::session::{self, Input, Next, Polled};
use super::stop::{on_signals, Latch};
use super::upstream::Upstream;
use crate::bridge::message::request_key;
use crate::bridge::{parse_request, BridgedRequest, HttpResponseMsg, RequestMsgError};
use crate::ws::client::MaskSource;
use local_sync::mpsc::bounded::Tx;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After the agent's own close, how long it waits for the relay's.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Room in the writer's queue beyond one answer per request in flight (pongs, pings, close).
const QUEUE_SLACK: usize = 16;
/// WebSocket close codes the agent sends.
const CLOSE_GOING_AWAY: u16 = 1001;
/// The relay's close for a connection replaced by a newer one of the same role.
const CLOSE_REPLACED: u16 = 4001;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot watch for SIGTERM: {0}")]
    Signals(std::io::Error),
    #[error("the relay refused the agent: {0}")]
    Refused(ConnectError),
    #[error("another agent joined the session with this role (close 4001); this one steps aside")]
    Replaced,
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    Closed(Option<u16>),
    Lost(String),
}

/// What the agent keeps across connections.
struct Agent {
    plan: Plan,
    upstream: Upstream,
    stop: Rc<Latch>,
    /// Requests being performed against the target, over all connections: a connection that
    /// ended may still have some finishing.
    in_flight: Cell<usize>,
    served: Cell<u64>,
    refused: Cell<u64>,
    /// Requests ignored for not carrying the relay's key.
    foreign: Cell<u64>,
}

/// Runs the agent until SIGTERM (`Ok`), a refusal for good, or its replacement by another
/// agent of the same session.
pub async fn run(plan: Plan) -> Result<(), AgentError> {
    if plan.tls.as_ref().is_some_and(|t| t.insecure) {
        tracing::warn!("{}", crate::tls::client::INSECURE_WARNING);
    }
    let stop = Rc::new(Latch::default());
    on_signals(stop.clone()).map_err(AgentError::Signals)?;
    let mut backoff =
        session::process_backoff(plan.backoff_initial, plan.backoff_max, Jitter::Equal);
    let agent = Rc::new(Agent::new(plan, stop));
    let result = connect_loop(&agent, &mut backoff).await;
    tracing::info!(
        served = agent.served.get(),
        refused = agent.refused.get(),
        foreign = agent.foreign.get(),
        "agent stopped"
    );
    result
}

impl Agent {
    fn new(plan: Plan, stop: Rc<Latch>) -> Agent {
        Agent {
            upstream: Upstream::new(
                plan.target.clone(),
                plan.max_response_bytes,
                plan.max_concurrency,
            ),
            plan,
            stop,
            in_flight: Cell::new(0),
            served: Cell::new(0),
            refused: Cell::new(0),
            foreign: Cell::new(0),
        }
    }
}

/// Connects, serves the connection, waits (the back-off, or longer when the relay asked)
/// and connects again, until stopped or refused for good. SIGTERM ends any wait at once.
async fn connect_loop(agent: &Rc<Agent>, backoff: &mut Backoff) -> Result<(), AgentError> {
    let plan = &agent.plan;
    let route = plan.route();
    let bearer = plan.token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    loop {
        let attempt = monoio::select! {
            _ = agent.stop.wait() => return Ok(()),
            r = connect_once(plan, &route, &headers) => r,
        };
        let retry_after = match attempt {
            Ok(link) => {
                let up = Instant::now();
                if let ControlFlow::Break(result) =
                    serve_connection(agent, link, MaskSource::new()).await
                {
                    return result;
                }
                session::reset_if_stable(backoff, up);
                None
            }
            Err(e) if e.is_final() => return Err(AgentError::Refused(e)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the relay");
                e.retry_after()
            }
        };
        if !session::wait_to_reconnect(backoff, retry_after, &agent.stop).await {
            return Ok(());
        }
    }
}

/// One connection attempt: resolves the relay's name afresh each time (its address may
/// change between outages) and gives up after `connect_timeout`.
async fn connect_once(
    plan: &Plan,
    route: &str,
    headers: &[(&str, &str)],
) -> Result<Link, ConnectError> {
    let addr = plan.relay.resolve().map_err(ConnectError::Resolve)?;
    let dial = Dial {
        addr,
        authority: &plan.relay.authority,
        route,
        headers,
        max_message: plan.max_message_bytes,
        tls: plan.tls.as_ref(),
    };
    let link = connect(dial);
    monoio::time::timeout(plan.connect_timeout, link)
        .await
        .map_err(|_| match plan.tls {
            Some(_) => ConnectError::TlsTimeout(plan.connect_timeout),
            None => ConnectError::Timeout(plan.connect_timeout),
        })?
}

/// Serves a connection until it ends and says whether the agent goes on: it stops on
/// SIGTERM and when replaced (close 4001: another agent took the role, so reconnecting would
/// only push it out in turn); any other end is logged and retried.
async fn serve_connection(
    agent: &Rc<Agent>,
    link: Link,
    masks: MaskSource,
) -> ControlFlow<Result<(), AgentError>> {
    let plan = &agent.plan;
    tracing::info!(relay = %plan.relay.authority, session = %plan.session, "connected to the relay");
    match serve(agent, link, masks).await {
        Ended::Stopped => return ControlFlow::Break(Ok(())),
        Ended::Closed(Some(CLOSE_REPLACED)) => {
            return ControlFlow::Break(Err(AgentError::Replaced))
        }
        Ended::Closed(code) => tracing::warn!(code = ?code, "the relay closed the connection"),
        Ended::Lost(why) => tracing::warn!(%why, "lost the relay"),
    }
    ControlFlow::Continue(())
}

/// Serves one connection until it ends.
async fn serve(agent: &Rc<Agent>, mut link: Link, masks: MaskSource) -> Ended {
    let queue = agent.plan.max_concurrency + QUEUE_SLACK;
    let running = match session::start(&mut link, queue, masks, agent.plan.ping_interval) {
        Ok(r) => r,
        Err(why) => return Ended::Lost(why),
    };
    let tx = &running.tx;
    let silent_limit = agent.plan.ping_interval * 2;
    let ended = loop {
        if let Some(end) = handle_buffered(agent, &mut link, tx).await {
            break end;
        }
        match session::wait_input(&link, &agent.stop, silent_limit).await {
            Input::Stopped => break leave(agent, &mut link, tx).await,
            Input::Silent => {
                break Ended::Lost(format!("nothing from the relay for {silent_limit:?}"))
            }
            Input::Failed(e) => break Ended::Lost(e.to_string()),
            Input::Readable => {}
        }
        if let Err(e) = link.read_more().await {
            break Ended::Lost(e.to_string());
        }
    };
    running.finish(&link).await;
    ended
}

/// Every event already read; `Some` when the connection is over.
async fn handle_buffered(agent: &Rc<Agent>, link: &mut Link, tx: &Tx<Out>) -> Option<Ended> {
    loop {
        match session::next_message(link, tx).await {
            Next::Drained => return None,
            Next::Closed(code) => return Some(Ended::Closed(code)),
            Next::Broken(why) => return Some(Ended::Lost(why)),
            Next::Message {
                text: true,
                data,
                oversized,
            } => dispatch(agent, tx, &data, oversized, link.relay_key.as_deref()).await,
            // The session's other peer may send anything; only requests are the agent's.
            Next::Message { text: false, .. } => {}
        }
    }
}

/// Reads a message and starts its request, or answers at once when it cannot run. Only a
/// request that carries this connection's key (`key`) is the relay's; anything else shaped
/// like one came from the session's other peer and is neither run nor answered (an answer
/// under its id could settle someone else's request).
async fn dispatch(
    agent: &Rc<Agent>,
    tx: &Tx<Out>,
    data: &[u8],
    oversized: bool,
    key: Option<&str>,
) {
    let refuse = |id: &str, f: Failure| {
        agent.refused.set(agent.refused.get() + 1);
        tracing::warn!(id, code = f.code(), "request refused");
        Out::Text(f.answer(id).to_json())
    };
    let foreign = || {
        agent.foreign.set(agent.foreign.get() + 1);
        tracing::warn!("a request without this connection's relay key was ignored");
    };
    if oversized {
        if let Some((id, carried)) = cut_request(data) {
            if !from_relay(key, carried.as_deref()) {
                return foreign();
            }
            let _ = tx.send(refuse(&id, Failure::RequestTooLarge)).await;
        }
        return;
    }
    let req = match parse_request(data) {
        Ok(r) if !from_relay(key, r.relay_key.as_deref()) => return foreign(),
        Ok(r) => r,
        Err((Some(_), _)) if !from_relay(key, request_key(data).as_deref()) => return foreign(),
        Err((Some(id), e)) => {
            tracing::warn!(error = %e, "unreadable bridged request");
            let _ = tx.send(refuse(&id, Failure::BadRequest)).await;
            return;
        }
        Err((None, RequestMsgError::NotARequest)) => return,
        Err((None, e)) => {
            tracing::warn!(error = %e, "unreadable bridged request without an id");
            return;
        }
    };
    if agent.stop.is_set() {
        let _ = tx.send(refuse(&req.id, Failure::Stopping)).await;
        return;
    }
    if agent.in_flight.get() >= agent.plan.max_concurrency {
        let _ = tx.send(refuse(&req.id, Failure::Busy)).await;
        return;
    }
    agent.in_flight.set(agent.in_flight.get() + 1);
    let (agent, tx) = (agent.clone(), tx.clone());
    monoio::spawn(async move {
        let msg = perform(&agent, &req).await;
        agent.in_flight.set(agent.in_flight.get() - 1);
        agent.served.set(agent.served.get() + 1);
        if tx.send(Out::Text(msg.to_json())).await.is_err() {
            tracing::warn!(id = %req.id, "the relay connection ended before the answer could be sent");
        }
    });
}

/// The request against the target, within `--target-timeout`.
async fn perform(agent: &Agent, req: &BridgedRequest) -> HttpResponseMsg {
    let started = Instant::now();
    let bytes = target_request(req, agent.upstream.target());
    let head = req.method == "HEAD";
    let fetch = agent.upstream.fetch(&bytes, head, idempotent(&req.method));
    let msg = match monoio::time::timeout(agent.plan.target_timeout, fetch).await {
        Ok(Ok(f)) => {
            if f.dropped_headers > 0 {
                tracing::warn!(
                    n = f.dropped_headers,
                    "response headers that are not UTF-8 left out"
                );
            }
            answer(&req.id, f, head)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, method = %req.method, path = %req.path, "request to the target failed");
            Failure::of(&e).answer(&req.id)
        }
        Err(_) => Failure::Timeout.answer(&req.id),
    };
    tracing::debug!(
        method = %req.method,
        path = %req.path,
        status = msg.status,
        us = started.elapsed().as_micros() as u64,
        "bridged request"
    );
    msg
}

/// SIGTERM: requests already running may finish (within `--shutdown-grace`) while new
/// ones are refused with 503 `agent_stopping`; then the agent closes with 1001 and waits
/// briefly for the relay's close.
async fn leave(agent: &Rc<Agent>, link: &mut Link, tx: &Tx<Out>) -> Ended {
    tracing::info!(in_flight = agent.in_flight.get(), "stopping");
    let deadline = Instant::now() + agent.plan.shutdown_grace;
    while agent.in_flight.get() > 0 && Instant::now() < deadline {
        if let Some(end) = pump(agent, link, tx, Duration::from_millis(20)).await {
            return end;
        }
    }
    if tx.send(Out::Close(CLOSE_GOING_AWAY)).await.is_err() {
        return Ended::Stopped;
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline {
        if pump(agent, link, tx, Duration::from_millis(50))
            .await
            .is_some()
        {
            break;
        }
    }
    Ended::Stopped
}

/// One round of reading while stopping: events already read, then a read if one is ready
/// within `wait`. `Some` when the connection is over.
async fn pump(agent: &Rc<Agent>, link: &mut Link, tx: &Tx<Out>, wait: Duration) -> Option<Ended> {
    if let Some(end) = handle_buffered(agent, link, tx).await {
        return Some(end);
    }
    match session::poll_read(link, wait).await {
        Polled::Going => None,
        Polled::Eof => Some(Ended::Closed(None)),
        Polled::Lost(why) => Some(Ended::Lost(why)),
    }
}
