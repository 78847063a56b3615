//! RabbitMQ benchmarks: relayed tokens per second per token topology, beside the raw lapin
//! publish → consume rate of the same broker; and seed 003's REST flow under 500 clients.
//!
//! Run with (RabbitMQ on `CHATSTREAM_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`):
//! - `cargo bench --bench amqp -- relay` — the relay table (about 2 minutes);
//! - `cargo bench --bench amqp -- rest` — the REST flow on the stream, reply-to and
//!   per-request topologies (about 1 minute; `AMQP_BENCH_REST_TOPOLOGIES=stream,reply-to`
//!   picks some);
//! - `cargo bench --bench amqp -- resume` — what a resume costs on another instance
//!   (`AMQP_BENCH_RESUME_STREAMS`, 50);
//! - `cargo bench --bench amqp` — both.
//!
//! Sizes can be changed through the environment: `AMQP_BENCH_STREAMS` (100),
//! `AMQP_BENCH_TOKENS` (tokens per stream with batching, 10,000), `AMQP_BENCH_TOKENS_OFF`
//! (tokens per stream without batching, 2,000), `AMQP_BENCH_RAW` (raw messages before each
//! case, 100,000),
//! `AMQP_BENCH_CLIENTS` (500), `AMQP_BENCH_ANSWER` (tokens per REST answer, 200),
//! `AMQP_BENCH_RATE` (tokens per second per REST answer, 50).
//!
//! `cargo test --benches` runs both parts once at a tenth of these sizes, as a smoke test.
//! Everything runs on loopback; every case is bounded in size and time and the program ends
//! by itself. The figures measured on the reference machine are in BENCHMARKS.md.

mod cpu;
mod raw;
mod relay;
mod rest;
mod resume;

use std::time::Duration;

use chatstream::amqp::TokenTopology;
use chatstream::wire::seed000;
use chatstream::{StreamEvent, StreamKey, TokenEnvelope};

use relay::Batching;

/// `cargo bench` passes `--bench`; without it (`cargo test --benches`) every size is cut
/// to a smoke run.
fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// A size from the environment, else `default` (a tenth of it, at least 1, in a smoke run).
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(if smoke() {
            (default / 10).max(1)
        } else {
            default
        })
}

fn amqp_url() -> String {
    std::env::var("CHATSTREAM_AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| chatstream::amqp::DEFAULT_URL.to_owned())
}

/// The size of one canonical token envelope of the relay runs (the raw messages' size).
fn envelope_size() -> usize {
    let env = TokenEnvelope::new(
        StreamKey::new("relay-0123abcd-0042", "m"),
        1,
        1234,
        StreamEvent::token(relay::TOKEN),
    );
    seed000::encode_envelope(&env, seed000::Mode::Canonical)
        .map(|s| s.len() + 1)
        .unwrap_or(100)
}

fn main() {
    // `cargo bench` passes `--bench`; any other word picks the parts to run.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = amqp_url();
    if let Err(e) = runtime.block_on(lapin::Connection::connect(&url, Default::default())) {
        eprintln!("RabbitMQ unreachable at {url} ({e}): nothing to measure");
        return;
    }
    if wants("relay") {
        runtime.block_on(relay_table(&url));
    }
    if wants("rest") {
        rest::run(&url);
    }
    if wants("resume") {
        runtime.block_on(resume::run(&url));
    }
}

/// CPU of this process and the broker together per unit, in microseconds.
fn cpu_per(cpu: (Duration, Option<Duration>), units: u64) -> f64 {
    let total = cpu.0 + cpu.1.unwrap_or_default();
    total.as_secs_f64() * 1e6 / units.max(1) as f64
}

/// CPU per unit as `a / b` microseconds.
fn per_unit(cpu: (Duration, Option<Duration>), units: u64) -> String {
    let us = |d: Duration| d.as_secs_f64() * 1e6 / units.max(1) as f64;
    match cpu.1 {
        Some(broker) => format!("{:.1} / {:.1}", us(cpu.0), us(broker)),
        None => format!("{:.1} / ?", us(cpu.0)),
    }
}

async fn relay_table(url: &str) {
    let streams = env_usize("AMQP_BENCH_STREAMS", 100);
    let tokens_on = env_usize("AMQP_BENCH_TOKENS", 10_000);
    let tokens_off = env_usize("AMQP_BENCH_TOKENS_OFF", 2_000);
    let raw_messages = env_usize("AMQP_BENCH_RAW", 100_000);
    let size = envelope_size();

    println!("## relay: worker → RabbitMQ → gateway ({streams} streams, {size}-byte envelopes)");
    println!();
    println!(
        "Each case runs right after a raw lapin publish → consume of {raw_messages} messages of \
         {size} bytes (publisher confirms) on the same broker: its ceiling."
    );
    println!();
    println!("| topology | batching | tokens | s | tokens/s | broker messages | tokens per message | CPU µs per token: bench process / broker | raw messages/s (CPU µs per message) | tokens/s ÷ raw messages/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let cases = [
        (TokenTopology::Stream, Batching::On),
        (TokenTopology::ReplyTo, Batching::On),
        (TokenTopology::ReplyTo, Batching::OnCoalescing),
        (TokenTopology::ReplyTo, Batching::Off),
        (TokenTopology::Topic, Batching::On),
        (TokenTopology::Topic, Batching::Off),
        (TokenTopology::PerRequestQueue, Batching::On),
        (TokenTopology::PerRequestQueue, Batching::Off),
    ];
    let mut results = Vec::new();
    for (topology, batching) in cases {
        let tokens = if batching == Batching::Off {
            tokens_off
        } else {
            tokens_on
        };
        let raw = raw::publish_consume(url, raw_messages, size).await;
        let r = relay::run(url, topology, batching, streams, tokens).await;
        let ratio = r.tokens_per_second() / raw.per_second();
        // The same ratio by CPU cost (this process + broker), which a busy machine disturbs
        // less than wall-clock rates: raw CPU per message ÷ relay CPU per token.
        let cpu_ratio = cpu_per(raw.cpu, raw.messages as u64) / cpu_per(r.cpu, r.tokens);
        println!(
            "| {topology:?} | {} | {}{} | {:.2} | {:.0} | {} | {:.1} | {} | {:.0} ({}) | {ratio:.2}× |",
            batching.label(),
            r.tokens,
            if r.complete { "" } else { " (INCOMPLETE)" },
            r.elapsed.as_secs_f64(),
            r.tokens_per_second(),
            r.messages,
            r.envelopes as f64 / r.messages.max(1) as f64,
            per_unit(r.cpu, r.tokens),
            raw.per_second(),
            per_unit(raw.cpu, raw.messages as u64),
        );
        results.push((topology, batching, r.complete, ratio, cpu_ratio));
    }
    println!();
    println!("| topology | batching | tokens/s ÷ raw messages/s | by CPU cost | goal | met |");
    println!("|---|---|---|---|---|---|");
    for (topology, batching, complete, ratio, cpu_ratio) in results {
        let goal = match (topology, batching) {
            (TokenTopology::ReplyTo | TokenTopology::Stream, Batching::On) => Some(5.0),
            (_, Batching::Off) => Some(0.7),
            _ => None,
        };
        let (goal_text, met) = match goal {
            Some(g) => (
                format!("≥ {g}×"),
                if ratio >= g && complete { "yes" } else { "NO" },
            ),
            None => ("—".to_owned(), "—"),
        };
        println!(
            "| {topology:?} | {} | {ratio:.2}× | {cpu_ratio:.2}× | {goal_text} | {met} |",
            batching.label()
        );
    }
}
