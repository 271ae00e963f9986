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

/// Reload is a binary upgrade, SIGUSR2 to the main process, and the unit stays a notify
/// service (Debian 12's systemd, 252, does not know `Type=notify-reload`, 253) that hears
/// the new main process's MAINPID= and READY=1.
#[test]
fn unit_reload_upgrades_the_binary() {
    assert_eq!(values("Type"), ["notify"]);
    assert_eq!(values("ExecReload"), ["/bin/kill -USR2 $MAINPID"]);
    assert_eq!(values("NotifyAccess"), ["all"]);
}

/// A watchdog the relay pings (server::watchdog), restarted when it stops: long enough that a
/// tick (at most 1 s) late on a loaded host does not trip it, short enough to matter.
#[test]
fn unit_has_a_watchdog_that_restarts() {
    let wd = values("WatchdogSec");
    assert_eq!(wd.len(), 1, "WatchdogSec: {wd:?}");
    let secs: u64 = wd[0].strip_suffix('s').unwrap_or(wd[0]).parse().unwrap();
    assert!((10..=300).contains(&secs), "WatchdogSec={secs}");
    assert!(["on-failure", "on-watchdog", "always"].contains(&values("Restart")[0]));
}

#[test]
fn unit_bounds_memory_and_tasks() {
    // A percentage of the host's RAM, or bytes with an optional K/M/G/T suffix; never
    // "infinity", which would be no bound at all.
    let memory = values("MemoryMax");
    assert_eq!(memory.len(), 1, "MemoryMax: {memory:?}");
    let m = memory[0];
    let ok = match m.strip_suffix('%') {
        Some(p) => p.parse::<u32>().is_ok_and(|p| (10..=95).contains(&p)),
        None => m
            .trim_end_matches(['K', 'M', 'G', 'T'])
            .parse::<u64>()
            .is_ok_and(|n| n > 0),
    };
    assert!(ok, "MemoryMax={m}");
    // One thread per worker plus the main, signal and cluster threads: room for a host of a
    // few hundred cores, not unbounded.
    let tasks = values("TasksMax");
    assert!(
        tasks.len() == 1
            && tasks[0]
                .parse::<u32>()
                .is_ok_and(|n| (256..=65536).contains(&n)),
        "TasksMax: {tasks:?}"
    );
}

/// The commented suggestions in the unit, as lines an operator would uncomment.
fn suggested(prefix: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn every_secret_is_suggested_as_a_credential() {
    // Under DynamicUser= no file can belong to the service, so a secret in a file the relay
    // reads directly would have to be world-readable. Before: nothing in the unit for the
    // cluster secret, and docs/cluster.md suggested secret_file = "/etc/ringrelay/cluster-secret".
    let creds = suggested("LoadCredential=");
    let envs = suggested("Environment=");
    for (name, var) in [
        ("jwt", "RINGRELAY_AUTH_JWT_SECRET_FILE"),
        ("cluster", "RINGRELAY_CLUSTER_SECRET_FILE"),
    ] {
        assert!(
            creds
                .iter()
                .any(|c| c.starts_with(&format!("LoadCredential={name}:/"))),
            "no LoadCredential={name}: in {creds:?}"
        );
        assert!(
            envs.contains(&format!("Environment={var}=%d/{name}").as_str()),
            "no Environment={var}=%d/{name} in {envs:?}"
        );
    }
    // A Redis password comes from a file only root reads, never the world-readable config.
    assert_eq!(suggested("EnvironmentFile=").len(), 1, "{UNIT}");
    // The docs give the same lines.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["docs/systemd.md", "docs/cluster.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for line in [
            "LoadCredential=cluster:/etc/ringrelay/cluster.secret",
            "Environment=RINGRELAY_CLUSTER_SECRET_FILE=%d/cluster",
        ] {
            assert!(text.contains(line), "{doc} lacks {line}");
        }
        assert!(
            !text.contains("secret_file = \"/etc/"),
            "{doc} suggests a plain secret file"
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
        Self::with(test, UNIT.to_string())
    }

    /// The unit with every suggested credential and environment line uncommented.
    fn with_suggestions(test: &str) -> Self {
        let text: Vec<String> = UNIT
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(s)
                    if s.starts_with("LoadCredential=")
                        || s.starts_with("EnvironmentFile=")
                        || (s.starts_with("Environment=RINGRELAY_") && s.contains("=%d/")) =>
                {
                    s.to_string()
                }
                _ => l.to_string(),
            })
            .collect();
        let text = text.join("\n") + "\n";
        assert!(text.contains("\nLoadCredential=cluster:"), "{text}");
        Self::with(test, text)
    }

    fn with(test: &str, unit: String) -> Self {
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
            unit.replacen(exec, &patched, 1),
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
    verify_is_silent(&TempUnit::new("verify"));
}

#[test]
fn systemd_analyze_verify_is_silent_with_the_suggested_secrets() {
    verify_is_silent(&TempUnit::with_suggestions("verify-secrets"));
}

fn verify_is_silent(unit: &TempUnit) {
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
