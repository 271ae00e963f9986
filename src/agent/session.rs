//! One relay connection's life as the bridge agent and the tunnel client both live it: the
//! writer task and the pings started when it opens, the wait for input bounded by twice the
//! ping interval, the short reads while leaving, the teardown, and the back-off between
//! connections. What each does with the messages stays in its own `run`.

use super::backoff::{Backoff, Jitter};
use super::inbound::WsEvent;
use super::link::{write_loop, Link, Out, ReadError};
use super::stop::Latch;
use crate::ws::client::{MaskSource, Rng};
use local_sync::mpsc::bounded::{channel, Tx};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A connection that stayed up this long resets the back-off: the relay was healthy, so
/// the next outage starts again from the shortest wait.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// After our own close, how long the writer (and so the relay's close) is waited for.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The close a client sends when the relay broke the protocol.
const CLOSE_PROTOCOL: u16 = 1002;

/// A back-off seeded from the process id, so clients started together do not retry in step.
pub fn process_backoff(initial: Duration, max: Duration, jitter: Jitter) -> Backoff {
    Backoff::new(
        initial,
        max,
        jitter,
        Rng::from_entropy(u64::from(std::process::id())),
    )
}

/// After a connection that was up since `up`: a long one resets the back-off.
pub fn reset_if_stable(backoff: &mut Backoff, up: Instant) {
    if up.elapsed() >= STABLE_AFTER {
        backoff.reset();
    }
}

/// Waits before the next attempt (the back-off, or longer when the relay asked for
/// `retry_after`); `false` when `stop` was set meanwhile, which ends the wait at once.
pub async fn wait_to_reconnect(
    backoff: &mut Backoff,
    retry_after: Option<Duration>,
    stop: &Latch,
) -> bool {
    let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
    tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting");
    monoio::select! {
        _ = stop.wait() => false,
        _ = monoio::time::sleep(delay) => true,
    }
}

/// The tasks of an open connection: the writer fed by `tx`, and the pings.
pub struct Running {
    pub tx: Tx<Out>,
    writer: monoio::task::JoinHandle<()>,
    done: Rc<Latch>,
}

/// Starts the writer (a queue of `queue`) and a ping every `ping_every`; `Err` when the
/// link's writer was already taken.
pub fn start(
    link: &mut Link,
    queue: usize,
    masks: MaskSource,
    ping_every: Duration,
) -> Result<Running, String> {
    let (tx, rx) = channel(queue);
    let Some(w) = link.writer.take() else {
        return Err("the connection's writer was already taken".into());
    };
    let writer = monoio::spawn(write_loop(link.socket.clone(), w, rx, masks));
    let done = Rc::new(Latch::default());
    monoio::spawn(ping_loop(tx.clone(), done.clone(), ping_every));
    Ok(Running { tx, writer, done })
}

impl Running {
    /// Stops the pings and lets the writer end, then drops the socket.
    pub async fn finish(self, link: &Link) {
        self.done.set();
        drop(self.tx);
        // The writer ends after a close frame, or once every sender is gone; a dead
        // connection makes it fail at once. Either way it is not waited for long.
        let _ = monoio::time::timeout(CLOSE_WAIT, self.writer).await;
        link.socket.abort();
    }
}

/// What waiting for input gave.
pub enum Input {
    /// `stop` was set: time to leave.
    Stopped,
    /// Nothing came within the silence limit.
    Silent,
    Failed(std::io::Error),
    Readable,
}

/// Waits until the link is readable, `stop` is set, or `silent_limit` passes.
pub async fn wait_input(link: &Link, stop: &Latch, silent_limit: Duration) -> Input {
    let ready = monoio::select! {
        _ = stop.wait() => None,
        r = monoio::time::timeout(silent_limit, link.readable()) => Some(r),
    };
    match ready {
        None => Input::Stopped,
        Some(Err(_)) => Input::Silent,
        Some(Ok(Err(e))) => Input::Failed(e),
        Some(Ok(Ok(()))) => Input::Readable,
    }
}

/// What one short read while leaving gave.
pub enum Polled {
    /// Nothing within the wait, or more was read.
    Going,
    /// The relay closed the connection.
    Eof,
    Lost(String),
}

/// A read if one is ready within `wait`.
pub async fn poll_read(link: &mut Link, wait: Duration) -> Polled {
    match monoio::time::timeout(wait, link.readable()).await {
        Err(_) => Polled::Going,
        Ok(Err(e)) => Polled::Lost(e.to_string()),
        Ok(Ok(())) => match link.read_more().await {
            Ok(()) => Polled::Going,
            Err(ReadError::Eof) => Polled::Eof,
            Err(e) => Polled::Lost(e.to_string()),
        },
    }
}

/// Pings the relay every `every` until the connection is done, so a dead relay is noticed
/// (the reader gives up after two intervals of silence) and idle middleboxes keep the path.
async fn ping_loop(tx: Tx<Out>, done: Rc<Latch>, every: Duration) {
    loop {
        monoio::select! {
            _ = done.wait() => return,
            _ = monoio::time::sleep(every) => {}
        }
        if tx.send(Out::Ping).await.is_err() {
            return;
        }
    }
}

/// What the events already read come to once the control frames are dealt with.
pub enum Next {
    /// Nothing more is buffered: read more.
    Drained,
    /// A whole data message (see [`WsEvent::Message`]).
    Message {
        text: bool,
        data: Vec<u8>,
        oversized: bool,
    },
    /// The relay closed with this code (`None`: it gave none); our close is queued.
    Closed(Option<u16>),
    /// The relay broke the protocol; our close 1002 is queued.
    Broken(String),
}

/// The next data message already read, or the end: pings are answered, pongs skipped, the
/// relay's close answered with its own code (1000 when it gave none).
pub async fn next_message(link: &mut Link, tx: &Tx<Out>) -> Next {
    loop {
        let event = match link.buffered_event() {
            Ok(Some(e)) => e,
            Ok(None) => return Next::Drained,
            Err(e) => {
                let _ = tx.send(Out::Close(CLOSE_PROTOCOL)).await;
                return Next::Broken(e.to_string());
            }
        };
        match event {
            WsEvent::Ping(p) => {
                let _ = tx.send(Out::Pong(p)).await;
            }
            WsEvent::Pong => {}
            WsEvent::Close(code) => {
                let _ = tx.send(Out::Close(code.unwrap_or(1000))).await;
                return Next::Closed(code);
            }
            WsEvent::Message {
                text,
                data,
                oversized,
            } => {
                return Next::Message {
                    text,
                    data,
                    oversized,
                }
            }
        }
    }
}
