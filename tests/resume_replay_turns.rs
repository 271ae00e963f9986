//! A measurement, not a pass/fail test (ignored; run it with
//! `cargo test --test resume_replay_turns -- --ignored --nocapture --test-threads 1`): how
//! long another session on the same worker waits while a 59 MB replay is set up and written.
//!
//! One worker; session `big` sends 900 messages of 64 KiB to b (resume on, 64 MiB window),
//! b reconnects with `resume=0` and reads the whole replay again; meanwhile a control pair on
//! the same worker exchanges one message each way in a loop. It prints the replay's time,
//! the control rounds made during it and the slowest ones (with the replay's progress).
//!
//! What it showed (debug build, this 2-core machine under load, 3 alternated runs each,
//! docs/durability.md "Large replays"): the slowest control round was the one during the
//! resume's setup, 529-770 ms before `Replay::after` stopped copying the window twice
//! (and growing the copy by reallocation), 116-231 ms after; during the writing itself
//! the control pair made thousands of rounds (every batch write yields on io_uring, and
//! on epoll once the receiver's socket buffer fills).

mod common;
use common::stuck::{control_pair, exchange};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

const MSG: usize = 64 << 10;
const COUNT: usize = 900;

fn replay_with_control(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            (
                "RINGRELAY_SESSION_REPLAY_BYTES",
                &(64usize << 20).to_string(),
            ),
            (
                "RINGRELAY_LIMITS_MAX_MESSAGE_BYTES",
                &(1usize << 20).to_string(),
            ),
        ],
    );
    let (mut ca, mut cb) = control_pair(&srv, "control", Duration::from_secs(20));
    let mut b = srv.connect("/v1/relay/big?role=b&resume=0");
    let mut a = srv.connect("/v1/relay/big?role=a");
    let payload = vec![7u8; MSG];
    let sender = std::thread::spawn(move || {
        for _ in 0..COUNT {
            a.send(Message::binary(payload.clone())).unwrap();
        }
        a
    });
    for _ in 0..COUNT {
        match recv(&mut b) {
            Message::Binary(_) => {}
            m => panic!("{m:?}"),
        }
    }
    let _a = sender.join().unwrap();
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    let done = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let (d2, g2) = (done.clone(), got.clone());
    let addr = srv.addr;
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut b = connect(&format!("ws://{addr}/v1/relay/big?role=b&resume=0"));
        for i in 0..COUNT {
            match recv(&mut b) {
                Message::Binary(_) => {}
                m => panic!("{m:?}"),
            }
            g2.store(i as u64 + 1, Ordering::SeqCst);
        }
        d2.store(true, Ordering::SeqCst);
        t0.elapsed()
    });
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    let mut seen = vec![];
    while !done.load(Ordering::SeqCst) {
        let before = got.load(Ordering::SeqCst);
        let took = exchange(&mut ca, &mut cb, rounds).unwrap();
        let after = got.load(Ordering::SeqCst);
        seen.push((before, after, took.as_millis()));
        worst = worst.max(took);
        rounds += 1;
    }
    let replay = reader.join().unwrap();
    let slow: Vec<_> = seen.iter().enumerate().filter(|(_, s)| s.2 > 50).collect();
    eprintln!(
        "{driver}: replay {replay:?}, {rounds} control rounds during it, worst {worst:?}, slow {slow:?}"
    );
}

mod io_uring {
    #[test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    fn replay_with_control() {
        super::replay_with_control("io_uring")
    }
}

mod epoll {
    #[test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    fn replay_with_control() {
        super::replay_with_control("epoll")
    }
}
