//! The life of one upgraded connection: read, forward, answer control frames, leave.

use super::ack;
use super::away::{self, Verdict};
use super::held;
use super::inbound::{Closing, DecodeLimits, Hold, Inbound, Outcome, Pongs, Released};
use super::resume;
use crate::config::Config;
use crate::context::Core;
use crate::limits::Throttle;
use crate::runtime::chunk::{Chunk, SegmentOutOfBounds};
use crate::session::events;
use crate::session::events::durable::Shapes;
use crate::session::{Flag, Peer, Session};
use crate::stats::access::{self, Closer, Ended};
use crate::stats::{bump, Latency};
use crate::ws::CloseCode;
use std::rc::Rc;
use std::time::Instant;

/// Code reported when a connection ends without a close frame (RFC 6455 section 7.1.5).
const ABNORMAL: u16 = 1006;

/// The size of the future an async fn of four arguments returns, for the check below.
const fn future_size<A, B, C, D, Fut, F: FnOnce(A, B, C, D) -> Fut>(_: &F) -> usize {
    std::mem::size_of::<Fut>()
}

// Every connection's task is this future plus monoio's task header (24 bytes), the tag of
// the task's stage (8) and its trailer (16), for the whole life of the connection, idle or
// not: at the default `max_connections_per_worker` of 100,000, each 256 bytes is 25 MiB per
// core. An idle connection waits for readiness in it and keeps nothing else of the
// forwarding path: the large future of a read and its steps (`turns`, about 1 KiB, the
// decoder state `Reader`, 320, inside it) is boxed when bytes come and freed when the socket
// has to be waited for again, and a reader with state to keep between reads (a frame or
// message in progress, a rate limit, held messages) is boxed apart. 200 bytes with rustc
// 1.95 (bound 208), so the task is at most 256, mimalloc's 256-byte size class (it was 1,008 bytes, in
// the 1,280 class, before the idle wait was split out). The bound was 216 until issue 17's
// third round, which let the future grow to 216 and the task to 264 bytes: in the 320 class,
// as mimalloc's heap showed (`idle_memory.py`, docs/performance.md). A change that grows it
// past 208 bytes moves every connection's task into the 320 class: box what grew it, or say
// here why every connection needs the room.
// (To see the figure, turn this into `const _: [(); 0] = [(); future_size(&run)];` and read
// the compiler's error.)
const _: () = assert!(future_size(&run) <= 208);

/// Bytes that came with the upgrade request, boxed twice: a thin pointer in every idle
/// connection's task (8 bytes rather than a slice's 16), the second box only when there are
/// any.
type Initial = Box<Box<[u8]>>;

/// Reads from `peer` until it leaves and forwards to the other peer of `session` (or back to
/// itself on the echo route, when `session` is `None`). `initial` holds bytes that arrived
/// with the upgrade request (kept in the task as [`Initial`]: 8 bytes of every idle
/// connection's task rather than a `Vec`'s 24).
///
/// Each turn of the loop is four steps: [`Reader::read`] a buffer, [`Reader::route`] and
/// [`Reader::decode`] it, [`deliver`] its frames (or keep them for an absent receiver), and
/// [`after_write`] answer what the read asked for and pace the next one.
pub fn run(
    core: Rc<Core>,
    peer: Rc<Peer>,
    session: Option<Rc<Session>>,
    initial: Vec<u8>,
) -> impl std::future::Future<Output = ()> {
    let initial = (!initial.is_empty()).then(|| Box::new(initial.into_boxed_slice()));
    serve(core, peer, session, initial)
}

