//! Following a relay's chain of processes through binary upgrades (tests/upgrade*.rs): each
//! upgrade's new process is started by the old one, which then exits.

use std::time::{Duration, Instant};

/// Orphans (an old process's new process, once the old one exits) come back to this test
/// process, so each one's exit status can be read and none outlives the test.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and changes only which
    // process adopts this one's orphaned descendants.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// The exit status of a descendant `pid`, waiting up to `within`.
pub fn exit_code(pid: u32, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a pid this process spawned or adopted as subreaper, with
        // WNOHANG: it only reaps that process.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a relay process this test started (or one it started).
    unsafe { libc::kill(pid as i32, sig) };
}

/// A relay and the processes that follow it through SIGUSR2 upgrades, known by the pid that
/// `/health` names: started as a child of the test, each later one a child of the one before
/// (adopted by the test once that one exits: [`become_subreaper`]).
pub struct Chain {
    first: Option<std::process::Child>,
    /// The first process's listening line (`super::listening_addr` reads its addresses).
    pub line: String,
    /// The public listener (`listen`), which every process of the chain keeps.
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The process serving now.
    pub pid: u32,
}

impl Chain {
    /// Starts `cmd` (which must name an admin listener) and waits for its listening line.
    pub fn spawn(cmd: &mut std::process::Command) -> Chain {
        let (child, log, line) = super::spawn_listening(cmd);
        let pid = child.id();
        Chain {
            addr: super::listening_addr(&line, "listen"),
            admin: super::listening_addr(&line, "admin"),
            first: Some(child),
            line,
            log,
            pid,
        }
    }

    /// The address the listening line gives for `name` (`tls`, `internal`, ...).
    pub fn listener(&self, name: &str) -> std::net::SocketAddr {
        super::listening_addr(&self.line, name)
    }

    /// An admin document; tried again for up to 5 s when the admin port does not answer
    /// (seen now and then right after an upgrade).
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = try_get(self.admin, path) {
                return v;
            }
            assert!(Instant::now() < deadline, "{path} unanswered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGUSR2, then waits for /health to name another pid; returns the old pid's exit code.
    /// A poll that finds the admin port unanswered mid-upgrade is tried again.
    pub fn upgrade(&mut self) -> Option<i32> {
        let old = self.pid;
        kill(old, libc::SIGUSR2);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pid = try_get(self.admin, "/health")
                .and_then(|h| h["pid"].as_u64())
                .map_or(old, |p| p as u32);
            if pid != old {
                self.pid = pid;
                break;
            }
            assert!(Instant::now() < deadline, "no new process: {:?}", self.log);
            std::thread::sleep(Duration::from_millis(20));
        }
        exit_code(old, Duration::from_secs(10))
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        kill(self.pid, libc::SIGKILL);
        let _ = exit_code(self.pid, Duration::from_secs(5));
        if let Some(mut c) = self.first.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An admin JSON document, or `None` when the admin port did not answer it.
pub fn try_get(admin: std::net::SocketAddr, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}
