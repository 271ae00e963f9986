//! The operator's command line against the real binary: shell completions and man pages
//! generated from the clap definitions, every serve flag naming its `RINGRELAY_*` variable in
//! `--help`, and `ringrelay load --fail-on-loss` gating on lost, repeated or reordered
//! messages (exit status 3) while a clean run through the relay passes.

mod common;

use common::TestServer;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    c.env_remove("RUST_LOG");
    c
}

fn stdout_of(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run ringrelay");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Before: `ringrelay completions` did not exist (clap answered "unrecognized subcommand",
/// exit 2). Each script must know the subcommands and a flag of a subcommand, so it was
/// generated from the real definitions rather than written by hand.
#[test]
fn completions_for_bash_zsh_and_fish_know_the_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        // Fish spells a long flag `-l fail-on-loss`, the others `--fail-on-loss`.
        for word in [
            "serve",
            "load",
            "token",
            "agent",
            "fail-on-loss",
            "admin-listen",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bad = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// Before: no `ringrelay man`. The page is roff with the name, the serve flags and the
/// variables that set them; `--out-dir` writes one page per subcommand, which is what the
/// Debian package ships.
#[test]
fn man_prints_ringrelay_1_and_writes_a_page_per_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(
        page.contains(".TH ringrelay 1"),
        "not a roff man page: {page}"
    );
    assert!(page.contains("RINGRELAY_LISTEN"), "{page}");
    assert!(page.contains("\\-\\-admin\\-listen"), "{page}");

    let dir = std::env::temp_dir().join(format!("rr-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    stdout_of(&["man", "--out-dir", dir.to_str().unwrap()]);
    for name in [
        "ringrelay",
        "ringrelay-serve",
        "ringrelay-load",
        "ringrelay-token",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(text.contains(&format!(".TH {name} 1")), "{name}.1");
    }
    let load = std::fs::read_to_string(dir.join("ringrelay-load.1")).unwrap();
    assert!(load.contains("fail\\-on\\-loss"), "{load}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before: `--help` named only RINGRELAY_CONFIG. Every serve flag that sets a config key now
/// shows the variable that sets the same key (the name the config layer reads:
/// RINGRELAY_ + the key in capitals), on both `ringrelay --help` and `ringrelay serve --help`.
#[test]
fn help_names_the_variable_of_every_serve_flag() {
    let flags = [
        ("--config", "RINGRELAY_CONFIG"),
        ("--listen", "RINGRELAY_LISTEN"),
        ("--admin-listen", "RINGRELAY_ADMIN_LISTEN"),
        ("--workers", "RINGRELAY_WORKERS"),
        ("--driver", "RINGRELAY_DRIVER"),
    ];
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let help = bin()
            .args(args)
            .env_remove("RINGRELAY_LISTEN")
            .output()
            .unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        for (flag, var) in flags {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{flag} missing from {args:?}: {help}"));
            assert!(line.contains(&format!("[env: {var}")), "{flag}: {line}");
        }
    }
}

/// clap reads the variable now too; the value must still reach the config through its
/// environment layer, so an error names the variable (not a flag the user never typed) and
/// a flag still beats the variable.
#[test]
fn a_variable_is_still_reported_as_the_variable_and_a_flag_still_wins() {
    let out = bin()
        .args(["serve", "--print-config"])
        .env("RINGRELAY_DRIVER", "fastest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable RINGRELAY_DRIVER") && !err.contains("flag --driver"),
        "{err}"
    );

    let out = bin()
        .args(["--print-config", "--listen", "127.0.0.1:7001"])
        .env("RINGRELAY_LISTEN", "127.0.0.1:7002")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["listen"].as_str(), Some("127.0.0.1:7001"));
}

/// What the fake forwarder does to the `nth` binary frame of a stream.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    Drop,
    Repeat,
}

/// A plain TCP forwarder for `ringrelay load --raw` (one line naming the session, then
/// WebSocket frames), pairing connections by that line, that drops or repeats the 20th
/// binary frame of each direction: a relay that loses or duplicates a message.
fn faulty_forwarder(fault: Fault) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The first connection of a pair waits here with its reader, whose buffer may already
    // hold frames sent right after the line (raw mode does not wait for an answer).
    type Waiting = HashMap<String, (BufReader<TcpStream>, TcpStream)>;
    let waiting: Arc<Mutex<Waiting>> = Arc::default();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let waiting = waiting.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut waiting = waiting.lock().unwrap();
                match waiting.remove(&line) {
                    None => {
                        waiting.insert(line, (reader, conn));
                    }
                    Some((other_reader, other)) => {
                        drop(waiting);
                        std::thread::spawn(move || copy_frames(other_reader, conn, fault));
                        copy_frames(reader, other, fault);
                    }
                }
            });
        }
    });
    addr
}

