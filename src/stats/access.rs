//! The access log (`log.access`, docs/observability.md "Access log"): one line per finished
//! connection, per refusal and per bridged request, never one per message.
//!
//! Each worker owns its own [`AccessLog`] (inside its `CoreStats`): it formats its lines into
//! a buffer of its own and writes them with its own descriptor, so no lock or atomic is
//! shared on the way. Lines of two workers stay whole because each `write(2)` carries whole
//! lines only and at most [`PIPE_BUF`] bytes: a file is opened `O_APPEND` (the kernel places
//! each write at the end, as a unit), and a pipe keeps writes of up to `PIPE_BUF` bytes
//! whole. The buffer is written when the next line would not fit in it, and on the worker's
//! tick (`flush`), so a line is out within one tick.
//!
//! What a connection is (client address, route, session, role, TLS version) is noted on its
//! stream in the HTTP phase ([`Note`]) and goes with it into its peer ([`Tally`], which also
//! counts its messages and bytes once per read, not per message). Nothing secret is ever
//! noted: the path is kept without its query string, and no header is.

use super::counters::{bump, CloseReason, CoreStats};
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The most one write carries: what Linux keeps whole on a pipe (`PIPE_BUF`), so lines from
/// two workers never interleave, on stderr or in a file.
pub const PIPE_BUF: usize = 4096;

/// The longest path a line quotes; longer ones are cut (at a character boundary) and end in
/// `...`. With the other fields bounded too (session 128, role 32 bytes), a line stays far
/// below [`PIPE_BUF`].
const MAX_PATH: usize = 256;

/// Bumped by SIGUSR1 (`request_reopen`): each worker reopens its file when it sees a new
/// value, at its next write or tick. Process-wide like the signal; read once per write of a
/// buffer, never per message.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every worker to reopen its access-log file (SIGUSR1, after logrotate renamed it).
pub fn request_reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// Where a worker's lines go (`log.access` other than `off`).
#[derive(Debug, Clone, Copy)]
pub enum Dest<'a> {
    Stderr,
    File(&'a Path),
}

/// Whether the file `log.access` names can be opened: checked at start so a bad path stops
/// the relay with an error naming the key rather than leaving it without its log.
pub fn check(path: &Path) -> Result<(), String> {
    open_file(path)
        .map(drop)
        .map_err(|e| format!("log.access: cannot open {}: {e}", path.display()))
}

fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// stderr for the access log: a description of its own, made non-blocking when stderr is a
/// pipe or a file (reopened through /proc), so a reader that stalls costs dropped lines, not
/// a stalled worker; a socket (journald) cannot be reopened and is written as the main log
/// writes it.
fn open_stderr() -> std::io::Result<File> {
    let own = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/2");
    match own {
        Ok(f) => Ok(f),
        Err(_) => {
            use std::os::fd::AsFd;
            Ok(File::from(std::io::stderr().as_fd().try_clone_to_owned()?))
        }
    }
}

/// One worker's access log: off, or its sink.
#[derive(Default)]
pub struct AccessLog {
    sink: Option<Box<Sink>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sink.is_some() { "on" } else { "off" })
    }
}

struct Sink {
    json: bool,
    /// The file to reopen on SIGUSR1 (`None`: stderr).
    path: Option<PathBuf>,
    file: RefCell<File>,
    /// Whole lines not yet written; never more than [`PIPE_BUF`] bytes.
    buf: RefCell<Vec<u8>>,
    /// The [`REOPEN`] value this worker's file was opened at.
    opened_at: Cell<u64>,
}

impl AccessLog {
    /// A log to `dest` (`None`: off), JSON lines or text; off when it cannot be opened
    /// (`check` refused that at start).
    pub fn open(dest: Option<Dest<'_>>, json: bool) -> AccessLog {
        let file = match dest {
            None => return AccessLog::default(),
            Some(Dest::Stderr) => open_stderr(),
            Some(Dest::File(path)) => open_file(path),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, ?dest, "cannot open log.access");
                return AccessLog::default();
            }
        };
        let path = match dest {
            Some(Dest::File(p)) => Some(p.to_path_buf()),
            _ => None,
        };
        AccessLog {
            sink: Some(Box::new(Sink {
                json,
                path,
                file: RefCell::new(file),
                buf: RefCell::new(Vec::with_capacity(PIPE_BUF)),
                opened_at: Cell::new(REOPEN.load(Ordering::Relaxed)),
            })),
        }
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }
}

/// Writes out what the worker's access log holds (the tick, and the worker's end).
pub fn flush(stats: &CoreStats) {
    if let Some(sink) = &stats.access.sink {
        sink.write_out(stats);
    }
}

