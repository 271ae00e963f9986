//! The agent's reader of the relay's frames (`agent::inbound::Inbound`), fed the same stream
//! at two read sizes the input chooses and once in one read.
//!
//! What is checked, besides "never panics":
//! * all three runs give the same events and end the same way (the same error, or none);
//! * a message is at most the limit, or is flagged oversized and holds at most
//!   `KEPT_OF_OVERSIZED` bytes;
//! * after each read's events, at most a cut header or control frame stays buffered.
//!
//! Input layout: 1 byte read size A, 1 byte read size B, 1 byte message limit, then the
//! relay's bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::agent::inbound::{Inbound, WsEvent, KEPT_OF_OVERSIZED};

/// A cut header (14 bytes at most) or a whole control frame (2 + 8 + 125) fits in this.
const MAX_LEFT: usize = 140;

fn run(stream: &[u8], read: usize, limit: usize) -> (Vec<WsEvent>, Option<String>) {
    let mut r = Inbound::new(limit, &[]);
    let mut events = Vec::new();
    for piece in stream.chunks(read) {
        r.extend(piece);
        loop {
            match r.next_event() {
                Ok(Some(e)) => {
                    if let WsEvent::Message { data, oversized, .. } = &e {
                        let bound = if *oversized { KEPT_OF_OVERSIZED } else { limit };
                        assert!(data.len() <= bound, "{} > {bound}", data.len());
                    }
                    events.push(e);
                }
                Ok(None) => break,
                Err(e) => return (events, Some(e.to_string())),
            }
        }
        r.compact();
        assert!(r.buffered() < MAX_LEFT, "{} bytes left", r.buffered());
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let [a, b, limit, stream @ ..] = data else {
        return;
    };
    let limit = usize::from(*limit) * 4;
    let whole = run(stream, stream.len().max(1), limit);
    assert_eq!(run(stream, usize::from(*a).max(1), limit), whole);
    assert_eq!(run(stream, usize::from(*b).max(1), limit), whole);
});
