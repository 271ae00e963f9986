//! Where a carried connection's owner-to-client byte stream is, so the carrying node can end
//! it with a close frame of its own (1012 when the owner is gone, 1001 when this node stops)
//! without re-framing anything. It reads frame headers as they pass and skips payloads; the
//! bytes themselves are forwarded untouched.

/// The response head (`HTTP/1.1 101` and the rest up to the blank line), then frames.
#[derive(Debug, Clone)]
enum State {
    Head {
        /// The first bytes of the status line, to see whether it is a 101.
        start: [u8; 12],
        got: usize,
        /// The last four bytes seen, to find `\r\n\r\n`.
        tail: [u8; 4],
    },
    /// Inside frames: `header[..have]` is a header still arriving, `left` payload bytes of
    /// the current frame are still to come.
    Frames {
        header: [u8; 14],
        have: usize,
        left: u64,
    },
    /// Not a WebSocket (a refusal, a bridged HTTP answer): nothing can be added to it.
    Http,
}

#[derive(Debug, Clone)]
pub struct Boundary {
    state: State,
    /// A close frame has passed: the owner ended the connection itself.
    closed: bool,
}

impl Default for Boundary {
    fn default() -> Self {
        Boundary {
            state: State::Head {
                start: [0; 12],
                got: 0,
                tail: [0; 4],
            },
            closed: false,
        }
    }
}

/// A header's full length once its first two bytes are known.
fn header_len(b0_b1: [u8; 2]) -> usize {
    let ext = match b0_b1[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b0_b1[1] & 0x80 != 0 { 4 } else { 0 }
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u16::from_be_bytes([h[2], h[3]]) as u64,
        127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
        n => n as u64,
    }
}

impl Boundary {
    /// Follows `bytes`, the next ones forwarded to the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Http => return,
                State::Head { start, got, tail } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if *got < start.len() {
                        start[*got] = b;
                        *got += 1;
                    }
                    tail.rotate_left(1);
                    tail[3] = b;
                    if tail == b"\r\n\r\n" {
                        self.state = if &start[..] == b"HTTP/1.1 101" {
                            State::Frames {
                                header: [0; 14],
                                have: 0,
                                left: 0,
                            }
                        } else {
                            State::Http
                        };
                    }
                }
                State::Frames { header, have, left } => {
                    if *left > 0 {
                        let n = (*left).min(bytes.len() as u64);
                        *left -= n;
                        bytes = &bytes[n as usize..];
                        continue;
                    }
                    header[*have] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have >= 2 && *have == header_len([header[0], header[1]]) {
                        if header[0] & 0x0f == 0x8 {
                            self.closed = true;
                        }
                        *left = payload_len(&header[..*have]);
                        *have = 0;
                    }
                }
            }
        }
    }

    /// A close frame of the relay's own may be written now: the client has a whole
    /// WebSocket stream so far and the owner has not closed it already.
    pub fn can_close(&self) -> bool {
        !self.closed
            && matches!(
                self.state,
                State::Frames {
                    have: 0,
                    left: 0,
                    ..
                }
            )
    }

    /// The owner sent a close frame.
    pub fn owner_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::encode_header;
    use crate::ws::OpCode;

    fn frame(op: OpCode, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; 14];
        let n = encode_header(&mut v, true, op, len as u64, None);
        v.truncate(n);
        v.resize(n + len, b'x');
        v
    }

    fn stream() -> (Vec<u8>, Vec<usize>) {
        let mut s = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let mut ends = vec![s.len()];
        for len in [0, 5, 125, 126, 300, 70_000] {
            s.extend(frame(OpCode::Binary, len));
            ends.push(s.len());
        }
        (s, ends)
    }

    #[test]
    fn knows_the_frame_ends_whatever_the_reads() {
        let (s, ends) = stream();
        for step in [1, 2, 3, 7, 13, 1000, s.len()] {
            let mut b = Boundary::default();
            let mut at = 0;
            while at < s.len() {
                let n = step.min(s.len() - at);
                b.feed(&s[at..at + n]);
                at += n;
                assert_eq!(b.can_close(), ends.contains(&at), "step {step} at {at}");
            }
        }
    }

    #[test]
    fn a_refusal_or_an_owner_close_is_never_added_to() {
        let mut b = Boundary::default();
        b.feed(b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}");
        assert!(!b.can_close());
        let (mut s, _) = stream();
        s.extend(frame(OpCode::Close, 2));
        let mut b = Boundary::default();
        b.feed(&s);
        assert!(b.owner_closed() && !b.can_close());
    }
}
