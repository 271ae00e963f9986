//! One upgraded connection: its socket, its write gate and the little state the keepalive
//! tick and the forwarding path need. Kept small: every idle connection holds one.

use super::events::durable::{self, Shapes};
use super::events::{Event, EventKey};
use super::Session;
use crate::config::Config;
use crate::limits::IpCharge;
use crate::runtime::chunk::{Chunk, WriteChunk};
use crate::runtime::socket::Socket;
use crate::stats::access::{Note, Tally};
use crate::ws::close::encode_close_frame;
use crate::ws::frame::{encode_header, MAX_CONTROL_PAYLOAD};
use crate::ws::{CloseCode, OpCode};
use local_sync::semaphore::Semaphore;
use std::cell::Cell;
use std::io;
use std::rc::Rc;

pub struct Peer {
    pub id: u64,
    pub role: Box<str>,
    /// What a connection that asked for events needs to be sent them; `None` for one that
    /// did not (most): boxed, so those keep only the pointer.
    events: Option<Box<PeerEvents>>,
    pub sock: Socket,
    /// This connection's count among its client address's open connections, given back
    /// (by dropping it) when the peer leaves.
    pub charge: Cell<Option<IpCharge>>,
    /// One writer at a time, so frames from the forwarding path, pongs, pings and events
    /// never interleave on the wire.
    gate: Semaphore,
    /// Yes/no state ([`Flag`]), one byte for all: `Peer` has a size bound.
    pub flags: Flags,
    pub last_recv_ms: Cell<u64>,
    pub last_ping_ms: Cell<u64>,
    /// When the relay sent its close frame ([`NOT_CLOSING`] until then); the peer has
    /// `close_timeout` to answer. A sentinel rather than an `Option`, whose tag would cost
    /// 8 bytes of `Peer`'s bound (see [`Peer::closing_since`]).
    closing_since_ms: Cell<u64>,
    /// The code the relay closed this peer with, reported to the other peer.
    pub close_code: Cell<Option<u16>>,
    /// A write is in progress since this time: [`UNSTAMPED`] until the keepalive tick first
    /// sees it and stamps its time, so the forwarding path never reads a clock for this;
    /// [`NO_WRITE`] while none is. The tick drops a peer whose write has waited longer than
    /// `limits.write_timeout`. Sentinels rather than an `Option`, whose tag would cost 8
    /// bytes of `Peer`'s bound.
    write_since_ms: Cell<u64>,
    /// Pooled read buffers waiting to be written to this peer (in `send_chunk`, at the gate or
    /// in the write): what a peer that stops reading keeps out of the pool
    /// (`relay::blocked`).
    pub pinned: Cell<u32>,
    /// The access log's record of this connection (`log.access`; `None` when it is off): a
    /// box made at the upgrade, so a relay without the log keeps only the pointer.
    pub access: Option<Box<Tally>>,
    /// The config in force when the connection was upgraded: its decode limits and rates
    /// stay these after a reload (docs/configuration.md, "Connections already open"), even
    /// though an idle connection keeps no decoder to hold them (relay::conn).
    pub opened: Rc<Config>,
}

// One `Peer` (in an `Rc`) per connection for its whole life: at the default
// `max_connections_per_worker` of 100,000, 240 bytes is 23 MiB per core. With the `Rc`'s two
// counts it is 256 bytes, exactly mimalloc's 256-byte size class: one byte more and every
// connection pays 64 more (the 320 class). The counters and timestamps are plain `Cell`s for
// this reason; anything per-connection that is large or rare (a backlog, held messages, the
// event key) lives in the session or in a box made when it is needed.
const _: () = assert!(std::mem::size_of::<Peer>() <= 240);

/// A peer's event state, for a connection that asked for events.
struct PeerEvents {
    /// Carried by every event to this peer, so it can tell them from look-alikes its peer
    /// sends (session/events.rs).
    key: EventKey,
    /// The shapes its events take: ours, or the Durable Object relay's on `/desktop` and
    /// `/mobile` (session/events/durable.rs).
    shapes: Shapes,
    /// When this peer was last told its peer is away ("Mobile device not connected"; 0:
    /// never), so it is told at most once a second however fast it sends. The clock's low 32
    /// bits: the wrap (every 49 days) only ever makes one notice due early.
    away_told_ms: Cell<u32>,
}

/// The yes/no state of a [`Peer`].
pub struct Flag;

