//! The agent's reader of the relay's frames, without I/O. Unlike the relay, the agent needs
//! whole messages (a request is one JSON document), so data frames are gathered into one
//! message, up to a limit; a control frame is taken once it is whole (at most 125 bytes).
//! Payload is consumed as it arrives, so what stays in the read buffer is at most a header
//! or a control frame that a read cut.

use crate::ws::client::ProtocolError;
use crate::ws::frame::{parse_header, OpCode, Sender};

/// Of a message over the limit, this much of its start is kept: enough to read the request
/// id that follows `"type"`, so the request can still be answered.
pub const KEPT_OF_OVERSIZED: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A whole data message. `oversized` means it was longer than the limit and `data` holds
    /// only its first [`KEPT_OF_OVERSIZED`] bytes.
    Message {
        text: bool,
        data: Vec<u8>,
        oversized: bool,
    },
    Ping(Vec<u8>),
    Pong,
    /// The relay's close and its code (`None` when it gave none).
    Close(Option<u16>),
}

/// Where the reader is inside a data frame's payload.
#[derive(Debug, Clone, Copy)]
struct DataFrame {
    left: u64,
    fin: bool,
}

#[derive(Debug)]
pub struct Inbound {
    /// Bytes read and not consumed start at `pos`.
    pub(super) buf: Vec<u8>,
    pos: usize,
    max_message: usize,
    frame: Option<DataFrame>,
    in_message: bool,
    text: bool,
    message: Vec<u8>,
    oversized: bool,
}

impl Inbound {
    /// A reader that keeps messages of up to `max_message` bytes; `start` is what followed
    /// the upgrade answer in the same read.
    pub fn new(max_message: usize, start: &[u8]) -> Inbound {
        Inbound {
            buf: start.to_vec(),
            pos: 0,
            max_message,
            frame: None,
            in_message: false,
            text: false,
            message: Vec::new(),
            oversized: false,
        }
    }

    /// Adds bytes as a read would (tests and the fuzz target; the agent reads into `buf`).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes read and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drops consumed bytes, so the next read appends after what is left (a cut header or
    /// control frame, under 140 bytes).
    pub fn compact(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
    }

    fn take_payload(&mut self, n: usize) {
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        if !self.oversized && self.message.len() + n <= self.max_message {
            self.message.extend_from_slice(bytes);
            return;
        }
        // Whatever the reads were, an oversized message keeps exactly its first
        // `KEPT_OF_OVERSIZED` bytes (or all of it, when shorter): the limit may be below that.
        self.oversized = true;
        let room = KEPT_OF_OVERSIZED.saturating_sub(self.message.len());
        self.message.extend_from_slice(&bytes[..room.min(n)]);
        self.message.truncate(KEPT_OF_OVERSIZED);
    }

