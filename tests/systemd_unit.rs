//! Keeps `systemd/ringrelay.service` honest: the hardening directives the docs promise are
//! there, `systemd-analyze verify` has nothing to say about the unit, and the exposure score of
//! `systemd-analyze security` does not get worse than the one quoted in docs/systemd.md.
//! The checks that need systemd-analyze are skipped, with a message, where it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../systemd/ringrelay.service");

/// Overall exposure measured with systemd 252 (`systemd-analyze security --offline=yes`), in
/// tenths. See docs/systemd.md; lower it when the unit gets better, never raise it silently.
const MAX_EXPOSURE_TENTHS: u32 = 12;

/// The unit's `Key=value` lines, in order, without comments and blank lines.
fn directives() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn values(key: &str) -> Vec<&'static str> {
    directives()
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn unit_has_the_hardening_directives() {
    let filters = values("SystemCallFilter");
    let allow = filters.first().expect("SystemCallFilter= is set");
    assert!(
        !allow.starts_with('~'),
        "the first filter must be an allow list: {allow}"
    );
    for call in [
        "@system-service",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(
            allow.split_whitespace().any(|w| w == call),
            "{call} missing in {allow}"
        );
    }
    // Workers pin themselves to a core, so sched_setaffinity must still be allowed once every
    // line is applied in order (a later line adds to or, with ~, takes from the list).
    let mut affinity = false;
    for filter in &filters {
        let deny = filter.starts_with('~');
        let mut names = filter.trim_start_matches('~').split_whitespace();
        if names.any(|w| ["sched_setaffinity", "@resources", "@system-service"].contains(&w)) {
            affinity = !deny;
        }
    }
    assert!(affinity, "sched_setaffinity must stay allowed: {filters:?}");
    assert_eq!(values("SystemCallErrorNumber"), ["EPERM"]);
    assert_eq!(
        values("CapabilityBoundingSet"),
        [""],
        "no capabilities by default"
    );
    assert_eq!(values("AmbientCapabilities"), [""]);
    let families = values("RestrictAddressFamilies");
    assert_eq!(families.len(), 1, "{families:?}");
    let mut families: Vec<_> = families[0].split_whitespace().collect();
    families.sort_unstable();
    assert_eq!(families, ["AF_INET", "AF_INET6", "AF_UNIX"]);
    assert_eq!(values("MemoryDenyWriteExecute"), ["yes"]);
    assert_eq!(values("NoNewPrivileges"), ["yes"]);
    let nofile = values("LimitNOFILE");
    assert!(
        nofile.len() == 1 && nofile[0].parse::<u64>().is_ok_and(|n| n >= 65536),
        "LimitNOFILE: {nofile:?}"
    );
    for forbidden in ["PrivateNetwork", "IPAddressDeny"] {
        assert!(
            values(forbidden).is_empty(),
            "{forbidden}= would cut the relay off"
        );
    }
}

/// A temporary directory holding a copy of the unit whose ExecStart is the binary under test.
struct TempUnit {
    dir: PathBuf,
}

impl TempUnit {
    /// `test` keeps the directories of tests running in parallel apart.
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rr-systemd-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exec = UNIT
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("ExecStart= is set");
        let program = exec["ExecStart=".len()..]
            .split_whitespace()
            .next()
            .unwrap();
        let bin = env!("CARGO_BIN_EXE_ringrelay");
        assert!(
            !bin.contains(char::is_whitespace),
            "binary path has a space: {bin}"
        );
        let patched = exec.replacen(program, bin, 1);
        std::fs::write(
            dir.join("ringrelay.service"),
            UNIT.replacen(exec, &patched, 1),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("ringrelay.service")
    }
}

impl Drop for TempUnit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `systemd-analyze ARGS UNIT`, or returns None (after saying so) if it is not installed.
fn analyze(args: &[&str], unit: &Path) -> Option<Output> {
    match Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: systemd-analyze is not installed");
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_analyze_verify_is_silent() {
    let unit = TempUnit::new("verify");
    let Some(out) = analyze(&["verify"], &unit.path()) else {
        return;
    };
    let all = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{all}"
    );
    // verify exits 0 even for unknown keys or values it cannot parse ("path:line: Unknown
    // key ..., ignoring."), so any line about the unit counts as a failure.
    let about_unit: Vec<_> = all
        .lines()
        .filter(|l| l.contains("ringrelay.service") || l.contains("Unknown"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{all}");
}

#[test]
fn systemd_analyze_security_exposure_does_not_regress() {
    let unit = TempUnit::new("security");
    let Some(out) = analyze(&["security", "--offline=yes", "--no-pager"], &unit.path()) else {
        return;
    };
    let all = text(&out);
    if !out.status.success() && all.contains("offline") {
        eprintln!("skipped: this systemd-analyze has no --offline (systemd < 250):\n{all}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze security failed:\n{all}"
    );
    let line = all
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{all}"));
    let score = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("cannot parse: {line}"));
    let (units, tenths) = score
        .split_once('.')
        .unwrap_or_else(|| panic!("cannot parse: {line}"));
    let tenths: u32 = units.parse::<u32>().unwrap() * 10 + tenths.parse::<u32>().unwrap();
    assert!(
        tenths <= MAX_EXPOSURE_TENTHS,
        "exposure got worse: {line} (at most {}.{} allowed)\n{all}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );
}