/// [`run`]'s task.
async fn serve(
    core: Rc<Core>,
    peer: Rc<Peer>,
    session: Option<Rc<Session>>,
    mut initial: Option<Initial>,
) {
    // Only a reader with state to keep (a message or frame in progress, a rate limit's
    // debt, held messages) stays between reads; a fresh one is made in `turns` otherwise.
    let mut kept: Option<Box<Reader>> = None;
    let (end_code, violated) = loop {
        // Idle, a connection is this small future waiting for readiness: the large one that
        // reads and forwards (`turns`) is made when bytes come and freed when they stop.
        if initial.is_none() {
            // At rest, a binary upgrade may hand the connection over as it is: it parks
            // instead of reading (relay::handover), before the wait or when woken in it.
            let rest = kept.as_deref().is_none_or(Reader::parkable);
            peer.flags.set(Flag::QUIET, rest);
            if rest && core.registry.park.holds() && Box::pin(parked_away(&core)).await {
                return;
            }
            if peer.sock.readable().await.is_err() {
                break (ABNORMAL, false);
            }
            if rest && core.registry.park.holds() && Box::pin(parked_away(&core)).await {
                return;
            }
            peer.flags.set(Flag::QUIET, false);
        }
        let c = Conn {
            core: &core,
            peer: &peer,
            session: session.as_ref(),
        };
        if let Next::End { code, violated } = Box::pin(turns(&c, &mut kept, &mut initial)).await {
            break (code, violated);
        }
    };
    let inbound = kept.as_deref().map(|r| &r.inbound);
    leave(&core, &peer, session.as_ref(), inbound, end_code);
    if violated {
        // Out of its session already (its seat is free for a reconnect); only the socket
        // lingers, for at most the close timeout.
        let linger = core.config().session.close_timeout;
        let _ = Box::pin(monoio::time::timeout(linger, drain_until_closed(&peer))).await;
    }
    end_socket(peer);
}

/// Waits, parked, for a binary upgrade's outcome: true when the new process took the
/// connection, whose task then ends here without a word to its client, no close frame and
/// no shutdown(2) (the new process holds the socket; closing this process's descriptor of it
/// is all that happens).
async fn parked_away(core: &Core) -> bool {
    core.registry.park.wait().await == crate::session::park::Resolved::Released
}

/// Ends the connection's socket as its task ends. Held only by this task, the peer is
/// dropped here and that closes the socket: a `shutdown(2)` first would be one more syscall
/// per connection for nothing (issue 17, churn). Held elsewhere too (a write to it in
/// flight, a timer's or another core's reference), it would outlive the task: both
/// directions are shut now, so those writes fail at once and the client sees the end now.
fn end_socket(peer: Rc<Peer>) {
    if Rc::strong_count(&peer) > 1 || Rc::weak_count(&peer) > 0 {
        peer.sock.abort();
    }
}

/// Reads and forwards until the socket has to be waited for again ([`Next::Read`]) or the
/// connection ends: each turn is one read (a pooled buffer, only now) and its four steps.
/// Boxed by [`run`] once per readiness, not per read: a busy connection stays in here. The
/// reader is `kept`'s, or a fresh one inside this future, boxed into `kept` only if it ends
/// with state to keep (or the connection ends: [`leave`] reads its decoder).
async fn turns(
    c: &Conn<'_>,
    kept: &mut Option<Box<Reader>>,
    initial: &mut Option<Initial>,
) -> Next {
    let mut fresh = None;
    let reader = match kept {
        Some(r) => &mut **r,
        None => fresh.insert(Reader::new(c.core, &c.peer.opened)),
    };
    let next = read_and_forward(c, reader, initial).await;
    let ended = matches!(next, Next::End { .. });
    match fresh {
        Some(r) if ended || !r.at_rest() => *kept = Some(Box::new(r)),
        Some(_) => {}
        None if !ended && kept.as_deref().is_some_and(Reader::at_rest) => *kept = None,
        None => {}
    }
    next
}

/// The loop of [`turns`]: reads while the last read filled its buffer.
async fn read_and_forward(
    c: &Conn<'_>,
    reader: &mut Reader,
    initial: &mut Option<Initial>,
) -> Next {
    let (core, peer) = (c.core, c.peer);
    loop {
        let mut chunk = match reader.read(c, initial).await {
            Got::Bytes(chunk) => chunk,
            Got::Wait => return Next::Read,
            Got::Restart => {
                // A TLS connection on carried keys whose client asked for a key update: told
                // 1012 under the current key, so it reconnects (docs/upgrade.md).
                bump(&core.stats.tls_key_update_closed, 1);
                let now = core.clock.now_ms();
                peer.close(CloseCode::SERVICE_RESTART, "tls key update", now)
                    .await;
                return Next::End {
                    code: CloseCode::SERVICE_RESTART.0,
                    violated: false,
                };
            }
            Got::Gone => {
                return Next::End {
                    code: ABNORMAL,
                    violated: false,
                }
            }
        };
        let now = core.clock.now_ms();
        let read_at = core.latency.enabled().then(Instant::now);
        peer.last_recv_ms.set(now);
        let route = reader.route(c);
        let mut read = match reader.decode(c, &mut chunk, &route, now) {
            Ok(read) => read,
            Err(e) => {
                // A decoder bug: nothing of this read is written, and only this connection ends.
                tracing::error!(conn = peer.id, error = %e, "decoder chose bytes outside its read");
                core.pool.put(chunk);
                return Next::End {
                    code: ABNORMAL,
                    violated: false,
                };
            }
        };
        if let (true, Some(s)) = (read.ack_due, c.session) {
            // Started before the forward write is awaited: both writes go to the kernel in
            // the same submission (relay::ack).
            ack::send(core, s, peer);
        }
        let verdict = deliver(c, &reader.inbound, &route, chunk, &mut read, &read_at).await;
        match after_write(c, reader, &read.out, read.pongs, &route, verdict, now).await {
            Next::Read if reader.hot => {}
            next => return next,
        }
    }
}

