//! CPU time and resident memory of processes and threads, from `/proc` (Linux).

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of `/proc/<path>/stat` (`path` is `<pid>` or `<pid>/task/<tid>`).
fn cpu_of_stat(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

/// CPU time a process used so far (all its threads, living ones and those that ended).
pub(crate) fn cpu(pid: u32) -> Option<Duration> {
    cpu_of_stat(&pid.to_string())
}

/// CPU time of the live threads of `pid` whose name starts with `prefix` (a tokio
/// runtime's `thread_name`).
pub(crate) fn threads_cpu(pid: u32, prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|t| {
            let tid = t.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            if !comm.starts_with(prefix) {
                return None;
            }
            cpu_of_stat(&format!("{pid}/task/{tid}"))
        })
        .sum()
}

/// Resident set size of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The pid of the first process whose command name (`/proc/<pid>/comm`) is `name`.
pub(crate) fn pid_named(name: &str) -> Option<u32> {
    pids_named(name).into_iter().next()
}

/// Every process whose command name is `name` (all nodes of a local Redis Cluster, say).
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            // A zombie (a stopped server not reaped yet) is gone for our purposes.
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                == Some("Z");
            (comm.trim_end() == name && !zombie).then_some(pid)
        })
        .collect()
}

/// The soft limit on open files of this process (`Max open files` of `/proc/self/limits`).
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
