//! Hosting conventions (issue 24, item 5): `PORT`, as Render, Railway, Heroku and most
//! container platforms set it, puts the public listener on all addresses at that port; a
//! flag, `RINGRELAY_LISTEN` or the file still wins. Against the real binary, both drivers.
//!
//! Before: `PORT` was ignored, so on such a platform the relay listened on 127.0.0.1:8080,
//! which the platform's router cannot reach, and the deploy failed its health check.

mod common;
use common::cluster::free_port;
use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A relay this test started; killed when dropped, so a failed assertion leaves no relay
/// running behind the test.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringrelay serve` without `--listen`, with `env`; returns the child and the public
/// address from its "listening" line.
fn serve(driver: &str, env: &[(&str, &str)], args: &[&str]) -> (Relay, SocketAddr) {
    try_serve(driver, env, args).expect("server did not start")
}

/// Starts the relay on `PORT` = a free port, trying another one when that port was taken
/// between `free_port` and the relay's bind (another test's ephemeral port): the relay then
/// exits at once, which is not what these tests are about.
fn serve_on_free_port(driver: &str) -> (Relay, SocketAddr, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some((child, addr)) = try_serve(driver, &[("PORT", &port.to_string())], &[]) {
            return (child, addr, port);
        }
    }
    panic!("no free port could be bound in 5 tries");
}

fn try_serve(driver: &str, env: &[(&str, &str)], args: &[&str]) -> Option<(Relay, SocketAddr)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    cmd.args(["serve", "--admin-listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--driver", driver])
        .args(args)
        .env_remove("PORT")
        .env_remove("RINGRELAY_LISTEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Relay(cmd.spawn().expect("spawn ringrelay"));
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listen=") {
                let addr = line[at + 7..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(addr) => Some((child, addr.parse().unwrap())),
        Err(_) => None,
    }
}

fn port_puts_the_listener_on_every_address(driver: &str) {
    let (child, addr, port) = serve_on_free_port(driver);
    assert_eq!(addr, SocketAddr::from(([0, 0, 0, 0], port)));
    // Reached through loopback, one of "all addresses"; and it serves.
    let (status, _, body) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/health");
    assert_eq!(status, 200, "{body}");
    let relay = format!("ws://127.0.0.1:{port}/v1/relay/hosting");
    let (mut a, mut b) = (connect(&relay), connect(&relay));
    a.send(tungstenite::Message::text("through PORT")).unwrap();
    assert_eq!(recv_text(&mut b), "through PORT");
    drop(child);
}

fn listen_from_env_or_flag_wins_over_port(driver: &str) {
    let port = free_port();
    let p = port.to_string();
    let env = [("PORT", p.as_str()), ("RINGRELAY_LISTEN", "127.0.0.1:0")];
    let (child, addr) = serve(driver, &env, &[]);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), port);
    drop(child);
    let (child, addr) = serve(driver, &[("PORT", &p)], &["--listen", "127.0.0.1:0"]);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), port);
    drop(child);
}

fn a_bad_port_is_a_config_error(_driver: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["serve", "--print-config"])
        .env_remove("RINGRELAY_LISTEN")
        .env("PORT", "http")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT") && err.contains("listen"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["serve", "--print-config"])
        .env_remove("RINGRELAY_LISTEN")
        .env("PORT", "10000")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("listen = \"0.0.0.0:10000\""), "{printed}");
}

both_drivers!(
    port_puts_the_listener_on_every_address,
    listen_from_env_or_flag_wins_over_port,
    a_bad_port_is_a_config_error,
);