/// Copies whole frames from `from` to `to`, applying `fault` to the 20th binary frame.
fn copy_frames(mut from: impl Read, mut to: TcpStream, fault: Fault) {
    let mut binary = 0u32;
    loop {
        let mut frame = vec![0u8; 2];
        if from.read_exact(&mut frame).is_err() {
            break;
        }
        let ext = match frame[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if frame[1] & 0x80 != 0 { 4 } else { 0 };
        frame.resize(2 + ext, 0);
        if from.read_exact(&mut frame[2..]).is_err() {
            break;
        }
        let len = match ext {
            2 => u16::from_be_bytes([frame[2], frame[3]]) as usize,
            8 => u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            _ => (frame[1] & 0x7f) as usize,
        };
        let head = frame.len();
        frame.resize(head + mask + len, 0);
        if from.read_exact(&mut frame[head..]).is_err() {
            break;
        }
        let copies = if frame[0] & 0x0f == 2 {
            binary += 1;
            match (binary, fault) {
                (20, Fault::Drop) => 0,
                (20, Fault::Repeat) => 2,
                _ => 1,
            }
        } else {
            1
        };
        for _ in 0..copies {
            if to.write_all(&frame).is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn load(url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "load",
        "--url",
        url,
        "--pairs",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--json",
        "--fail-on-loss",
    ];
    args.extend_from_slice(extra);
    bin().args(&args).output().expect("run ringrelay load")
}

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON report ({e}): {out:?}"))
}

/// Before: `--fail-on-loss` did not exist, and a run that lost or repeated a message exited
/// 0 with only a larger `errors` figure in its report, so a script could not gate on it.
/// Now a forwarder that drops one message makes the run exit 3 with `order.lost`, one that
/// repeats a message exit 3 with `order.out_of_order`; the same forwarder passing everything,
/// and a real relay on both drivers (the control), exit 0.
#[test]
fn fail_on_loss_exits_3_on_a_lost_or_repeated_message_and_0_when_whole() {
    for fault in [Fault::None, Fault::Drop, Fault::Repeat] {
        let addr = faulty_forwarder(fault);
        let out = load(&format!("ws://{addr}"), &["--raw"]);
        let r = report(&out);
        let order = &r["order"];
        let stderr = String::from_utf8_lossy(&out.stderr);
        match fault {
            Fault::None => {
                assert_eq!(out.status.code(), Some(0), "{r}\n{stderr}");
                assert_eq!(order["lost"], 0, "{r}");
                assert_eq!(order["out_of_order"], 0, "{r}");
                assert_eq!(order["unfinished"], 0, "{r}");
            }
            Fault::Drop => {
                assert_eq!(out.status.code(), Some(3), "{r}\n{stderr}");
                // One message per stream skipped (2 pairs, one stream each).
                assert_eq!(order["lost"], 2, "{r}");
                assert!(stderr.contains("--fail-on-loss: 2 lost"), "{stderr}");
            }
            Fault::Repeat => {
                assert_eq!(out.status.code(), Some(3), "{r}\n{stderr}");
                assert_eq!(order["out_of_order"], 2, "{r}");
                assert_eq!(order["lost"], 0, "{r}");
            }
        }
    }
    for driver in ["io_uring", "epoll"] {
        let server = TestServer::start(driver, 1, &[]);
        let out = load(&format!("ws://{}", server.addr), &["--both-ways"]);
        let r = report(&out);
        assert_eq!(out.status.code(), Some(0), "{driver}: {r}");
        assert!(r["delivered"].as_u64().unwrap() > 0, "{driver}: {r}");
        assert_eq!(r["order"]["lost"], 0, "{driver}: {r}");
    }
}

/// `--fail-on-loss` has nothing to check in `--mode http` (no sequence numbers): refused
/// up front rather than silently passing.
#[test]
fn fail_on_loss_is_refused_in_http_mode() {
    let out = bin()
        .args([
            "load",
            "--mode",
            "http",
            "--url",
            "http://127.0.0.1:9/",
            "--fail-on-loss",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fail-on-loss"));
}