impl Sink {
    /// Adds one line (ending in a newline), writing what is held first when it would not fit.
    fn push(&self, stats: &CoreStats, line: &[u8]) {
        if line.len() > PIPE_BUF {
            // Cannot happen with the fields bounded as they are; counted, not split.
            bump(&stats.access_log_dropped, 1);
            return;
        }
        if self.buf.borrow().len() + line.len() > PIPE_BUF {
            self.write_out(stats);
        }
        self.buf.borrow_mut().extend_from_slice(line);
        bump(&stats.access_log_lines, 1);
    }

    /// One write of the held lines. A write that fails or is cut short (disk full, a stderr
    /// pipe nobody drains) loses the lines it did not carry, counted.
    fn write_out(&self, stats: &CoreStats) {
        self.reopen_if_asked();
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let lines = buf.iter().filter(|&&b| b == b'\n').count();
        let written = self.file.borrow_mut().write(&buf);
        let lost = match written {
            Ok(n) if n == buf.len() => 0,
            // The lines the write reached the end of are out; the rest is lost.
            Ok(n) => lines - buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(_) => lines,
        };
        bump(&stats.access_log_dropped, lost as u64);
        buf.clear();
    }

    fn reopen_if_asked(&self) {
        let now = REOPEN.load(Ordering::Relaxed);
        if now == self.opened_at.get() {
            return;
        }
        self.opened_at.set(now);
        let Some(path) = &self.path else {
            return;
        };
        match open_file(path) {
            Ok(f) => *self.file.borrow_mut() = f,
            // The old file (renamed or not) keeps the lines meanwhile.
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot reopen log.access")
            }
        }
    }
}

/// What the HTTP phase learned of a connection, kept on its stream and then in its peer.
#[derive(Debug, Clone)]
pub struct Note {
    pub accepted_at: Instant,
    /// The client's address as resolved through trusted proxies (the direct peer's until
    /// the request head names another).
    pub client: IpAddr,
    /// The direct peer when it is not the client: the trusted proxy.
    pub proxy: Option<IpAddr>,
    pub method: Box<str>,
    /// The request's path, without its query string (which may hold a token or key).
    pub path: Box<str>,
    /// `relay`, `desktop`, `mobile`, `echo`, `bridge`, ... (`none` for no route).
    pub route: &'static str,
    pub session: Option<Box<str>>,
    pub role: Option<Box<str>>,
    /// `1.2` or `1.3` over TLS.
    pub tls: Option<&'static str>,
    /// The contract's error code of the answer ringrelay gave itself to the current request
    /// on a proxy route (`no_upstream`, `bad_gateway`, ...), for its `proxy` line.
    pub error: Option<Box<str>>,
}

impl Note {
    pub fn new(accepted_at: Instant, peer: IpAddr) -> Note {
        Note {
            accepted_at,
            client: peer,
            proxy: None,
            method: "".into(),
            path: "".into(),
            route: "",
            session: None,
            role: None,
            tls: None,
            error: None,
        }
    }

    /// The client named by a trusted proxy (its header, or a PROXY header).
    pub fn set_client(&mut self, client: IpAddr) {
        if client != self.client {
            self.proxy.get_or_insert(self.client);
            self.client = client;
        }
    }

    /// The request line: its path kept without the query string.
    pub fn set_request(&mut self, method: &str, path: &str) {
        self.method = method.into();
        self.path = cut(path, MAX_PATH).into();
        self.error = None;
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A connection's [`Note`] and its traffic: data messages and their payload bytes, from the
/// client (`in`) and to it (`out`), added once per read or write batch.
#[derive(Debug)]
pub struct Tally {
    pub note: Note,
    msgs_in: Cell<u64>,
    bytes_in: Cell<u64>,
    msgs_out: Cell<u64>,
    bytes_out: Cell<u64>,
}

impl Tally {
    pub fn new(note: Note) -> Tally {
        Tally {
            note,
            msgs_in: Cell::new(0),
            bytes_in: Cell::new(0),
            msgs_out: Cell::new(0),
            bytes_out: Cell::new(0),
        }
    }

    pub fn add_in(&self, msgs: u64, bytes: u64) {
        bump(&self.msgs_in, msgs);
        bump(&self.bytes_in, bytes);
    }

    pub fn add_out(&self, msgs: u64, bytes: u64) {
        bump(&self.msgs_out, msgs);
        bump(&self.bytes_out, bytes);
    }
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// Its client: a close frame, or the TCP connection dropped.
    Client,
    /// The other peer: it left in the middle of a message to this one (4004).
    Peer,
    /// The relay: a limit, a violation, a replacement, idleness, shutdown.
    Relay,
}

impl Closer {
    fn as_str(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Peer => "peer",
            Closer::Relay => "relay",
        }
    }
}

/// How an upgraded connection ended.
pub struct Ended<'a> {
    pub route: &'static str,
    pub session: Option<&'a str>,
    pub role: &'a str,
    pub code: u16,
    pub by: Closer,
}