impl Flag {
    /// A data message to this peer is partly written: no other data frame (an event) may go
    /// out until it ends.
    pub const DATA_OPEN: u8 = 1;
    /// The relay has dropped this peer (its socket is shut); its pending writes are failing
    /// and their buffers on their way back to the pool.
    pub const DROPPED: u8 = 1 << 1;
    /// Two-way resume (docs/durability.md): the connection asked for `resume=`, so the
    /// messages it sends are counted for its role.
    pub const COUNTS: u8 = 1 << 2;
    /// A task will send an `ack` within `session.ack_delay` (relay::ack).
    pub const ACK_ARMED: u8 = 1 << 3;
    /// A task is sending the `ack` due at once (relay::ack): at most one per connection.
    pub const ACK_SENDING: u8 = 1 << 4;
    /// A newer connection of the same role took this one's seat (`Session::seat`): it sends
    /// nothing more, and is credited nothing more (docs/durability.md, two-way resume).
    pub const UNSEATED: u8 = 1 << 5;
    /// This peer holds part of a message whose sender will never finish it (that sender lost
    /// its seat while a write of it was still queued or in flight), and another writer came
    /// to start a message: nothing more is written to it, it is closed with 4004 and resumes
    /// (relay::conn, `send_chunk`).
    pub const TORN: u8 = 1 << 6;
    /// Its task waits for readiness (or for a binary upgrade's outcome) with nothing read and
    /// not yet processed, no message or frame half read: a binary upgrade may hand it to the
    /// new process as it is (`relay::handover`).
    pub const QUIET: u8 = 1 << 7;
}

/// [`Flag`]s packed in one byte.
#[derive(Default)]
pub struct Flags(Cell<u8>);

impl Flags {
    pub fn get(&self, flag: u8) -> bool {
        self.0.get() & flag != 0
    }

    pub fn set(&self, flag: u8, on: bool) {
        self.replace(flag, on);
    }

    /// Sets `flag` and says whether it was set before.
    pub fn replace(&self, flag: u8, on: bool) -> bool {
        let was = self.0.get();
        self.0.set(if on { was | flag } else { was & !flag });
        was & flag != 0
    }
}

fn io_err(r: std::io::Result<usize>) -> std::io::Result<usize> {
    match r {
        Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
        other => other,
    }
}

