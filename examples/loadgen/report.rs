//! What a run measured, printed as text and as one Markdown table row.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Outcome;
use crate::driver::broker_name;
use crate::raw::RawRate;
use crate::{Broker, Mode, RunArgs};

/// CPU time used so far (or meanwhile) by each part.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub(crate) gateway: Duration,
    pub(crate) worker: Duration,
    pub(crate) broker: Option<Duration>,
    /// This process: the clients.
    pub(crate) clients: Duration,
}

impl Cpu {
    pub(crate) fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            gateway: self.gateway.saturating_sub(earlier.gateway),
            worker: self.worker.saturating_sub(earlier.worker),
            broker: self
                .broker
                .zip(earlier.broker)
                .map(|(a, b)| a.saturating_sub(b)),
            clients: self.clients.saturating_sub(earlier.clients),
        }
    }
}

pub(crate) struct Report<'a> {
    pub(crate) args: &'a RunArgs,
    pub(crate) run: String,
    pub(crate) message_size: usize,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) raw_before: Option<RawRate>,
    pub(crate) raw_after: Option<RawRate>,
    /// Idle streams opened and the gateway's RSS growth per stream, bytes.
    pub(crate) idle: Option<(usize, f64)>,
    pub(crate) ramp_time: Duration,
    pub(crate) opened: usize,
    pub(crate) rss_before: u64,
    pub(crate) rss_open: u64,
    pub(crate) rss_peak: u64,
    pub(crate) go: Instant,
    pub(crate) done: Instant,
    pub(crate) cpu: Cpu,
    pub(crate) worker_stats: Option<String>,
    pub(crate) outcomes: Vec<Outcome>,
}

/// `p`-th percentile of sorted values.
fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 / p95 / p99 / max in milliseconds.
fn spread(sorted: &[u32]) -> String {
    let ms = |us: u32| f64::from(us) / 1000.0;
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1}",
        ms(pct(sorted, 50.0)),
        ms(pct(sorted, 95.0)),
        ms(pct(sorted, 99.0)),
        ms(sorted.last().copied().unwrap_or(0)),
    )
}

