//! Connection churn (issue 17): a pair connects, sends one message each way and closes, again
//! and again, against the real binary on both I/O drivers. Each connection must end with the
//! close answer and then the end of the stream, with nothing left open on the relay, while a
//! pair of another session keeps flowing beside.
//!
//! Before: the relay shut every socket with `shutdown(2)` when its task ended and then
//! dropped it, which closed it again: one syscall per connection for nothing when the task
//! held the only reference. Now the drop alone closes it then, and the shutdown is kept for
//! a connection something else still holds. If a reference outlived the task (the case the
//! shutdown used to cover), the client would see no end of stream here and the open
//! connection would still count in /health.

mod common;
use common::*;
use std::io::Read;

/// Closes `raw` with 1000 and checks the relay answers 1000 and then ends the stream (a read
/// of 0 bytes: a timeout would fail the `unwrap`).
fn close_and_see_the_end(raw: &mut Raw) {
    raw.send(&frame(true, 8, &1000u16.to_be_bytes()));
    assert_eq!(raw.close_code(), Some(1000));
    let mut rest = [0u8; 16];
    let n = raw
        .s
        .read(&mut rest)
        .expect("the end of the stream, not a timeout");
    assert_eq!(
        n, 0,
        "nothing after the close answer but the end of the stream"
    );
}

fn data(raw: &mut Raw) -> Vec<u8> {
    loop {
        let (fin, op, payload) = raw.frame().expect("a frame");
        if op == 2 {
            assert!(fin);
            return payload;
        }
    }
}

fn cycles_end_each_connection_and_leave_nothing_open(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0"),
            ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "0"),
        ],
    );
    // The control pair: open through every cycle.
    let mut c = Raw::upgrade(srv.addr, "/v1/relay/control");
    let mut d = Raw::upgrade(srv.addr, "/v1/relay/control");
    for i in 0..30u8 {
        let path = format!("/v1/relay/churn{i}");
        let mut a = Raw::upgrade(srv.addr, &path);
        let mut b = Raw::upgrade(srv.addr, &path);
        a.send(&frame(true, 2, &[i, 1]));
        b.send(&frame(true, 2, &[i, 2]));
        assert_eq!(data(&mut b), [i, 1]);
        assert_eq!(data(&mut a), [i, 2]);
        close_and_see_the_end(&mut a);
        close_and_see_the_end(&mut b);
        c.send(&frame(true, 2, &[i]));
        assert_eq!(data(&mut d), [i], "the control pair flows beside the churn");
    }
    // Only the control pair is left open (the counts fall as each task ends).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (_, _, body) = get(srv.admin, "/health");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["active_connections"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still open: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    close_and_see_the_end(&mut c);
    close_and_see_the_end(&mut d);
}

both_drivers!(cycles_end_each_connection_and_leave_nothing_open);