/// What [`Reader::read`] found.
enum Got {
    Bytes(Chunk),
    /// Nothing to read yet: wait for readiness.
    Wait,
    /// The TLS record layer cannot go on under its keys (`runtime::tls::wants_restart`).
    Restart,
    /// The connection is gone.
    Gone,
}

/// The connection a reader serves: what every step of [`run`] needs, borrowed.
#[derive(Clone, Copy)]
struct Conn<'a> {
    core: &'a Rc<Core>,
    peer: &'a Rc<Peer>,
    session: Option<&'a Rc<Session>>,
}

/// What a connection's reader keeps from one read to the next.
struct Reader {
    limits: DecodeLimits,
    throttle: Option<Throttle>,
    inbound: Inbound,
    /// Made when the connection first has messages to hold (relay::held): only an agent's
    /// connection and one whose messages may reach an agent ever do.
    hold: Option<Box<Hold>>,
    /// After a read that filled the buffer more is likely waiting: read again at once rather
    /// than paying for a readiness round trip.
    hot: bool,
    /// The last read brought at least a normal buffer's worth: with a large frame open, the
    /// next one goes into a large buffer if the pool has one free (runtime::pool).
    bulk: bool,
    /// Reads made at once ([`Chunk::read_now`]) since the last one through the ring.
    reads_now: u8,
}

/// A read made at once, whose write the socket takes at once, never waits: past this many in
/// a row the next read goes through the ring, where the task yields, so a connection
/// streaming large frames to a receiver that keeps up cannot hold its core (1 MiB at the
/// default large buffer size, about 0.3 ms of copying).
const READS_NOW_IN_A_ROW: u8 = 4;

/// Where one read's messages go, decided before it is decoded.
struct Route {
    /// The peer its frames are written to, if any is there and open.
    receiver: Option<Rc<Peer>>,
    /// The frames go into the sender's backlog instead (docs/durability.md).
    storing: bool,
    /// The messages this read completes are credited to the sender's role (two-way resume:
    /// it asked for `resume=`, holds its seat and is not being closed).
    counted: bool,
    /// The connection a message of this sender was left open at by earlier reads: this
    /// read's first frames may continue it there, and only there (`Peer::send_chunk`).
    open_to: Option<u64>,
}

/// What decoding one read found, besides the segments the chunk now holds.
struct Read {
    out: Outcome,
    /// Held messages to write before the segment each names (relay::held).
    released: Vec<Released>,
    /// Relay route: the pongs answering this read's pings, whole frames in order, for the
    /// sender (on the echo route they went out in place, with the frames echoed).
    pongs: Option<Vec<u8>>,
    /// Two-way resume: an `ack` is due at once.
    ack_due: bool,
}

/// How [`run`]'s loop goes on after a read.
enum Next {
    Read,
    End { code: u16, violated: bool },
}

impl Reader {
    /// `opened`: the config in force when the connection was upgraded.
    fn new(core: &Core, opened: &Config) -> Reader {
        let cfg = &opened.limits;
        let limits = DecodeLimits {
            max_message_bytes: cfg.max_message_bytes as u64,
            max_frames_per_message: u32::try_from(cfg.max_frames_per_message).unwrap_or(u32::MAX),
            max_pending_pongs: u32::try_from(cfg.max_pending_pongs).unwrap_or(u32::MAX),
        };
        // The buckets start on a fresh clock reading, or a stale tick would credit them with
        // time that never passed.
        let throttle = Throttle::configured(cfg)
            .then(|| core.clock.tick())
            .and_then(|now| Throttle::new(cfg, now));
        Reader {
            limits,
            throttle,
            inbound: Inbound::default(),
            hold: None,
            hot: false,
            bulk: false,
            reads_now: 0,
        }
    }

