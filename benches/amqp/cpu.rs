//! CPU time of this process and of the RabbitMQ server, from `/proc` (Linux), to tell where
//! the time of a case goes.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time used so far by this process and by the broker (when found).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    pub(crate) own: Duration,
    pub(crate) broker: Option<Duration>,
}

impl CpuSample {
    pub(crate) fn now() -> Self {
        Self {
            own: cpu_of("self").unwrap_or_default(),
            broker: broker_pid().and_then(|pid| cpu_of(&pid)),
        }
    }

    /// CPU used since `earlier`: (this process, broker).
    pub(crate) fn since(&self, earlier: &CpuSample) -> (Duration, Option<Duration>) {
        let broker = match (self.broker, earlier.broker) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        (self.own.saturating_sub(earlier.own), broker)
    }
}

/// utime + stime of `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

/// The pid of RabbitMQ's Erlang VM on this machine, if any.
fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name().into_string().ok()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("beam") && cmdline.contains("rabbit")).then_some(name)
    })
}