    /// The next whole event in what has been read, or `None` until more bytes come.
    pub fn next_event(&mut self) -> Result<Option<WsEvent>, ProtocolError> {
        loop {
            if let Some(f) = self.frame {
                let n = f.left.min((self.buf.len() - self.pos) as u64);
                self.take_payload(n as usize);
                let left = f.left - n;
                if left > 0 {
                    self.frame = Some(DataFrame { left, ..f });
                    return Ok(None);
                }
                self.frame = None;
                if f.fin {
                    self.in_message = false;
                    return Ok(Some(WsEvent::Message {
                        text: self.text,
                        data: std::mem::take(&mut self.message),
                        oversized: std::mem::take(&mut self.oversized),
                    }));
                }
                continue;
            }
            let avail = &self.buf[self.pos..];
            let Some(h) = parse_header(avail, Sender::Server)? else {
                return Ok(None);
            };
            match h.opcode {
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    match (h.opcode, self.in_message) {
                        (OpCode::Continuation, false) => {
                            return Err(ProtocolError::StrayContinuation)
                        }
                        (OpCode::Continuation, true) => {}
                        (_, true) => return Err(ProtocolError::Interleaved),
                        (op, false) => {
                            self.in_message = true;
                            self.text = op == OpCode::Text;
                        }
                    }
                    self.pos += h.header_len;
                    self.frame = Some(DataFrame {
                        left: h.payload_len,
                        fin: h.fin,
                    });
                }
                op => {
                    // Control payloads are at most 125 bytes (the header parser checks):
                    // wait until the whole frame is here, then take it at once.
                    let end = h.header_len + h.payload_len as usize;
                    if avail.len() < end {
                        return Ok(None);
                    }
                    let payload = avail[h.header_len..end].to_vec();
                    self.pos += end;
                    return Ok(Some(match op {
                        OpCode::Ping => WsEvent::Ping(payload),
                        OpCode::Pong => WsEvent::Pong,
                        _ => WsEvent::Close(
                            (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]])),
                        ),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode_header, MAX_HEADER_LEN};

    fn frame(out: &mut Vec<u8>, fin: bool, op: OpCode, payload: &[u8]) {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut hdr, fin, op, payload.len() as u64, None);
        out.extend_from_slice(&hdr[..n]);
        out.extend_from_slice(payload);
    }

    /// A stream with a fragmented text message and a ping between its frames, a binary
    /// message, an oversized one and a close.
    fn stream() -> (Vec<u8>, Vec<WsEvent>) {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = Vec::new();
        frame(&mut s, false, OpCode::Text, b"{\"type\":");
        frame(&mut s, true, OpCode::Ping, b"p1");
        frame(&mut s, true, OpCode::Continuation, b"\"http_request\"}");
        frame(&mut s, true, OpCode::Binary, &big[..1000]);
        frame(&mut s, false, OpCode::Binary, &big[..40_000]);
        frame(&mut s, true, OpCode::Continuation, &big[40_000..]);
        frame(&mut s, true, OpCode::Pong, b"");
        frame(&mut s, true, OpCode::Close, &[0x03, 0xe9, b'b', b'y']);
        let want = vec![
            WsEvent::Ping(b"p1".to_vec()),
            WsEvent::Message {
                text: true,
                data: b"{\"type\":\"http_request\"}".to_vec(),
                oversized: false,
            },
            WsEvent::Message {
                text: false,
                data: big[..1000].to_vec(),
                oversized: false,
            },
            WsEvent::Message {
                text: false,
                data: big[..KEPT_OF_OVERSIZED].to_vec(),
                oversized: true,
            },
            WsEvent::Pong,
            WsEvent::Close(Some(1001)),
        ];
        (s, want)
    }

    fn read_in_pieces(s: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<WsEvent> {
        let mut r = Inbound::new(65_536, &[]);
        let mut got = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let n = sizes().max(1).min(s.len() - at);
            r.extend(&s[at..at + n]);
            at += n;
            while let Some(e) = r.next_event().unwrap() {
                got.push(e);
            }
            r.compact();
            assert!(r.buffered() < 140, "{} bytes kept", r.buffered());
        }
        got
    }

    #[test]
    fn messages_come_out_whole_at_any_read_boundary() {
        let (s, want) = stream();
        assert_eq!(read_in_pieces(&s, &mut || s.len()), want);
        for size in [1, 2, 3, 7, 13, 125, 4096] {
            assert_eq!(read_in_pieces(&s, &mut || size), want, "reads of {size}");
        }
        let mut rng = crate::ws::client::Rng::new(3);
        for _ in 0..50 {
            let got = read_in_pieces(&s, &mut || (rng.next_u64() % 300) as usize);
            assert_eq!(got, want);
        }
    }

    /// Found by the fuzz target: with a limit under `KEPT_OF_OVERSIZED`, what an oversized
    /// message kept depended on where the reads cut it.
    #[test]
    fn an_oversized_message_keeps_the_same_start_however_it_is_read() {
        let payload: Vec<u8> = (0..200u8).collect();
        let mut s = Vec::new();
        frame(&mut s, true, OpCode::Binary, &payload);
        let want = vec![WsEvent::Message {
            text: false,
            data: payload.clone(),
            oversized: true,
        }];
        for size in [1, 7, 40, 41, 200, 202] {
            let mut r = Inbound::new(40, &[]);
            let mut got = Vec::new();
            for piece in s.chunks(size) {
                r.extend(piece);
                while let Some(e) = r.next_event().unwrap() {
                    got.push(e);
                }
                r.compact();
            }
            assert_eq!(got, want, "reads of {size}");
        }
    }

    #[test]
    fn violations_are_refused() {
        let mut s = Vec::new();
        frame(&mut s, true, OpCode::Continuation, b"x");
        let mut r = Inbound::new(10, &s);
        assert_eq!(r.next_event(), Err(ProtocolError::StrayContinuation));
        let mut s = Vec::new();
        frame(&mut s, false, OpCode::Text, b"x");
        frame(&mut s, true, OpCode::Text, b"y");
        let mut r = Inbound::new(10, &s);
        assert_eq!(r.next_event(), Err(ProtocolError::Interleaved));
        // A masked frame from the relay breaks RFC 6455 section 5.1.
        let mut r = Inbound::new(10, &[0x81, 0x81, 1, 2, 3, 4, 5]);
        assert!(matches!(r.next_event(), Err(ProtocolError::Header(_))));
    }
}