    /// Nothing half read: no frame or message in progress, no held messages. A binary
    /// upgrade may hand the connection over at this point (relay::handover); a rate limit's
    /// debt is not carried (the new process's limiter starts full).
    fn parkable(&self) -> bool {
        self.hold.as_deref().is_none_or(Hold::at_rest) && self.inbound.at_rest()
    }

    /// Nothing to keep until the next read: a fresh reader would do the same (a reload's
    /// new decode limits apply from the next read of a connection at rest).
    fn at_rest(&self) -> bool {
        !self.hot && self.hold.is_none() && self.throttle.is_none() && self.inbound.at_rest()
    }

    /// Step 1: a pooled buffer laid out for the decoder (headroom, carried bytes), then the
    /// next bytes: those that came with the upgrade request first, else a read (the caller
    /// waited for readiness, or the last read filled its buffer), so that an idle connection
    /// holds no buffer.
    async fn read(&mut self, c: &Conn<'_>, initial: &mut Option<Initial>) -> Got {
        let (core, peer) = (c.core, c.peer);
        if let Some(bytes) = initial.take() {
            let mut chunk = core.pool.take().await;
            chunk.lay_out(|data| self.inbound.prepare(data));
            chunk.extend_from_slice(&bytes);
            return Got::Bytes(chunk);
        }
        // Dropped for not reading (its socket is shut): it leaves without queueing for a
        // buffer, which may be what the pool is short of.
        if peer.flags.get(Flag::DROPPED) {
            return Got::Gone;
        }
        let mut chunk = match self.take_large(core) {
            Some(large) => large,
            None => core.pool.take().await,
        };
        chunk.lay_out(|data| self.inbound.prepare(data));
        if chunk.is_large() && self.reads_now < READS_NOW_IN_A_ROW {
            // Streaming large frames, the socket most likely holds more already: read it now,
            // so that this read's bytes are unmasked and written on while they are still in
            // the core's cache. Through the ring, every busy connection's read of a turn is
            // copied in before any is unmasked, and with ten large buffers that is more than
            // the core's cache holds (docs/performance.md, "Large messages").
            match chunk.read_now(&peer.sock) {
                Ok(n) if n > 0 => {
                    bump(&core.stats.large_reads_now, 1);
                    self.reads_now += 1;
                    return self.got(core, chunk);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => {
                    core.pool.put(chunk);
                    return Got::Gone;
                }
            }
        }
        self.reads_now = 0;
        match chunk.read_from(&peer.sock).await {
            Ok(n) if n > 0 => self.got(core, chunk),
            // TLS: only part of a record came; the buffer goes back while the rest is
            // awaited (`Socket::read`).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                core.pool.put(chunk);
                self.hot = false;
                Got::Wait
            }
            Err(e) if crate::runtime::tls::wants_restart(&e) => {
                core.pool.put(chunk);
                Got::Restart
            }
            _ => {
                core.pool.put(chunk);
                Got::Gone
            }
        }
    }

    /// A read brought bytes: whether more are likely waiting (it filled the buffer) and
    /// whether it was a normal buffer's worth (the next may take a large one).
    fn got(&mut self, core: &Core, chunk: Chunk) -> Got {
        self.hot = chunk.is_full();
        self.bulk = chunk.data().len() >= core.pool.buf_bytes();
        Got::Bytes(chunk)
    }

    /// A large buffer for a sender streaming large frames faster than they are forwarded:
    /// its last read brought a normal buffer's worth and ended inside a frame of at least a
    /// quarter of one. Fewer, larger reads and writes per MB (docs/performance.md). Never
    /// for a connection under a message or byte rate: its pace is charged a read at a time,
    /// so a read four times larger would let it run that much past its burst.
    fn take_large(&self, core: &Core) -> Option<Chunk> {
        let min = core.pool.large_frame_bytes();
        let large = self.inbound.open_frame_len().is_some_and(|n| n >= min);
        (self.bulk && large && self.throttle.is_none())
            .then(|| core.pool.take_large())
            .flatten()
    }