impl Peer {
    /// The client's address, while the peer still holds its charge (it gives it back when it
    /// leaves).
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        let charge = self.charge.take();
        let ip = charge.as_ref().map(IpCharge::ip);
        self.charge.set(charge);
        ip
    }

    /// The key its events carry (`None` without events): a binary upgrade hands it on, since
    /// the client knows it.
    pub fn event_key_bytes(&self) -> Option<[u8; 16]> {
        self.events.as_ref().map(|e| e.key.bytes())
    }

    /// Waits until no write to this peer is in progress and holds its write gate, so nothing
    /// more is written until [`Peer::open_gate`]: a binary upgrade's export (`relay::handover`).
    pub async fn close_gate(&self) {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
    }

    /// [`Peer::close_gate`] when no write is in progress: true when the gate is held now.
    pub fn try_close_gate(&self) -> bool {
        match self.gate.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back the write gate [`Peer::close_gate`] held.
    pub fn open_gate(&self) {
        self.gate.add_permits(1);
    }

    /// `event_key`: `Some` for a connection that asked for events.
    pub fn new(
        id: u64,
        role: Box<str>,
        event_key: Option<EventKey>,
        sock: Socket,
        charge: IpCharge,
        now_ms: u64,
        opened: Rc<Config>,
    ) -> Peer {
        Peer {
            id,
            role,
            events: event_key.map(|key| {
                Box::new(PeerEvents {
                    key,
                    shapes: Shapes::Relay,
                    away_told_ms: Cell::new(0),
                })
            }),
            sock,
            charge: Cell::new(Some(charge)),
            gate: Semaphore::new(1),
            flags: Flags::default(),
            last_recv_ms: Cell::new(now_ms),
            last_ping_ms: Cell::new(now_ms),
            closing_since_ms: Cell::new(NOT_CLOSING),
            close_code: Cell::new(None),
            write_since_ms: Cell::new(NO_WRITE),
            pinned: Cell::new(0),
            access: None,
            opened,
        }
    }

    /// The same peer, with the access log's note of its connection (when the log is on).
    pub fn with_access(mut self, note: Option<Box<Note>>) -> Peer {
        self.access = note.map(|n| Box::new(Tally::new(*n)));
        self
    }

    /// Counts data messages read from this peer's client, for the access log (once a read).
    pub fn tally_in(&self, msgs: u64, bytes: u64) {
        if let Some(t) = &self.access {
            t.add_in(msgs, bytes);
        }
    }

    /// Counts data messages written to this peer's client, for the access log (once a write).
    pub fn tally_out(&self, msgs: u64, bytes: u64) {
        if let Some(t) = &self.access {
            t.add_out(msgs, bytes);
        }
    }

    /// The same peer, sent its events in `shapes` (if it asked for events).
    pub fn with_shapes(mut self, shapes: Shapes) -> Peer {
        if let Some(e) = &mut self.events {
            e.shapes = shapes;
        }
        self
    }

    /// Whether this connection asked for events.
    pub fn events(&self) -> bool {
        self.events.is_some()
    }

    /// The shapes its events take (ours for a connection without events).
    pub fn shapes(&self) -> Shapes {
        self.events.as_ref().map_or(Shapes::Relay, |e| e.shapes)
    }

    /// The key its events carry (a placeholder for a connection without events, which is
    /// never sent one).
    fn event_key(&self) -> &EventKey {
        self.events.as_ref().map_or(&EventKey::NONE, |e| &e.key)
    }

    /// Whether this peer, which sent while its peer is away, is to be told so now: only
    /// with the Durable Object relay's shapes, and at most once a second. Stamps the time
    /// when it is.
    pub fn away_notice_due(&self, now_ms: u64) -> bool {
        let Some(e) = self.events.as_ref() else {
            return false;
        };
        let due = e.shapes == Shapes::Durable
            && !self.is_closing()
            && durable::notice_due(e.away_told_ms.get(), now_ms as u32);
        if due {
            e.away_told_ms.set(durable::notice_stamp(now_ms as u32));
        }
        due
    }

    /// Since when the relay's close frame has waited for the peer's answer, if it sent one.
    pub fn closing_since(&self) -> Option<u64> {
        Some(self.closing_since_ms.get()).filter(|&t| t != NOT_CLOSING)
    }

    pub fn is_closing(&self) -> bool {
        self.closing_since_ms.get() != NOT_CLOSING
    }

    /// Since when the pending write to this peer has waited, if one is pending. A write the
    /// per-core timers see for the first time is stamped now, so the forwarding path never
    /// reads a clock for this.
    pub fn write_pending_since(&self, now_ms: u64) -> Option<u64> {
        match self.write_since_ms.get() {
            NO_WRITE => None,
            UNSTAMPED => {
                self.write_since_ms.set(now_ms);
                Some(now_ms)
            }
            since => Some(since),
        }
    }

    /// Drops a peer that stopped reading, as `limits.write_timeout` does: its socket is shut,
    /// so its pending writes fail at once (their buffers go back to the pool) and its reader
    /// ends; its sender is told `peer_disconnected` with 1006 and keeps its session.
    pub fn drop_stuck(&self) {
        self.flags.set(Flag::DROPPED, true);
        self.close_code.set(Some(1006));
        self.sock.abort();
    }

    /// Writes every segment of `out`, then records whether a message is left open. Gives
    /// the chunk back, for the pool. `continues`: the writer already has a message open at
    /// this peer, so `out` may start with its continuation.
    ///
    /// Checked here, holding the gate, because only here is the order of writes settled: a
    /// writer that finds a message open that is not its own (its sender lost its seat to
    /// this writer's connection while a write of it was queued or in flight) must not start
    /// another inside it. The peer is marked [`Flag::TORN`] and nothing is written; the
    /// caller closes it with 4004 (it resumes and gets these frames from its replay window).
    pub async fn send_chunk(
        &self,
        out: WriteChunk,
        open_after: bool,
        continues: bool,
    ) -> (io::Result<()>, Chunk) {
        let (r, chunk, _) = self
            .send_chunk_acking(out, open_after, continues, None)
            .await;
        (r, chunk)
    }

    /// As [`Peer::send_chunk`], and with `acks` = `(session, min)` an `ack` rides in the same
    /// writev when this peer's role has at least `min` accepted messages it was not told and
    /// the write ends between messages (two-way resume: relay::ack). The count is read, and
    /// recorded told, under the write gate like every ack's. Gives back the count told.
    pub async fn send_chunk_acking(
        &self,
        mut out: WriteChunk,
        open_after: bool,
        continues: bool,
        acks: Option<(&Session, u64)>,
    ) -> (io::Result<()>, Chunk, Option<u64>) {
        let _pinned = Pinned::new(self);
        let Ok(_permit) = self.gate.acquire().await else {
            return (
                Err(io::ErrorKind::BrokenPipe.into()),
                out.into_chunk(),
                None,
            );
        };
        // The relay may have started closing this peer while the writer waited for the gate:
        // nothing may follow its close frame.
        if self.is_closing() || self.flags.get(Flag::TORN) {
            return (
                Err(io::ErrorKind::BrokenPipe.into()),
                out.into_chunk(),
                None,
            );
        }
        if self.flags.get(Flag::DATA_OPEN) && !continues {
            self.flags.set(Flag::TORN, true);
            return (
                Err(io::ErrorKind::BrokenPipe.into()),
                out.into_chunk(),
                None,
            );
        }
        let acked = match acks {
            Some((session, min)) if self.events() && !open_after => session
                .untold(&self.role, min)
                .filter(|&k| out.append(|t| self.ack_frame_into(k, t))),
            _ => None,
        };
        let _timer = WriteTimer::start(self);
        if out.is_large() {
            // Read and unmasked just now: written at once, while the bytes are in the core's
            // cache (runtime::chunk, `WriteChunk::write_now`); what the socket does not take
            // goes through the ring below.
            match out.write_now(&self.sock) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    return (Err(e), out.into_chunk(), None)
                }
                _ => {}
            }
        }
        while !out.done() {
            let (r, o) = self.sock.writev(out).await;
            out = o;
            match io_err(r) {
                Ok(n) => out.advance(n),
                Err(e) => return (Err(e), out.into_chunk(), None),
            }
        }
        self.flags.set(Flag::DATA_OPEN, open_after);
        if let (Some(k), Some((session, _))) = (acked, acks) {
            session.tell(&self.role, k);
        }
        (Ok(()), out.into_chunk(), acked)
    }

    /// Writes whole frames held in `bytes`.
    pub async fn send_bytes(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        self.write_locked(bytes).await
    }

    async fn write_locked(&self, mut bytes: Vec<u8>) -> std::io::Result<()> {
        let _timer = WriteTimer::start(self);
        let mut off = 0;
        while off < bytes.len() {
            let (r, b) = self.sock.write(bytes).await;
            bytes = b;
            off += io_err(r)?;
            if off < bytes.len() {
                bytes.drain(..off);
                off = 0;
            }
        }
        Ok(())
    }

    /// Writes one whole data message held back by the relay (`relay::held`): like a
    /// forwarded chunk, nothing may follow the relay's close frame.
    pub async fn send_message(&self, frame: Vec<u8>) -> std::io::Result<()> {
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        if self.is_closing() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.write_locked(frame).await
    }

    /// Sends a control frame (ping or pong).
    pub async fn send_control(&self, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let n = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut frame = vec![0u8; 2 + n];
        encode_header(&mut frame, true, op, n as u64, None);
        frame[2..].copy_from_slice(&payload[..n]);
        self.send_bytes(frame).await
    }

    /// The text frame of `event`, addressed to this peer (its key added).
    pub fn event_bytes(&self, event: Event) -> Vec<u8> {
        let event = match self.shapes() {
            Shapes::Relay => event,
            Shapes::Durable => durable::reshape(event),
        };
        event_frame(&event.into_json(self.event_key()))
    }

    /// Sends a text frame with an event, unless this peer did not ask for events or a
    /// forwarded message is half written (the only case is a peer about to be closed with
    /// 4004, where the event is moot).
    pub async fn send_event(&self, event: Event) -> std::io::Result<()> {
        self.send_event_written(event).await.map(|_| ())
    }

    /// As [`Peer::send_event`]; `Ok(false)` when the event was skipped.
    pub async fn send_event_written(&self, event: Event) -> std::io::Result<bool> {
        if !self.events() {
            return Ok(false);
        }
        self.send_event_frame(self.event_bytes(event)).await
    }

    /// Appends the text frame of an `ack` event (two-way resume) addressed to this peer to
    /// `frame`. Written out directly: acks are the one event sent all along a busy stream
    /// (every `session.ack_every` messages), so they skip building a JSON map.
    fn ack_frame_into(&self, acked: u64, frame: &mut Vec<u8>) {
        // Under 126 bytes: a two-byte header, its length filled in once the text is written.
        let start = frame.len();
        frame.extend_from_slice(&[0x81, 0]);
        super::events::ack_json(acked, self.event_key(), frame);
        let len = frame.len() - start - 2;
        debug_assert!(len < 126);
        frame[start + 1] = len as u8;
    }

    /// Writes an `ack` to this peer with its role's count, read (and recorded told) under the
    /// write gate, unless nothing is left to tell or the ack cannot go now (no events, a
    /// forwarded message half written, closing). Gives back the count told.
    pub async fn send_ack(&self, session: &Session) -> io::Result<Option<u64>> {
        if !self.events() {
            return Ok(None);
        }
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if self.flags.get(Flag::DATA_OPEN) || self.is_closing() {
            return Ok(None);
        }
        let Some(k) = session.untold(&self.role, 1) else {
            return Ok(None);
        };
        let mut frame = Vec::with_capacity(128);
        self.ack_frame_into(k, &mut frame);
        self.write_locked(frame).await?;
        session.tell(&self.role, k);
        Ok(Some(k))
    }

    /// Writes an event's frame (from `event_bytes`); `Ok(false)` when it was
    /// skipped (no events, a forwarded message half written, or closing).
    pub async fn send_event_frame(&self, frame: Vec<u8>) -> std::io::Result<bool> {
        if !self.events() {
            return Ok(false);
        }
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        if self.flags.get(Flag::DATA_OPEN) || self.is_closing() {
            return Ok(false);
        }
        self.write_locked(frame).await.map(|_| true)
    }

    /// Sends a text message that must not be skipped (a bridged request). Unlike an event it
    /// waits out a forwarded message that is half written to this peer, polling, since that
    /// is rare and short; the caller bounds the wait (`bridge.timeout`).
    pub async fn send_text(&self, json: &str) -> std::io::Result<()> {
        let frame = event_frame(json);
        loop {
            let Ok(_permit) = self.gate.acquire().await else {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            };
            if self.is_closing() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            if !self.flags.get(Flag::DATA_OPEN) {
                return self.write_locked(frame).await;
            }
            drop(_permit);
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Starts the closing handshake from the relay's side; the reader task finishes it.
    pub async fn close(&self, code: CloseCode, reason: &str, now_ms: u64) {
        if self.is_closing() {
            return;
        }
        self.closing_since_ms.set(now_ms.min(NOT_CLOSING - 1));
        self.close_code.set(Some(code.0));
        let mut frame = [0u8; 2 + MAX_CONTROL_PAYLOAD];
        let n = encode_close_frame(&mut frame, code, reason);
        if self.send_bytes(frame[..n].to_vec()).await.is_err() {
            self.sock.abort();
        }
    }

    /// Answers the peer's close: the same code back, or an empty close when it gave none.
    pub async fn answer_close(&self, code: u16) {
        let frame = if code == 1005 {
            vec![0x88, 0]
        } else {
            vec![0x88, 2, (code >> 8) as u8, code as u8]
        };
        let _ = self.send_bytes(frame).await;
    }
}

/// `closing_since_ms` of a peer the relay has not closed.
const NOT_CLOSING: u64 = u64::MAX;

/// `write_since_ms` of a write the keepalive tick has not seen yet.
pub const UNSTAMPED: u64 = u64::MAX;

/// `write_since_ms` while no write is pending.
const NO_WRITE: u64 = u64::MAX - 1;

/// Marks a write as pending for the keepalive tick's write timeout while it lives.
struct WriteTimer<'a>(&'a Peer);

impl<'a> WriteTimer<'a> {
    fn start(peer: &'a Peer) -> WriteTimer<'a> {
        peer.write_since_ms.set(UNSTAMPED);
        WriteTimer(peer)
    }
}

impl Drop for WriteTimer<'_> {
    fn drop(&mut self) {
        self.0.write_since_ms.set(NO_WRITE);
    }
}

/// Counts a pooled buffer waiting to be written to a peer while it lives.
struct Pinned<'a>(&'a Peer);

impl<'a> Pinned<'a> {
    fn new(peer: &'a Peer) -> Pinned<'a> {
        peer.pinned.set(peer.pinned.get() + 1);
        Pinned(peer)
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.0.pinned.set(self.0.pinned.get() - 1);
    }
}

/// A complete unmasked text frame holding `json`.
pub fn event_frame(json: &str) -> Vec<u8> {
    let mut out = vec![0u8; 10 + json.len()];
    let n = encode_header(&mut out, true, OpCode::Text, json.len() as u64, None);
    out.truncate(n);
    out.extend_from_slice(json.as_bytes());
    out
}
