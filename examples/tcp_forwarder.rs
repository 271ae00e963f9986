//! The copying forwarder of `benches/e2e.rs` as a process of its own, to be pinned to a core
//! and measured with `ringrelay load --raw` beside a relay (issue 17's large-message
//! comparison; docs/performance.md):
//!
//!   cargo build --release --example tcp_forwarder
//!   taskset -c 0 target/release/examples/tcp_forwarder 127.0.0.1:18400
//!   taskset -c 1 target/release/ringrelay load --raw --url ws://127.0.0.1:18400 --size 65536 ...
//!
//! Prints `listening on ADDR` once bound (port 0 picks a free one), then serves until killed.

#[path = "../benches/support/forwarder.rs"]
mod forwarder;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener =
        std::net::TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", listener.local_addr().expect("addr"));
    forwarder::serve(listener);
}