    /// Step 2: where this read goes: the receiver, or the backlog while it is away or
    /// messages kept for it are still being delivered; and whether messages are held.
    fn route(&mut self, c: &Conn<'_>) -> Route {
        let (core, peer) = (c.core, c.peer);
        // A peer that lost its seat to a newer connection of its role sends nothing more:
        // its successor sends again what it was not credited with.
        let sending = !peer.flags.get(Flag::UNSEATED) && !peer.is_closing();
        let receiver = match (c.session, sending) {
            (_, false) => None,
            // A peer the relay is closing takes no more data (RFC 6455 section 5.5.1), nor
            // does one about to be closed for holding part of a torn message: what is sent
            // meanwhile is kept for its successor, as for a peer away.
            (Some(s), true) => s
                .other(peer.id)
                .filter(|r| !r.is_closing() && !r.flags.get(Flag::TORN)),
            (None, true) => Some(peer.clone()),
        };
        let counted = sending && peer.flags.get(Flag::COUNTS);
        if let (Some(s), false, Some(to)) = (c.session, sending, self.inbound.receiver_open()) {
            // The rest of a message part of which reached its receiver will never come from
            // this connection: the receiver is closed (4004) rather than left with a part.
            resume::abandon_torn(core, s, peer, Some(to));
        }
        if let (Some(s), Some(to)) = (c.session, self.inbound.message_receiver()) {
            // The receiver of this message left before its end: with resume on for it, the
            // message goes on into the backlog instead of being lost.
            let gone = to != away::STORE && receiver.as_ref().map(|r| r.id) != Some(to);
            if gone && s.resume_on.get() && resume::carry(core, s, peer) {
                self.inbound.redirect(to, away::STORE);
            }
        }
        let storing = sending
            && c.session
                .is_some_and(|s| away::storing(core, s, peer, receiver.as_ref(), &self.inbound));
        let mode = c
            .session
            .and_then(|_| held::mode(core, peer, receiver.as_ref(), storing));
        if mode.is_some() && self.hold.is_none() {
            self.hold = Some(held::new_hold(core));
        }
        if let Some(h) = self.hold.as_mut() {
            h.mode = mode;
        }
        Route {
            receiver,
            storing,
            counted,
            open_to: self.inbound.receiver_open(),
        }
    }

    /// Step 3: unmasks the frames in place and chooses the segments to write (checked by the
    /// chunk), then counts what was received.
    fn decode(
        &mut self,
        c: &Conn<'_>,
        chunk: &mut Chunk,
        route: &Route,
        now: u64,
    ) -> Result<Read, SegmentOutOfBounds> {
        let decode_for = if route.storing {
            Some(away::STORE)
        } else {
            route.receiver.as_ref().map(|r| r.id)
        };
        let Reader {
            limits,
            inbound,
            hold,
            ..
        } = self;
        // The echo route writes its pongs in place among the frames it echoes; the relay
        // route sends them back apart (the segments go to the other peer).
        let echo = c.session.is_none();
        let mut aside = Vec::new();
        let out = chunk.decode(|data, segs| {
            let pongs = if echo {
                Pongs::Inline
            } else {
                Pongs::Aside(&mut aside)
            };
            inbound.decode_holding(data, decode_for, *limits, segs, hold.as_deref_mut(), pongs)
        })?;
        let released = hold
            .as_mut()
            .map(|h| std::mem::take(&mut h.released))
            .unwrap_or_default();
        // Rare: copied out so the buffer can go to the receiver first.
        let pongs = (!aside.is_empty()).then(|| {
            let data = chunk.data();
            aside
                .iter()
                .flat_map(|&(a, b)| &data[a..b])
                .copied()
                .collect()
        });
        if out.data_seen {
            if let Some(s) = c.session {
                s.last_activity_ms.set(now);
            }
        }
        let st = &c.core.stats;
        let whole = (out.messages_forwarded + out.messages_dropped + out.answers) as u64;
        bump(&st.messages_received, whole);
        // Two-way resume: every message read whole is accepted (forwarded, kept, or dropped
        // by policy with an event), so the count stays a prefix of what the client sent.
        let ack_due = match (c.session, route.counted && whole > 0) {
            (Some(s), true) => ack::count(c.core, s, c.peer, whole),
            _ => false,
        };
        bump(&st.bytes_received, out.payload_bytes);
        c.peer.tally_in(whole, out.payload_bytes);
        Ok(Read {
            out,
            released,
            pongs,
            ack_due,
        })
    }
}