/// The line of a finished connection (relay, `/desktop`, `/mobile`, echo, agent link).
pub fn connection(stats: &CoreStats, tally: Option<&Tally>, end: Ended<'_>) {
    let (Some(sink), Some(t)) = (&stats.access.sink, tally) else {
        return;
    };
    let mut line = Line::start(sink.json, "connection", &t.note);
    line.str("route", end.route);
    line.opt("session", end.session);
    line.str("role", end.role);
    line.num("status", 101);
    line.num("code", end.code as u64);
    line.str("closed_by", end.by.as_str());
    line.str("reason", CloseReason::from_code(end.code).label());
    line.duration(t.note.accepted_at);
    line.num("msgs_in", t.msgs_in.get());
    line.num("bytes_in", t.bytes_in.get());
    line.num("msgs_out", t.msgs_out.get());
    line.num("bytes_out", t.bytes_out.get());
    line.opt("tls", t.note.tls);
    sink.push(stats, &line.finish());
}

/// The line of a refusal: `status` and the contract's error `code` (`None` for a timeout).
pub fn refused(stats: &CoreStats, note: Option<&Note>, status: Option<u16>, code: &str) {
    let (Some(sink), Some(n)) = (&stats.access.sink, note) else {
        return;
    };
    let mut line = Line::start(sink.json, "refusal", n);
    line.opt("route", (!n.route.is_empty()).then_some(n.route));
    line.opt("session", n.session.as_deref());
    line.opt("role", n.role.as_deref());
    match status {
        Some(s) => line.num("status", s as u64),
        None => line.str("status", "timeout"),
    }
    line.str("error", code);
    line.duration(n.accepted_at);
    line.opt("tls", n.tls);
    sink.push(stats, &line.finish());
}

/// The line of a bridged request: its status (`None`: its client left before the answer),
/// the request body's bytes in and the response's bytes out.
pub fn bridged(stats: &CoreStats, note: Option<&Note>, status: Option<u16>, bytes: (u64, u64)) {
    let (Some(sink), Some(n)) = (&stats.access.sink, note) else {
        return;
    };
    let mut line = Line::start(sink.json, "bridge", n);
    line.str("route", "bridge");
    line.opt("session", n.session.as_deref());
    match status {
        Some(s) => line.num("status", s as u64),
        None => line.str("status", "client_gone"),
    }
    line.duration(n.accepted_at);
    line.num("bytes_in", bytes.0);
    line.num("bytes_out", bytes.1);
    line.opt("tls", n.tls);
    sink.push(stats, &line.finish());
}

/// What a proxied request's line says beside its note's client, method and path.
pub struct Proxied<'a> {
    pub status: u16,
    /// When its head was read (a kept-alive connection's later request starts its own).
    pub started: Instant,
    /// The route's prefix.
    pub route: &'a str,
    /// The region its upstream was picked for; empty: none.
    pub region: &'a str,
    /// The upstream's URL; `-`: none was reached (a refusal, no upstream).
    pub upstream: &'a str,
    /// Request body bytes sent up, response body bytes sent down.
    pub bytes: (u64, u64),
}

/// The line of a request through a proxy route (`kind` `proxy`): the same fields as its
/// `ringrelay::proxy` log line, one per request, the proxy's own refusals included (with the
/// contract's `error` code, as a `refusal` line carries it).
pub fn proxied(stats: &CoreStats, note: Option<&Note>, p: Proxied<'_>) {
    let (Some(sink), Some(n)) = (&stats.access.sink, note) else {
        return;
    };
    let mut line = Line::start(sink.json, "proxy", n);
    line.str("route", &cut(p.route, MAX_PATH));
    line.num("status", p.status as u64);
    line.opt("error", n.error.as_deref());
    line.duration(p.started);
    line.str("region", p.region);
    line.str("upstream", p.upstream);
    line.num("bytes_in", p.bytes.0);
    line.num("bytes_out", p.bytes.1);
    line.opt("tls", n.tls);
    sink.push(stats, &line.finish());
}

/// One line being written: `{"k":v,...}` or `k=v k=v`, quoted and escaped as each needs.
struct Line {
    json: bool,
    out: Vec<u8>,
}

impl Line {
    fn start(json: bool, kind: &str, note: &Note) -> Line {
        let mut line = Line {
            json,
            out: Vec::with_capacity(384),
        };
        if json {
            line.out.push(b'{');
        }
        line.str("ts", &timestamp(SystemTime::now()));
        line.str("kind", kind);
        line.str("client", &note.client.to_string());
        if let Some(p) = note.proxy {
            line.str("proxy", &p.to_string());
        }
        if !note.method.is_empty() {
            line.str("method", &note.method);
            line.str("path", &note.path);
        }
        line
    }