fn stat(line: Option<&str>, name: &str) -> Option<u64> {
    line?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// The commit the run was built from (`git rev-parse --short HEAD` in the working
/// directory; `LOADGEN_COMMIT` wins), or `unknown`.
fn commit() -> String {
    if let Ok(c) = std::env::var("LOADGEN_COMMIT") {
        return c;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Report<'_> {
    pub(crate) fn print(&self) {
        let a = self.args;
        let n = a.streams.max(1);
        let expected = n as u64 * u64::from(a.tokens);
        let tokens: u64 = self.outcomes.iter().map(|o| o.tokens).sum();
        let duplicates: u64 = self.outcomes.iter().map(|o| o.duplicates).sum();
        let lost: u64 = expected.saturating_sub(tokens);
        let incomplete = self
            .outcomes
            .iter()
            .filter(|o| !o.ended || o.tokens != u64::from(a.tokens))
            .count();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for o in &self.outcomes {
            if let Some(e) = &o.error {
                let short: String = e.chars().take(120).collect();
                *errors.entry(short).or_default() += 1;
            }
        }
        let error_count: usize = errors.values().sum();
        let last = self
            .outcomes
            .iter()
            .filter_map(|o| o.last_token)
            .max()
            .unwrap_or(self.done);
        let elapsed = last.saturating_duration_since(self.go);
        let rate = tokens as f64 / elapsed.as_secs_f64().max(1e-9);
        let mut first: Vec<u32> = self.outcomes.iter().filter_map(|o| o.first_us).collect();
        first.sort_unstable();
        let mut every: Vec<u32> = Vec::with_capacity(tokens as usize);
        for o in &self.outcomes {
            every.extend_from_slice(&o.latencies);
        }
        every.sort_unstable();

        let stats = self.worker_stats.as_deref();
        let publishes = stat(stats, "publishes");
        let envelopes = stat(stats, "envelopes");
        // Broker messages by the adapters' rules: reply-to sends one message per publish,
        // topic routing without packing one per envelope, Redis one entry per envelope.
        let messages = match (a.broker, a.mode) {
            (Broker::Memory, _) | (Broker::Amqp, Mode::Batched | Mode::Group) => publishes,
            (Broker::Amqp, Mode::Seeds) | (Broker::Redis, _) => envelopes,
        };
        let per_k = |m: Option<u64>| {
            m.map_or("?".to_owned(), |m| {
                format!("{:.1}", m as f64 * 1000.0 / tokens.max(1) as f64)
            })
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6 / tokens.max(1) as f64;
        let cpu = &self.cpu;
        let broker_us = cpu.broker.map(us);
        let total_us = us(cpu.gateway) + us(cpu.worker) + broker_us.unwrap_or(0.0);
        let fmt_opt = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1}"));
        let raw_mean = match (&self.raw_before, &self.raw_after) {
            (Some(b), Some(a)) => Some((b.per_second() + a.per_second()) / 2.0),
            (Some(r), None) | (None, Some(r)) => Some(r.per_second()),
            (None, None) => None,
        };
        let kib = |b: f64| b / 1024.0;

        println!();
        println!(
            "## loadgen {} {:?}: {} streams × {} tokens at {} tokens/s (run {})",
            broker_name(a.broker),
            a.mode,
            n,
            a.tokens,
            if a.rate > 0.0 {
                format!("{}", a.rate)
            } else {
                "max".to_owned()
            },
            self.run
        );
        println!(
            "load average before / after: {} / {}",
            self.load_before, self.load_after
        );
        for (what, r) in [("before", &self.raw_before), ("after", &self.raw_after)] {
            if let Some(r) = r {
                println!(
                    "raw broker ceiling {what}: {:.0} messages/s of {} bytes ({} in {:.2?}; CPU µs per message: process {:.1}, broker {})",
                    r.per_second(),
                    self.message_size,
                    r.messages,
                    r.elapsed,
                    r.cpu.0.as_secs_f64() * 1e6 / r.messages.max(1) as f64,
                    fmt_opt(r.cpu.1.map(|d| d.as_secs_f64() * 1e6 / r.messages.max(1) as f64)),
                );
            }
        }
        if let Some((opened, per)) = self.idle {
            println!(
                "idle streams: {opened} open, gateway RSS +{:.1} KiB per stream",
                kib(per)
            );
        }
        println!(
            "ramp: {}/{} streams open in {:.2?}; gateway RSS {:.0} → {:.0} MiB (+{:.1} KiB per open stream waiting for its answer), {:.0} MiB at the end",
            self.opened,
            n,
            self.ramp_time,
            self.rss_before as f64 / 1048576.0,
            self.rss_open as f64 / 1048576.0,
            kib(self.rss_open.saturating_sub(self.rss_before) as f64 / self.opened.max(1) as f64),
            self.rss_peak as f64 / 1048576.0,
        );
        println!(
            "delivered: {tokens} of {expected} tokens in {:.2?} = {rate:.0} tokens/s{}",
            elapsed,
            raw_mean.map_or(String::new(), |r| format!(
                " ({:.2}× the raw broker rate {r:.0} messages/s)",
                rate / r
            )),
        );
        println!(
            "added latency, first token, ms p50 / p95 / p99 / max: {}",
            spread(&first)
        );
        println!(
            "added latency, every token, ms p50 / p95 / p99 / max: {}",
            spread(&every)
        );
        println!(
            "broker messages: {} ({} per 1,000 tokens); publishes {} ({} per 1,000 tokens); envelopes {}",
            messages.map_or("?".into(), |m| m.to_string()),
            per_k(messages),
            publishes.map_or("?".into(), |m| m.to_string()),
            per_k(publishes),
            envelopes.map_or("?".into(), |m| m.to_string()),
        );
        println!(
            "CPU µs per token (= s per 1M tokens): gateway {:.1}, worker {:.1}, broker {}, sum {:.1}; clients {:.1}",
            us(cpu.gateway),
            us(cpu.worker),
            fmt_opt(broker_us),
            total_us,
            us(cpu.clients),
        );
        println!(
            "correctness: {lost} lost, {duplicates} duplicated, {incomplete} incomplete streams, {error_count} client errors"
        );
        for (e, count) in &errors {
            println!("  {count} × {e}");
        }
        if let Some(path) = &a.json {
            let ms = |us: u32| f64::from(us) / 1000.0;
            let line = serde_json::json!({
                "at": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                "commit": commit(),
                "run": self.run,
                "broker": broker_name(a.broker),
                "mode": crate::driver::mode_name(a.mode),
                "streams": n,
                "tokens": a.tokens,
                "rate": a.rate,
                "offered_tokens_per_s": n as f64 * a.rate,
                "tokens_per_s": rate,
                "delivered": tokens,
                "expected": expected,
                "first_ms": {"p50": ms(pct(&first, 50.0)), "p99": ms(pct(&first, 99.0))},
                "every_ms": {"p50": ms(pct(&every, 50.0)), "p99": ms(pct(&every, 99.0))},
                "cpu_us_per_token": {
                    "gateway": us(cpu.gateway),
                    "worker": us(cpu.worker),
                    "broker": broker_us,
                    "sum": total_us,
                },
                "broker_messages_per_1000_tokens": messages.map(|m| m as f64 * 1000.0 / tokens.max(1) as f64),
                "raw_ceiling_messages_per_s": raw_mean,
                "idle_kib_per_stream": self.idle.map(|(_, per)| kib(per)),
                "lost": lost,
                "duplicated": duplicates,
                "errors": error_count,
                "load_before": self.load_before,
                "load_after": self.load_after,
            });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| {
                    use std::io::Write;
                    writeln!(f, "{line}")
                });
            if let Err(e) = written {
                eprintln!("loadgen: cannot append to {}: {e}", path.display());
            }
        }
        println!();
        println!("| streams × tokens/s | mode | tokens | tokens/s | first token added ms p50 / p95 / p99 / max | every token added ms p50 / p95 / p99 / max | broker msgs per 1,000 tokens | CPU µs per token gw / wk / broker / sum | gateway KiB per idle stream | lost / dup / errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} × {} | {:?} | {} | {:.0} | {} | {} | {} | {:.1} / {:.1} / {} / {:.1} | {} | {} / {} / {} |",
            n,
            if a.rate > 0.0 { format!("{}", a.rate) } else { "max".to_owned() },
            a.mode,
            tokens,
            rate,
            spread(&first),
            spread(&every),
            per_k(messages),
            us(cpu.gateway),
            us(cpu.worker),
            fmt_opt(broker_us),
            total_us,
            self.idle.map_or("—".to_owned(), |(_, per)| format!("{:.1}", kib(per))),
            lost,
            duplicates,
            error_count,
        );
    }
}