/// Step 4, route or keep: writes the read's frames to the receiver (the held messages
/// released in it in their places), or keeps them in the sender's backlog; the buffer goes
/// back to the pool. The verdict says whether the backlog has room for more.
async fn deliver(
    c: &Conn<'_>,
    inbound: &Inbound,
    route: &Route,
    chunk: Chunk,
    read: &mut Read,
    read_at: &Option<Instant>,
) -> Verdict {
    // `read` and `read_at` come by reference, not by value: this future is inline in every
    // connection's task (`run`), where each byte it keeps counts against the 1 KiB above.
    let (core, peer) = (c.core, c.peer);
    if let (Some(s), true) = (c.session, route.storing) {
        // Kept messages are counted as forwarded when they are delivered.
        let (v, completed) = if read.released.is_empty() {
            away::store(core, s, peer, chunk.data(), chunk.segments())
        } else {
            held::store(
                core,
                s,
                peer,
                chunk.data(),
                chunk.segments(),
                std::mem::take(&mut read.released),
            )
        };
        if route.receiver.is_none() && completed > 0 {
            away::tell_away(core, peer, true);
        }
        core.pool.put(chunk);
        if let (Some(r), true) = (&route.receiver, completed > 0) {
            away::deliver(core, s, r);
        }
        return v;
    }
    bump(
        &core.stats.messages_forwarded,
        read.out.messages_forwarded as u64,
    );
    bump(&core.stats.bytes_forwarded, read.out.forwarded_bytes);
    if let Some(r) = &route.receiver {
        r.tally_out(read.out.messages_forwarded as u64, read.out.forwarded_bytes);
    }
    let out_open = |r: &Peer| inbound.receiver_open() == Some(r.id);
    match (&route.receiver, chunk.segments().is_empty()) {
        (Some(r), _) if !read.released.is_empty() => {
            let open = held::Open {
                continues: route.open_to == Some(r.id),
                at_end: out_open(r),
            };
            let send = held::send(
                core,
                c.session,
                peer,
                r,
                chunk,
                std::mem::take(&mut read.released),
                open,
            );
            core.pool.put(Box::pin(send).await);
            close_if_torn(core, r);
            core.latency.record_since(Latency::Relay, *read_at);
        }
        (Some(r), false) => {
            if let Some(s) = c.session.filter(|s| s.resume_on.get()) {
                resume::retain(core, s, peer, r, chunk.data(), chunk.segments());
            }
            let continues = route.open_to == Some(r.id);
            // Two-way resume: the receiver's own untold ack rides along when it can.
            let acks = c.session.and_then(|s| ack::riding(core, s, r));
            let (_, chunk, told) = r
                .send_chunk_acking(chunk.into_write(), out_open(r), continues, acks)
                .await;
            ack::rode(core, told);
            core.pool.put(chunk);
            close_if_torn(core, r);
            core.latency.record_since(Latency::Relay, *read_at);
        }
        _ => core.pool.put(chunk),
    }
    Verdict::Go
}

/// Step 5, after the write: hands the bridge its answers, tells the sender of messages
/// dropped for want of a peer, answers the latest ping, closes a receiver left mid-message,
/// ends the connection on a close frame or a violation, else paces the next read.
async fn after_write(
    c: &Conn<'_>,
    reader: &mut Reader,
    out: &Outcome,
    pongs: Option<Vec<u8>>,
    route: &Route,
    verdict: Verdict,
    now: u64,
) -> Next {
    let (core, peer) = (c.core, c.peer);
    if let Some(h) = reader.hold.as_mut().filter(|_| out.answers > 0) {
        for answer in &h.answers {
            let (json, cut, id) = (answer.json(), answer.truncated, answer.id.as_deref());
            crate::bridge::answers::deliver(core, peer.id, json, cut, id);
        }
        h.clear_done();
    }
    if out.messages_dropped > 0 {
        bump(
            &core.stats.messages_dropped_peer_absent,
            out.messages_dropped as u64,
        );
        if away::tell_away(core, peer, false) {
            // Told in the Durable Object relay's words instead (`/desktop`, `/mobile`).
        } else if peer.events() && !peer.is_closing() && peer.shapes() == Shapes::Relay {
            let detail = format!(
                "{} message(s) dropped: no peer connected",
                out.messages_dropped
            );
            let _ = Box::pin(peer.send_event(events::error("peer_absent", &detail))).await;
        }
    }
    // The rare awaits below are boxed: their futures would otherwise size every
    // connection's task for its whole life.
    bump(
        &core.stats.pings_coalesced,
        u64::from(out.pings - out.pongs),
    );
    bump(&core.stats.pongs_sent, u64::from(out.pongs));
    // Answered before this connection is read again: at most `limits.max_pending_pongs`
    // are ever pending. (On the echo route they went out with the read's frames.)
    if let Some(frames) = pongs {
        let _ = Box::pin(peer.send_bytes(frames)).await;
    }
    if let (Some(id), Some(r)) = (out.aborted_receiver, &route.receiver) {
        if r.id == id {
            abort_receiver(core, r.clone());
        }
    }
    if let Some(closing) = out.closing {
        return end(c, closing, out.forged_request, now).await;
    }
    pace(c, reader, out, verdict, now).await;
    Next::Read
}