    fn key(&mut self, k: &str) {
        let first = self.out.len() <= 1;
        match (self.json, first) {
            (true, false) => self.out.push(b','),
            (false, false) => self.out.push(b' '),
            _ => {}
        }
        if self.json {
            self.out.push(b'"');
            self.out.extend_from_slice(k.as_bytes());
            self.out.extend_from_slice(b"\":");
        } else {
            self.out.extend_from_slice(k.as_bytes());
            self.out.push(b'=');
        }
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        if self.json {
            json_string(&mut self.out, v);
        } else {
            text_value(&mut self.out, v);
        }
    }

    fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.extend_from_slice(v.to_string().as_bytes());
    }

    /// `duration_ms`, to the microsecond.
    fn duration(&mut self, since: Instant) {
        let us = since.elapsed().as_micros();
        self.key("duration_ms");
        let text = format!("{}.{:03}", us / 1000, us % 1000);
        self.out.extend_from_slice(text.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        if self.json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
        self.out
    }
}

/// `v` as a JSON string.
fn json_string(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    for c in v.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `v` bare when it is a plain token, else quoted like a JSON string, so a path with spaces
/// or quotes cannot forge another field or line.
fn text_value(out: &mut Vec<u8>, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if plain {
        out.extend_from_slice(v.as_bytes());
    } else {
        json_string(out, v);
    }
}

/// RFC 3339 UTC with milliseconds: `2026-12-07T01:02:03.456Z`.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, public domain).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn note() -> Note {
        let mut n = Note::new(Instant::now(), "10.0.0.1".parse().unwrap());
        n.set_client("2001:db8::7".parse().unwrap());
        n.set_request("GET", "/v1/relay/s1");
        n.route = "relay";
        n.session = Some("s1".into());
        n
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_605_323_456);
        assert_eq!(timestamp(t), "2026-12-07T01:02:03.456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_json_line_is_one_object_with_its_fields() {
        let n = note();
        let mut l = Line::start(true, "refusal", &n);
        l.str("error", "rate \"limited\"\n");
        l.num("status", 429);
        let bytes = l.finish();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["client"], "2001:db8::7");
        assert_eq!(v["proxy"], "10.0.0.1");
        assert_eq!(v["error"], "rate \"limited\"\n");
        assert_eq!(v["status"], 429);
        assert_eq!(v["kind"], "refusal");
    }

    #[test]
    fn a_text_value_cannot_forge_a_field_or_a_line() {
        let mut out = Vec::new();
        text_value(&mut out, "/a b\nkind=x");
        assert_eq!(out, b"\"/a b\\u000akind=x\"");
        out.clear();
        text_value(&mut out, "/v1/relay/s1");
        assert_eq!(out, b"/v1/relay/s1");
        out.clear();
        text_value(&mut out, "");
        assert_eq!(out, b"\"\"");
    }

    #[test]
    fn a_long_path_is_cut_at_a_character_boundary() {
        let mut n = note();
        let long = format!("/{}", "é".repeat(400));
        n.set_request("GET", &long);
        assert!(n.path.len() <= MAX_PATH && n.path.ends_with("..."));
        assert!(long.starts_with(n.path.trim_end_matches("...")));
    }

    #[test]
    fn lines_are_written_whole_and_a_failed_write_is_counted() {
        let dir = std::env::temp_dir().join(format!("rr-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let _ = std::fs::remove_file(&path);
        let stats = CoreStats {
            access: AccessLog::open(Some(Dest::File(&path)), false),
            ..CoreStats::default()
        };
        let t = Tally::new(note());
        t.add_in(3, 30);
        t.add_out(2, 20);
        // Enough lines to fill the buffer several times: each write carries whole lines.
        for _ in 0..100 {
            let end = Ended {
                route: "relay",
                session: Some("s1"),
                role: "a",
                code: 1000,
                by: Closer::Client,
            };
            connection(&stats, Some(&t), end);
            assert!(stats.access.sink.as_ref().unwrap().buf.borrow().len() <= PIPE_BUF);
        }
        flush(&stats);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        for l in lines {
            // Text format (the default): key=value pairs, not JSON.
            assert!(serde_json::from_str::<serde_json::Value>(l).is_err());
            assert!(
                l.contains(" msgs_in=3 bytes_in=30 msgs_out=2 bytes_out=20"),
                "{l}"
            );
            assert!(l.contains(" closed_by=client reason=normal "), "{l}");
        }
        assert_eq!(stats.access_log_lines.get(), 100);
        assert_eq!(stats.access_log_dropped.get(), 0);
        // A sink whose writes fail counts the lines it lost.
        *stats.access.sink.as_ref().unwrap().file.borrow_mut() = File::open(&path).unwrap();
        refused(&stats, Some(&note()), Some(403), "origin_not_allowed");
        flush(&stats);
        assert_eq!(stats.access_log_dropped.get(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
