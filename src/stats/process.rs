//! The standard `process_*` metrics, read from /proc/self as Prometheus' own clients do. The
//! parsers are pure; `read` does the file I/O and is called off the workers (a scrape runs it
//! on a short-lived thread: listing /proc/self/fd of a relay with 100,000 connections takes
//! milliseconds that no worker should stall for).

use std::fmt::Write;

/// Clock ticks per second of the times in /proc/PID/stat: USER_HZ, which the kernel fixes at
/// 100 in its user-space ABI on every architecture Linux runs this relay on.
const USER_HZ: f64 = 100.0;

/// What the process figures are at one moment; `None` where a file could not be read (under
/// systemd's `ProcSubset=pid`, /proc/stat is hidden, so the start time comes from elsewhere).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

/// The fields of /proc/self/stat after the command name, which may hold spaces and ')'.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// utime + stime in seconds, and the start time in seconds since boot (fields 14, 15, 22).
pub fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let f = stat_fields(stat)?;
    // The first field after the name is field 3 (state).
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let cpu = (field(14)? + field(15)?) as f64 / USER_HZ;
    let started = field(22)? as f64 / USER_HZ;
    Some((cpu, started))
}

/// `VmRSS`, `VmSize` (bytes) and `Threads` from /proc/self/status.
pub fn parse_status(status: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let find = |key: &str| {
        status.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix(':')?;
            v.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    (
        find("VmRSS").map(|kb| kb * 1024),
        find("VmSize").map(|kb| kb * 1024),
        find("Threads"),
    )
}

/// The soft limit on open files from /proc/self/limits ("unlimited" is left out).
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time in Unix seconds from /proc/stat's `btime` line.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Reads the figures now. `started_unix`: the wall-clock time the relay started, used for
/// the start time when /proc/stat (the boot time) cannot be read.
pub fn read(started_unix: f64) -> Process {
    let text = |p: &str| std::fs::read_to_string(p).ok();
    let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
    let (resident_bytes, virtual_bytes, threads) =
        text("/proc/self/status").map_or((None, None, None), |s| parse_status(&s));
    let boot = text("/proc/stat").and_then(|s| parse_btime(&s));
    let start_time_seconds = match (stat, boot) {
        (Some((_, since_boot)), Some(boot)) => Some(boot as f64 + since_boot),
        _ => Some(started_unix),
    };
    Process {
        cpu_seconds: stat.map(|(cpu, _)| cpu),
        resident_bytes,
        virtual_bytes,
        // The listing's own descriptor is among those counted, as in Prometheus' clients.
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: text("/proc/self/limits").and_then(|s| parse_max_fds(&s)),
        start_time_seconds,
        threads,
    }
}

/// Writes the families that have a value, under their standard names and help texts.
pub fn write(out: &mut String, p: &Process) {
    let float = |v: Option<f64>| v.map(|v| v.to_string());
    let int = |v: Option<u64>| v.map(|v| v.to_string());
    let lines = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            float(p.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            int(p.resident_bytes),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            int(p.virtual_bytes),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            int(p.open_fds),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (the soft limit).",
            int(p.max_fds),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            float(p.start_time_seconds),
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            int(p.threads),
        ),
    ];
    for (name, kind, help, value) in lines {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_after_the_name_even_with_spaces_and_parens_in_it() {
        // Fields 14/15 (utime/stime) = 250/50 ticks, field 22 (starttime) = 12345 ticks.
        let stat = "4242 (ring relay) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    6 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((3.0, 123.45)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_btime() {
        let status = "Name:\tringrelay\nVmSize:\t  204800 kB\nVmRSS:\t    8192 kB\nThreads:\t5\n";
        assert_eq!(
            parse_status(status),
            (Some(8192 * 1024), Some(204800 * 1024), Some(5))
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(20000));
        assert_eq!(
            parse_max_fds("Max open files  unlimited  unlimited  files"),
            None
        );
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_and_writes_every_family() {
        let p = read(0.0);
        assert!(p.cpu_seconds.is_some() && p.resident_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3 && p.max_fds.unwrap() >= p.open_fds.unwrap());
        let mut out = String::new();
        write(&mut out, &p);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(out.contains(&format!("\n{name} ")), "{name} in {out}");
        }
    }
}