/// Ends the connection the read asked to end: answers a close frame, or counts a violation
/// and closes with its code.
async fn end(c: &Conn<'_>, closing: Closing, forged_request: bool, now: u64) -> Next {
    let (core, peer) = (c.core, c.peer);
    match closing {
        Closing::Peer(code) => {
            if !peer.is_closing() {
                Box::pin(peer.answer_close(code)).await;
            }
            Next::End {
                code,
                violated: false,
            }
        }
        Closing::Violation(code, reason) => {
            if forged_request {
                bump(&core.stats.bridge_forged_requests, 1);
            } else {
                bump(&core.stats.protocol_errors, 1);
            }
            if code == CloseCode::TOO_BIG {
                bump(&core.stats.messages_dropped_over_limit, 1);
            }
            if code == CloseCode::POLICY && !forged_request {
                bump(&core.stats.fragment_floods, 1);
            }
            Box::pin(peer.close(code, reason, now)).await;
            Next::End {
                code: code.0,
                violated: true,
            }
        }
    }
}

/// Holds the next read back: while the backlog is full (or closes the sender when the
/// session says so), and while the connection owes its rate limit time.
async fn pace(c: &Conn<'_>, reader: &mut Reader, out: &Outcome, verdict: Verdict, now: u64) {
    let (core, peer) = (c.core, c.peer);
    match (verdict, c.session) {
        (Verdict::Pause, Some(s)) => {
            Box::pin(away::pause_while_full(core, s, peer)).await;
            reader.hot = false;
        }
        (Verdict::Close, _) => Box::pin(away::close_full(core, peer, now)).await,
        _ => {}
    }
    if let Some(t) = reader.throttle.as_mut() {
        let messages = out.messages_forwarded + out.messages_dropped;
        if t.charge(messages, out.payload_bytes, now) > 0 {
            Box::pin(pause(core, peer, t)).await;
            reader.hot = false;
        }
    }
}

