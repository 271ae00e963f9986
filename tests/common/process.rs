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
