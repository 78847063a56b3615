//! The driver: starts the server processes, opens the clients, gives the start signal,
//! samples CPU and memory, and hands everything to the report.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatstream::wire::seed000;
use chatstream::{StreamEvent, StreamKey, TokenEnvelope};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::backend::{realtime_us, Plan};
use crate::client::{self, LoadShared, Outcome, Ramp};
use crate::raw::RawRate;
use crate::report::{Cpu, Report};
use crate::{procfs, raw, raw_redis, BoxResult, Broker, Mode, RunArgs};

/// A server process of the run.
struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
    addr: Option<String>,
}

impl Server {
    async fn start(args: &[String]) -> BoxResult<Server> {
        let exe = std::env::current_exe()?;
        // `LOADGEN_SERVE_WRAPPER`: a command the server runs under (valgrind, perf, …).
        let mut command = match wrapper() {
            Some(words) => {
                let mut c = tokio::process::Command::new(&words[0]);
                c.args(&words[1..]).arg(exe);
                c
            }
            None => tokio::process::Command::new(exe),
        };
        let mut child = command
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| "server not ready within 60 s")??
            .ok_or("server exited before it was ready")?;
        let mut words = ready.split_whitespace().skip(1);
        let addr = words.next().filter(|a| *a != "-").map(str::to_owned);
        let pid = words
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected first line {ready:?}"))?;
        Ok(Server {
            child,
            stdin,
            lines,
            pid,
            addr,
        })
    }

    async fn send(&mut self, command: &str) -> BoxResult<()> {
        self.stdin.write_all(command.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Tells it to quit; its `stats` line, if it printed one.
    async fn quit(mut self) -> Option<String> {
        let _ = self.send("quit").await;
        let mut stats = None;
        let read = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if line.starts_with("stats ") {
                    stats = Some(line);
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
        // A wrapper such as valgrind writes its results as the process exits: give it time
        // rather than kill it.
        let exit = Duration::from_secs(if wrapper().is_some() { 300 } else { 10 });
        let _ = tokio::time::timeout(exit, self.child.wait()).await;
        stats
    }
}

/// The words of `LOADGEN_SERVE_WRAPPER`, when set.
fn wrapper() -> Option<Vec<String>> {
    let words: Vec<String> = std::env::var("LOADGEN_SERVE_WRAPPER")
        .ok()?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (!words.is_empty()).then_some(words)
}

/// The processes whose CPU time is sampled.
pub(crate) struct Procs {
    pub(crate) broker: Broker,
    pub(crate) gateway: u32,
    pub(crate) worker: u32,
    /// Every `redis-server` on the machine (one, or the nodes of a local cluster): their
    /// CPU is summed.
    pub(crate) redis: Vec<u32>,
}

impl Procs {
    pub(crate) fn sample(&self) -> Cpu {
        let own = procfs::cpu(std::process::id()).unwrap_or_default();
        let (gateway, worker) = if self.broker == Broker::Memory {
            (
                procfs::threads_cpu(self.gateway, "gw"),
                procfs::threads_cpu(self.worker, "wk"),
            )
        } else {
            (
                procfs::cpu(self.gateway).unwrap_or_default(),
                procfs::cpu(self.worker).unwrap_or_default(),
            )
        };
        let broker = match self.broker {
            Broker::Memory => None,
            Broker::Amqp => crate::cpu::CpuSample::now().broker,
            Broker::Redis => self.redis.iter().map(|&pid| procfs::cpu(pid)).sum(),
        };
        Cpu {
            gateway,
            worker,
            broker,
            clients: own,
        }
    }
}

/// The size of one broker message carrying one token of this run on its own.
fn message_size(run: &str, streams: usize) -> usize {
    let key = StreamKey::new(
        format!("{run}-{}", streams.saturating_sub(1)),
        uuid::Uuid::new_v4().to_string(),
    );
    let env = TokenEnvelope::new(key, 1, 123, StreamEvent::token("123:12345678 "));
    seed000::encode_envelope(&env, seed000::Mode::Canonical).map_or(100, |s| s.len())
}

async fn ceiling(args: &RunArgs, run: &str, size: usize) -> Option<RawRate> {
    if args.raw_messages == 0 {
        return None;
    }
    match args.broker {
        Broker::Memory => None,
        Broker::Amqp => Some(raw::publish_consume(&args.amqp_url, args.raw_messages, size).await),
        Broker::Redis => Some(
            raw_redis::xadd_xread(
                &args.redis_url,
                &format!("{run}:raw"),
                args.raw_messages,
                size,
            )
            .await,
        ),
    }
}

/// Opens `n` streams of keys nobody answers; the gateway's RSS growth per stream.
async fn idle_phase(
    args: &RunArgs,
    http: &client::Http,
    addr: std::net::SocketAddr,
    run: &str,
    gateway: u32,
    n: usize,
) -> (usize, f64) {
    let before = procfs::rss(gateway).unwrap_or(0);
    let ramp = Arc::new(Ramp::default());
    let connecting = Arc::new(Semaphore::new(args.connecting.max(1)));
    let (release, released) = watch::channel(false);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(client::idle_client(
                http.clone(),
                addr,
                format!("/api/stream/{run}-idle-{i}/m"),
                ramp.clone(),
                connecting.clone(),
                released.clone(),
            ))
        })
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(args.ramp_limit), ramp.settled(n)).await;
    // Let the gateway finish what the last connections started.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = procfs::rss(gateway).unwrap_or(0);
    let opened = ramp.opened.load(std::sync::atomic::Ordering::Relaxed);
    release.send_replace(true);
    for t in tasks {
        let _ = t.await;
    }
    let per_stream = during.saturating_sub(before) as f64 / opened.max(1) as f64;
    (opened, per_stream)
}

