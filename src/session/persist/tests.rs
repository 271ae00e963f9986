use super::*;
use crate::ws::frame::{test_server_frame as frame, OpCode};

const ROOMY: RestoreLimits = RestoreLimits {
    core_budget: usize::MAX,
    replay_bytes: usize::MAX,
    buffering: true,
};

/// A registry with one session keeping three messages from "a" (one a replay put back in
/// front) and a replay window for "b", and one session that keeps nothing.
fn registry() -> Registry {
    let reg = Registry::default();
    let s = reg.session("s1", 0);
    let mut b = Backlog::new("a");
    for i in 0..3u8 {
        b.push_frame(&frame(true, OpCode::Binary, &[i; 10]));
    }
    b.push_frame(&frame(false, OpCode::Text, b"still arriving"));
    let replayed = frame(true, OpCode::Text, b"replayed");
    b.prepend_replay(replayed.clone(), &[replayed.len()]);
    s.backlogs.borrow_mut().push(b);
    let mut r = Replay::new("b");
    for i in 0..5u8 {
        r.keep_frame(&frame(true, OpCode::Text, &[b'0' + i]), "a", 1, 1 << 20);
    }
    r.accepted = 9;
    s.replays.borrow_mut().push(r);
    s.resume_on.set(true);
    s.was_paired.set(true);
    reg.session("empty", 0);
    reg
}

#[test]
fn a_snapshot_holds_whole_kept_messages_and_windows_only() {
    let snap = snapshot(&registry());
    assert_eq!(snap.len(), 1, "a session keeping nothing is not written");
    let s = &snap[0];
    assert_eq!(
        s.backlogs[0].messages.len(),
        3,
        "no replay, no part of a message"
    );
    assert_eq!(
        s.backlogs[0].messages[0],
        frame(true, OpCode::Binary, &[0; 10])
    );
    let r = &s.replays[0];
    assert_eq!((r.numbered, r.accepted, r.window.len()), (5, 9, 5));
}

#[test]
fn a_restored_core_holds_what_was_snapshot_charged_and_lingering() {
    let snap = snapshot(&registry());
    let reg = Registry::default();
    let done = restore(&reg, snap.clone(), 42, ROOMY);
    assert_eq!((done.sessions, done.messages), (1, 8));
    assert_eq!(snapshot(&reg), snap, "a second stop would write the same");
    let s = reg.get("s1").unwrap();
    assert_eq!(s.lingering_since_ms.get(), Some(42));
    assert!(s.resume_on.get() && s.was_paired.get() && s.is_empty());
    let (bytes, _, _) = s.kept();
    assert_eq!(reg.budget.used(), bytes + s.replay_bytes());
    let r = &s.replays.borrow()[0];
    assert_eq!((r.first_kept(), r.told), (1, 9));
}

#[test]
fn a_restore_keeps_within_the_limits_that_bound_memory() {
    let snap = snapshot(&registry());
    // The budget is short of the session's bytes: it is left out whole, never half.
    let reg = Registry::default();
    let tight = RestoreLimits {
        core_budget: 40,
        ..ROOMY
    };
    let done = restore(&reg, snap.clone(), 0, tight);
    assert_eq!(
        (
            done.sessions,
            done.sessions_left_out,
            done.messages_left_out
        ),
        (0, 1, 8)
    );
    assert!(reg.get("s1").is_none() && reg.budget.used() == 0);
    // Windows shrink to `replay_bytes`, oldest first; with buffering off no backlog comes back.
    let reg = Registry::default();
    let small = RestoreLimits {
        replay_bytes: 6,
        buffering: false,
        ..ROOMY
    };
    let done = restore(&reg, snap, 0, small);
    assert_eq!((done.messages, done.messages_left_out), (2, 6));
    let s = reg.get("s1").unwrap();
    assert!(s.backlogs.borrow().is_empty());
    assert_eq!(s.replays.borrow()[0].first_kept(), 4);
}
