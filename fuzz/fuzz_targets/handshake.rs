//! The request head path: `parse_head` over arbitrary bytes, whole and in two pieces, then
//! `route` and `check_upgrade` (and the answers they build) on whatever head comes out.
//!
//! Input layout: 1 byte for `max_bytes`, 1 byte for `max_headers` (both within the ranges the
//! configuration accepts), 2 bytes placing the cut, then the bytes the client sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::http::route::{route, valid_role, valid_session_id, Route};
use ringrelay::http::upgrade::check_upgrade;
use ringrelay::http::{parse_head, HeadError, HeadScan, RequestHead};

type Parsed = Result<Option<(RequestHead, usize)>, HeadError>;

fn exercise(head: &RequestHead, n: usize, len: usize) {
    assert!(n <= len, "head length {n} past the {len} bytes given");
    assert!(head.version <= 1, "HTTP/1.{} accepted", head.version);
    assert!(
        !head.path.contains('?'),
        "query left in the path {:?}",
        head.path
    );
    for (name, _) in &head.headers {
        assert_eq!(
            name.to_ascii_lowercase(),
            *name,
            "header name not lower-cased"
        );
    }
    for key in ["role", "events", "token", ""] {
        let _ = head.query_param(key);
    }
    match route(head) {
        Ok(Route::Relay(t)) => {
            assert!(
                valid_session_id(&t.session),
                "relay route with invalid session {:?}",
                t.session
            );
            if let Some(r) = &t.role {
                assert!(valid_role(r), "relay route with invalid role {r:?}");
            }
        }
        Ok(Route::Bridge { session }) => assert!(
            valid_session_id(&session),
            "bridge with invalid session {session:?}"
        ),
        Ok(_) => {}
        Err(e) => assert_eq!(e.status, 400),
    }
    match check_upgrade(head) {
        Ok(key) => {
            assert_eq!(head.method, "GET");
            let accept = ringrelay::ws::accept::accept_key(key.as_bytes());
            let resp = ringrelay::http::Response::switching_protocols(&accept);
            assert_eq!(resp.status, 101);
            let _ = resp.to_bytes();
        }
        Err(resp) => {
            assert!(resp.status >= 400, "refusal with status {}", resp.status);
            let _ = resp.to_bytes();
        }
    }
}

/// The server finds the end of the head with `HeadScan` as bytes arrive and parses only the
/// head it found. Fed in two pieces the scan must answer as it would at once, and a head it
/// finds must parse to exactly that length (or be refused; never to a different length).
fn scan_agrees(data: &[u8], cut: usize, max_bytes: usize, max_headers: usize) {
    let mut once = HeadScan::default();
    let whole = once.feed(data, max_bytes, max_headers);
    let mut twice = HeadScan::default();
    let pieces = match twice.feed(&data[..cut], max_bytes, max_headers) {
        Ok(None) => twice.feed(data, max_bytes, max_headers),
        decided => {
            // Decided on a prefix: the whole must say the same, except that "too large" may
            // be noticed earlier on a longer buffer.
            match (&decided, &whole) {
                (Err(HeadError::TooLarge), Err(_)) => {}
                _ => assert_eq!(decided, whole, "scan of a prefix decided differently"),
            }
            return;
        }
    };
    assert_eq!(pieces, whole, "scan in two pieces differs from one pass");
    if let Ok(Some(n)) = whole {
        assert!(n <= data.len() && n <= max_bytes);
        assert!(data[..n].ends_with(b"\n\n") || data[..n].ends_with(b"\n\r\n"));
        if let Ok(Some((_, m))) = parse_head(&data[..n], max_bytes, max_headers) {
            assert_eq!(m, n, "the scan and the parser disagree on where the head ends");
        }
    }
}

fn check(parsed: &Parsed, len: usize) {
    if let Ok(Some((head, n))) = parsed {
        exercise(head, *n, len);
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    let max_bytes = 256 + input[0] as usize * 32;
    let max_headers = 8 + (input[1] % 64) as usize;
    let data = &input[4..];
    let cut = u16::from_be_bytes([input[2], input[3]]) as usize * data.len() / 65535;

    let whole: Parsed = parse_head(data, max_bytes, max_headers);
    let first: Parsed = parse_head(&data[..cut], max_bytes, max_headers);
    check(&whole, data.len());
    check(&first, cut);

    // A reader that got the first piece alone stops at a definite answer and otherwise reads
    // on: whatever it ends with must be what the whole would have given at once.
    match (&first, &whole) {
        (Ok(None), _) => {}
        (Ok(Some(_)), w) => assert_eq!(w, &first, "complete head changed by the bytes after it"),
        // Past `max_bytes` the reader refuses before seeing the rest; any refusal will do then,
        // since a head longer than the limit cannot complete within it.
        (Err(HeadError::TooLarge), w) => assert!(
            w.is_err(),
            "refused as too large at {cut} bytes, but whole gives {w:?}"
        ),
        (Err(_), w) => assert_eq!(w, &first, "refusal at {cut} bytes differs from the whole"),
    }
    scan_agrees(data, cut, max_bytes, max_headers);

    // And the other way round: when the whole is a head of n bytes, every shorter prefix is
    // still undecided (or over the limit).
    if let Ok(Some((_, n))) = &whole {
        if cut < *n {
            assert!(
                matches!(first, Ok(None))
                    || (matches!(first, Err(HeadError::TooLarge)) && cut >= max_bytes),
                "prefix of {cut} of a {n}-byte head gives {first:?}"
            );
        }
    }
});