fn serve_args(args: &RunArgs, role: &str, name: &str, epoch_us: u64) -> Vec<String> {
    let default = chatstream::GatewayConfig::default().client_buffer;
    let client_buffer = args.client_buffer.unwrap_or(if args.rate > 0.0 {
        default
    } else {
        let per_token = if args.mode == Mode::Seeds { 16 } else { 1 };
        (args.tokens as usize * per_token + 64).max(default)
    });
    [
        "--role",
        role,
        "--broker",
        broker_name(args.broker),
        "--mode",
        mode_name(args.mode),
        "--epoch-us",
        &epoch_us.to_string(),
        "--name",
        name,
        "--concurrency",
        &(args.streams + 16).to_string(),
        "--client-buffer",
        &client_buffer.to_string(),
        "--amqp-url",
        &args.amqp_url,
        "--redis-url",
        &args.redis_url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(
        args.max_in_flight
            .map(|n| ["--max-in-flight".to_owned(), n.to_string()])
            .into_iter()
            .flatten(),
    )
    .collect()
}

/// Shows on stderr how far the answers are, every two seconds once a run has lasted three:
/// one line rewritten in place on a terminal, one line every ten seconds otherwise.
async fn progress(ramp: Arc<Ramp>, expected: u64, go: Instant) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { 2 } else { 10 };
    let mut tick =
        tokio::time::interval_at(go + Duration::from_secs(3), Duration::from_secs(every));
    let mut last = (go, 0u64);
    loop {
        tick.tick().await;
        let got = ramp.received.load(std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let rate = (got - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, got);
        let line = format!(
            "loadgen: {:>4.0} s, {got} of {expected} tokens ({:.1} %), {rate:.0} tokens/s now",
            now.duration_since(go).as_secs_f64(),
            got as f64 * 100.0 / expected.max(1) as f64,
        );
        let mut err = std::io::stderr();
        if terminal {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

pub(crate) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Batched => "batched",
        Mode::Group => "group",
        Mode::Seeds => "seeds",
    }
}

pub(crate) fn broker_name(b: Broker) -> &'static str {
    match b {
        Broker::Memory => "memory",
        Broker::Amqp => "amqp",
        Broker::Redis => "redis",
    }
}

/// Deletes what the run left in Redis.
async fn clean_redis(url: &str, name: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{name}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// One run, from the first raw measurement to the report.
pub(crate) async fn run(args: RunArgs) -> BoxResult<()> {
    let n = args.streams.max(1);
    let idle_n = args.idle_streams.unwrap_or(n);
    let needed = n.max(idle_n) as u64 + 256;
    if let Some(limit) = procfs::open_files_limit() {
        if limit < needed {
            return Err(format!(
                "open files limit {limit} < {needed}: run `ulimit -n {needed}` (or more) first"
            )
            .into());
        }
    }
    let epoch_us = realtime_us();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let run = format!("lg{}", &id[..8]);
    let name = format!("loadgen-{run}");
    let load_before = procfs::load_average();
    let size = message_size(&run, n);
    let raw_before = ceiling(&args, &run, size).await;

    let mut servers = Vec::new();
    if args.broker == Broker::Memory {
        servers.push(Server::start(&serve_args(&args, "both", &name, epoch_us)).await?);
    } else {
        servers.push(Server::start(&serve_args(&args, "gateway", &name, epoch_us)).await?);
        servers.push(Server::start(&serve_args(&args, "worker", &name, epoch_us)).await?);
    }
    let gateway_pid = servers[0].pid;
    let worker_pid = servers.last().map_or(gateway_pid, |s| s.pid);
    let addr: std::net::SocketAddr = servers[0]
        .addr
        .as_deref()
        .ok_or("the gateway printed no address")?
        .parse()?;
    let procs = Procs {
        broker: args.broker,
        gateway: gateway_pid,
        worker: worker_pid,
        redis: procfs::pids_named("redis-server"),
    };
    let http = client::http();

    let idle = if idle_n > 0 {
        Some(idle_phase(&args, &http, addr, &run, gateway_pid, idle_n).await)
    } else {
        None
    };

    // The load: every client submits and opens its stream; tokens start on `go`.
    let ramp = Arc::new(Ramp::default());
    let ramp_limit = Duration::from_secs(args.ramp_limit);
    let shared = LoadShared {
        http: http.clone(),
        addr,
        run: run.clone(),
        epoch_us,
        ramp: ramp.clone(),
        connecting: Arc::new(Semaphore::new(args.connecting.max(1))),
        deadline: Instant::now() + ramp_limit + Duration::from_secs(args.time_limit),
    };
    let rss_before = procfs::rss(gateway_pid).unwrap_or(0);
    let period = if args.rate > 0.0 {
        Duration::from_secs_f64(1.0 / args.rate)
    } else {
        Duration::ZERO
    };
    let ramp_started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let plan = Plan {
                tokens: args.tokens,
                rate: args.rate,
                phase: period.mul_f64(i as f64 / n as f64),
            };
            tokio::spawn(client::load_client(shared.clone(), i, plan))
        })
        .collect();
    let _ = tokio::time::timeout(ramp_limit, ramp.settled(n)).await;
    let ramp_time = ramp_started.elapsed();
    // Submitted requests reach the worker through the broker; let them arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = procfs::rss(gateway_pid).unwrap_or(0);
    let opened = ramp.opened.load(std::sync::atomic::Ordering::Relaxed);

    let cpu_before = procs.sample();
    let go = Instant::now();
    for s in servers.iter_mut().rev() {
        s.send("go").await?;
    }
    let progress = tokio::spawn(progress(
        ramp.clone(),
        n as u64 * u64::from(args.tokens),
        go,
    ));
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("client task: {e}")),
            ..Outcome::default()
        }));
    }
    progress.abort();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[K");
    }
    let cpu_after = procs.sample();
    let done = Instant::now();
    let rss_peak = procfs::rss(gateway_pid).unwrap_or(0);
    let load_after = procfs::load_average();

    let mut stats = None;
    for s in servers.into_iter().rev() {
        if let Some(line) = s.quit().await {
            stats = Some(line);
        }
    }
    let raw_after = ceiling(&args, &run, size).await;
    if args.broker == Broker::Redis {
        clean_redis(&args.redis_url, &run).await;
    }

    let report = Report {
        args: &args,
        run,
        message_size: size,
        load_before,
        load_after,
        raw_before,
        raw_after,
        idle,
        ramp_time,
        opened,
        rss_before,
        rss_open,
        rss_peak,
        go,
        done,
        cpu: cpu_after.since(&cpu_before),
        worker_stats: stats,
        outcomes,
    };
    report.print();
    Ok(())
}
