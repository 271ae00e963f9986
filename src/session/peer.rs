//! One upgraded connection: its socket, its write gate and the little state the keepalive
//! tick and the forwarding path need. Kept small: every idle connection holds one.

use crate::runtime::chunk::Chunk;
use crate::runtime::socket::Socket;
use crate::ws::close::encode_close_frame;
use crate::ws::frame::{encode_header, MAX_CONTROL_PAYLOAD};
use crate::ws::{CloseCode, OpCode};
use local_sync::semaphore::Semaphore;
use std::cell::Cell;
use std::net::IpAddr;

pub struct Peer {
    pub id: u64,
    pub role: Box<str>,
    pub events: bool,
    pub sock: Socket,
    /// The client's address, counted in the per-IP limits while this peer lives.
    pub ip: IpAddr,
    /// One writer at a time, so frames from the forwarding path, pongs, pings and events
    /// never interleave on the wire.
    gate: Semaphore,
    /// A data message to this peer is partly written: no other data frame (an event) may go
    /// out until it ends.
    data_open: Cell<bool>,
    pub last_recv_ms: Cell<u64>,
    pub last_ping_ms: Cell<u64>,
    /// Set when the relay sent its close frame; the peer has `close_timeout` to answer.
    pub closing_since_ms: Cell<Option<u64>>,
    /// The code the relay closed this peer with, reported to the other peer.
    pub close_code: Cell<Option<u16>>,
    /// A write is in progress: `Some(UNSTAMPED)` until the keepalive tick first sees it and
    /// stamps its time, so the forwarding path never reads a clock for this. The tick drops a
    /// peer whose write has waited longer than `limits.write_timeout`.
    pub write_since_ms: Cell<Option<u64>>,
}

fn io_err(r: std::io::Result<usize>) -> std::io::Result<usize> {
    match r {
        Ok(0) => Err(std::io::ErrorKind::WriteZero.into()),
        other => other,
    }
}

impl Peer {
    pub fn new(
        id: u64,
        role: Box<str>,
        events: bool,
        sock: Socket,
        ip: IpAddr,
        now_ms: u64,
    ) -> Peer {
        Peer {
            id,
            role,
            events,
            sock,
            ip,
            gate: Semaphore::new(1),
            data_open: Cell::new(false),
            last_recv_ms: Cell::new(now_ms),
            last_ping_ms: Cell::new(now_ms),
            closing_since_ms: Cell::new(None),
            close_code: Cell::new(None),
            write_since_ms: Cell::new(None),
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing_since_ms.get().is_some()
    }

    /// Writes every segment of `chunk`, then records whether a message is left open.
    pub async fn send_chunk(
        &self,
        mut chunk: Chunk,
        open_after: bool,
    ) -> (std::io::Result<()>, Chunk) {
        let Ok(_permit) = self.gate.acquire().await else {
            return (Err(std::io::ErrorKind::BrokenPipe.into()), chunk);
        };
        // The relay may have started closing this peer while the writer waited for the gate:
        // nothing may follow its close frame.
        if self.is_closing() {
            return (Err(std::io::ErrorKind::BrokenPipe.into()), chunk);
        }
        chunk.prepare_write();
        let _timer = WriteTimer::start(self);
        while !chunk.done() {
            let (r, c) = self.sock.writev(chunk).await;
            chunk = c;
            match io_err(r) {
                Ok(n) => chunk.advance(n),
                Err(e) => return (Err(e), chunk),
            }
        }
        self.data_open.set(open_after);
        (Ok(()), chunk)
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

    /// Sends a text frame with an event, unless a forwarded message is half written (the
    /// only case is a peer about to be closed with 4004, where the event is moot).
    pub async fn send_event(&self, json: String) -> std::io::Result<()> {
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        if self.data_open.get() || self.is_closing() {
            return Ok(());
        }
        self.write_locked(event_frame(&json)).await
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
            if !self.data_open.get() {
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
        self.closing_since_ms.set(Some(now_ms));
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

/// `write_since_ms` of a write the keepalive tick has not seen yet.
pub const UNSTAMPED: u64 = u64::MAX;

/// Marks a write as pending for the keepalive tick's write timeout while it lives.
struct WriteTimer<'a>(&'a Peer);

impl<'a> WriteTimer<'a> {
    fn start(peer: &'a Peer) -> WriteTimer<'a> {
        peer.write_since_ms.set(Some(UNSTAMPED));
        WriteTimer(peer)
    }
}

impl Drop for WriteTimer<'_> {
    fn drop(&mut self) {
        self.0.write_since_ms.set(None);
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
