//! The PROXY protocol header parser (`limits::proxy_protocol::parse`), fed every prefix of
//! arbitrary bytes, as the relay feeds it what it has read so far.
//!
//! What is checked, besides "never panics":
//! * the answer only firms up as bytes arrive: once a prefix is a whole header or an error,
//!   every longer prefix gets the same answer, and a header never takes more bytes than it
//!   was given;
//! * "read more" is bounded: no prefix of `MAX_HEADER_BYTES` bytes or more is `Partial`;
//! * a header that names a TCP client, written back out as v2 in front of the same bytes,
//!   parses to the same client.
//!
//! Input layout: the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::limits::proxy_protocol::{encode_v2, parse, Parsed, MAX_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut firm = None;
    for k in 0..=data.len() {
        let now = parse(&data[..k]);
        match (&firm, now) {
            (Some(before), now) => assert_eq!(*before, now, "changed at {k}"),
            (None, Ok(Parsed::Partial)) => {
                assert!(k < MAX_HEADER_BYTES, "still partial after {k} bytes")
            }
            (None, now) => {
                if let Ok(Parsed::Done { len, .. }) = now {
                    assert!(len <= k, "a header of {len} bytes out of {k}");
                }
                firm = Some(now);
            }
        }
    }
    if let Some(Ok(Parsed::Done {
        len,
        source: Some(source),
    })) = firm
    {
        let dest = "127.0.0.1:8080".parse().unwrap();
        let mut again = encode_v2(source, dest, &[]);
        let header = again.len();
        again.extend_from_slice(&data[len..]);
        let want = Parsed::Done {
            len: header,
            source: Some(source),
        };
        assert_eq!(parse(&again), Ok(want));
    }
});