/// A client closed for a violation may still be sending. Closing the socket with its data
/// unread would reset the connection, and the client would lose the close frame (and the
/// code saying why). So: FIN after the close frame, then read and discard until the client
/// closes too (the caller bounds this by `session.close_timeout`).
async fn drain_until_closed(peer: &Peer) {
    peer.sock.shutdown_write();
    let mut buf = vec![0u8; 4096];
    loop {
        let (r, b) = peer.sock.read_wait(buf).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Waits off a connection's rate debt without reading it: its data stays in its socket and
/// the client, and nothing is dropped.
async fn pause(core: &Core, peer: &Peer, throttle: &mut Throttle) {
    // The coarse clock may be a tick behind: the wait is computed on a fresh reading.
    let now = core.clock.tick();
    let wait = throttle.charge(0, 0, now);
    if wait == 0 {
        return;
    }
    bump(&core.stats.rate_limit_pauses, 1);
    bump(&core.stats.rate_limit_pause_ms, wait);
    // Not silence: the keepalive tick must not take the pause for a dead peer.
    peer.last_recv_ms.set(now + wait);
    monoio::time::sleep(std::time::Duration::from_millis(wait)).await;
    core.clock.tick();
}

/// The write to `r` found it holding part of another sender's message, one that will never
/// be finished (`Peer::send_chunk` marked it torn): it is closed with 4004 like any receiver
/// left with part of a message, and resumes. What was not written to it is in its replay
/// window (retained before the write) or, from now on, kept for its successor.
fn close_if_torn(core: &Rc<Core>, r: &Rc<Peer>) {
    if r.flags.get(Flag::TORN) && !r.is_closing() {
        bump(&core.stats.receivers_closed_torn, 1);
        abort_receiver(core, r.clone());
    }
}

/// A receiver that holds part of a message that will never be finished is closed: it cannot
/// be handed the truncated message as if it were whole.
pub(super) fn abort_receiver(core: &Rc<Core>, r: Rc<Peer>) {
    let now = core.clock.now_ms();
    monoio::spawn(async move {
        r.close(CloseCode::PEER_ABORTED, "peer left mid-message", now)
            .await
    });
}

fn leave(
    core: &Rc<Core>,
    peer: &Rc<Peer>,
    session: Option<&Rc<Session>>,
    inbound: Option<&Inbound>,
    end_code: u16,
) {
    core.registry.remove_peer(peer.id);
    core.cluster_local.left(peer.id);
    // Its client's count of open connections, given back on the client's home core.
    drop(peer.charge.take());
    let failed = core.bridge.agent_gone(peer.id);
    bump(&core.stats.bridge_agent_gone, failed as u64);
    let code = peer.close_code.get().unwrap_or(end_code);
    core.stats.closed(code);
    if let Some(s) = session {
        if let Some(open_to) = inbound.and_then(Inbound::receiver_open) {
            // By id: once this peer was replaced, `other` could be its successor.
            resume::abandon_torn(core, s, peer, Some(open_to));
        }
        if inbound.and_then(Inbound::message_receiver) == Some(away::STORE) {
            away::abandon_open(core, s, peer);
        }
        if s.leave(peer.id) {
            if let Some(other) = s.other(peer.id).filter(|o| o.events()) {
                let event = events::peer_disconnected(&peer.role, code);
                monoio::spawn(async move {
                    let _ = other.send_event(event).await;
                });
            }
        }
        away::release(core, s, core.clock.now_ms());
    }
    core.publish_gauges();
    log_access(core, peer, session, code);
    // Debug, as "peer joined" is (relay::join): the access log records finished connections.
    tracing::debug!(
        conn = peer.id,
        role = &*peer.role,
        session = session.map(|s| &*s.id),
        code,
        "connection closed"
    );
}

/// The access log's line of a connection that ended with `code` (nothing when it is off):
/// the relay closed it when it sent a close of its own first (4004: because its peer left
/// mid-message), else its client did, by a close frame or by dropping the connection.
fn log_access(core: &Core, peer: &Peer, session: Option<&Rc<Session>>, code: u16) {
    let Some(t) = peer.access.as_deref() else {
        return;
    };
    let by = match peer.close_code.get() {
        None => Closer::Client,
        Some(c) if c == CloseCode::PEER_ABORTED.0 => Closer::Peer,
        Some(_) => Closer::Relay,
    };
    let agent = session.is_some() && *peer.role == *core.config().bridge.agent_role;
    let end = Ended {
        route: if agent { "agent" } else { t.note.route },
        session: session.map(|s| &*s.id),
        role: &peer.role,
        code,
        by,
    };
    access::connection(&core.stats, Some(t), end);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap objects one idle paired connection holds, for docs/performance.md
    /// ("Memory"): run with `--nocapture` to see them. Checks only that the task stays the
    /// largest part and within its bound above, so a change that moves the bytes elsewhere
    /// shows up here.
    /// The size of the future an async fn of three arguments returns.
    const fn future_size3<A, B, C, Fut, F: FnOnce(A, B, C) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn idle_connection_objects() {
        let task = future_size(&run);
        let peer = std::mem::size_of::<Peer>();
        let session = std::mem::size_of::<Session>();
        let reader = std::mem::size_of::<Reader>();
        let inbound = std::mem::size_of::<Inbound>();
        let turns = future_size3(&turns);
        println!(
            "run future {task} (a reading connection's turns future {turns}, boxed), \
             Reader {reader} (Inbound {inbound}, boxed only with state to keep), Peer {peer}, \
             Session {session} (one per pair)"
        );
        // The idle task holds neither the decoder nor the forwarding steps' futures.
        assert!(task <= 208 && task < reader && task < turns);
    }
}
