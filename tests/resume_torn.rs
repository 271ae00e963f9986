//! The cause of test_resume.py's hang (issue 24), made deterministic, on both drivers: a
//! sender whose connection is replaced while part of its message sits at the receiver, and
//! whose successor writes before the old connection is read again.
//!
//! A raw client that is cut mid-frame reconnects at once. Its new connection takes the
//! role's seat, and the old one is only found dead when its task next reads (EOF) or its
//! close times out. The receiver was closed with 4004 (it holds part of a message that will
//! never end) only from there. When the successor's first write got to the receiver first,
//! it went out as a new message inside the open one: the receiver's stream was broken (the
//! Python client saw "frame 2 inside a message", died, and the sender then cut and
//! reconnected forever against a backlog that nobody drained: the hang).
//!
//! Now the write itself, holding the receiver's write gate, finds a message open that is not
//! its writer's: nothing is written, the receiver is closed with 4004 and resumes, and gets
//! the successor's message from its replay window, once.

mod common;
use common::stuck::{control_pair, keeps_flowing};
use common::*;
use std::time::Duration;

/// The next frame that is not an event or a ping: (fin, opcode, payload).
fn next_data_or_close(r: &mut Raw) -> (bool, u8, Vec<u8>) {
    loop {
        let f = r.frame().expect("connection ended without a close frame");
        if f.1 != 1 && f.1 != 9 && f.1 != 10 {
            return f;
        }
    }
}

fn the_successor_s_first_write_closes_a_receiver_left_with_part_of_a_message(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    // Another session on the same (only) worker, flowing before and after.
    let (mut ca, mut cb) = control_pair(&srv, "control", Duration::from_secs(5));
    keeps_flowing(&mut ca, &mut cb, 2, Duration::from_secs(5));

    let mut b = Raw::upgrade(srv.addr, "/v1/relay/torn?role=b&events=1&resume=0");
    assert_eq!(next_event(&mut b)["type"], "connected");
    let (mut a, _) = join_sender(&srv, "torn");
    a.send(&frame(true, 2, b"one"));
    assert_eq!(next_data_or_close(&mut b), (true, 2, b"one".to_vec()));
    // Part of a message: forwarded to b at once, as a frame that does not end it.
    a.send(&frame(false, 2, b"first part of two, "));
    assert_eq!(
        next_data_or_close(&mut b),
        (false, 2, b"first part of two, ".to_vec())
    );
    // The client thinks its connection dead and opens another; the old one stays open and
    // silent, so nothing reads it again (the cut test's race, without the timing).
    let (mut a2, connected) = join_sender(&srv, "torn");
    assert_eq!(connected["acked"], 1, "{connected}");
    // It resends the message whole, as two-way resume says.
    a2.send(&frame(true, 2, b"first part of two, second part"));
    // Before: b got (true, 2, "first part of two, second part") here, a new message inside
    // the one it held part of. Now: 4004, and nothing else.
    assert_eq!(
        next_data_or_close(&mut b),
        (
            true,
            8,
            [&4004u16.to_be_bytes()[..], b"peer left mid-message"].concat()
        )
    );
    assert_eq!(counter(&srv, "receivers_closed_torn"), 1);
    // b resumes after the one message it got whole: the resent one comes once, from the
    // replay window, then the live stream.
    let mut b = Raw::upgrade(srv.addr, "/v1/relay/torn?role=b&events=1&resume=1");
    let e = next_event(&mut b);
    assert_eq!(e["next_seq"], 2, "{e}");
    assert_eq!(
        next_data_or_close(&mut b),
        (true, 2, b"first part of two, second part".to_vec())
    );
    a2.send(&frame(true, 2, b"three"));
    assert_eq!(next_data_or_close(&mut b), (true, 2, b"three".to_vec()));
    let (_, connected) = join_sender(&srv, "torn");
    assert_eq!(connected["acked"], 3, "{connected}");
    drop(a);
    keeps_flowing(&mut ca, &mut cb, 2, Duration::from_secs(5));
    assert!(!srv.log_contains("panicked"), "the relay panicked");
}

both_drivers!(the_successor_s_first_write_closes_a_receiver_left_with_part_of_a_message,);
