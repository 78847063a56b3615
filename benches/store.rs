//! Conversation stores side by side: exchanges appended per second, and the latency of a
//! thread's history load (`get`), with 1,000 and 100,000 threads stored.
//!
//! Run with: `cargo bench --bench store` (all stores, 1,000 and 100,000 threads), or
//! `cargo bench --bench store -- --stores postgres,redis --threads 1000 --seconds 5`.
//!
//! - `memory`: `InMemoryConversationStore`;
//! - `redis`: `RedisConversationStore` on `CHATSTREAM_REDIS_URL` (default
//!   `redis://127.0.0.1:6379`), under a prefix of its own, deleted after;
//! - `postgres`: `PgConversationStore` on `CHATSTREAM_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`), in a schema of its own, dropped after.
//!
//! Each run stores N threads of 10 messages (one append each), loads `--loads` random
//! threads' histories (`--tasks` at once; each history is the 10 messages), loads the same
//! threads again (in PostgreSQL the first load of a thread idle for over a minute also
//! slides its expiry, a write; the second is a read only), then for
//! `--seconds` appends exchanges (a user and an assistant message, one `append`) to random
//! threads from `--tasks` tasks at once, and prints the figures. A store whose server is unreachable is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream_core::{ChatMessage, ConversationStore, DynConversationStore};

struct Args {
    stores: Vec<String>,
    threads: Vec<usize>,
    seconds: u64,
    tasks: usize,
    loads: usize,
}

fn args() -> Args {
    let mut a = Args {
        stores: vec!["memory".into(), "redis".into(), "postgres".into()],
        threads: vec![1_000, 100_000],
        seconds: 5,
        tasks: 16,
        loads: 5_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--stores" => a.stores = value().split(',').map(str::to_owned).collect(),
            "--threads" => {
                a.threads = value()
                    .split(',')
                    .filter_map(|n| n.trim().replace('_', "").parse().ok())
                    .collect()
            }
            "--seconds" => a.seconds = value().parse().unwrap_or(a.seconds),
            "--tasks" => a.tasks = value().parse().unwrap_or(a.tasks).max(1),
            "--loads" => a.loads = value().parse().unwrap_or(a.loads).max(1),
            // `cargo bench` passes `--bench`; anything else unknown is ignored too.
            _ => {}
        }
    }
    a
}

/// A store and what cleans it up when dropped.
type Made = (Arc<DynConversationStore>, Box<dyn Send>);

async fn make(kind: &str) -> Option<Made> {
    match kind {
        "memory" => Some((
            Arc::new(chatstream_core::InMemoryConversationStore::default()),
            Box::new(()),
        )),
        "redis" => {
            let client = chatstream_redis::testkit::connect_or_skip("bench").await?;
            let guard = chatstream_redis::testkit::PrefixGuard::new(&client);
            let store = chatstream_redis::RedisConversationStore::new(
                client,
                Duration::from_secs(90 * 86_400),
            );
            Some((Arc::new(store), Box::new(guard)))
        }
        "postgres" => {
            let guard = chatstream_postgres::testkit::SchemaGuard::new(
                chatstream_postgres::testkit::postgres_url(),
            );
            let store = chatstream_postgres::testkit::store_or_skip(
                "bench",
                Duration::from_secs(90 * 86_400),
                &guard,
            )
            .await?;
            Some((Arc::new(store), Box::new(guard)))
        }
        other => {
            eprintln!("unknown store {other:?} (memory, redis, postgres)");
            None
        }
    }
}

/// A cheap pseudo-random sequence (xorshift), one per task.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn thread_id(i: usize) -> String {
    format!("bench-thread-{i:07}")
}

async fn fill(store: &Arc<DynConversationStore>, n: usize, tasks: usize) -> Duration {
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let history: Arc<Vec<ChatMessage>> = Arc::new(
        (0..10)
            .map(|k| {
                if k % 2 == 0 {
                    ChatMessage::user(format!("question {k}: what about the weather tomorrow?"))
                } else {
                    ChatMessage::assistant(format!(
                        "answer {k}: tomorrow will be sunny with a light breeze, 21 degrees."
                    ))
                }
            })
            .collect(),
    );
    let mut handles = Vec::new();
    for _ in 0..tasks.max(4) {
        let (store, next, history) = (store.clone(), next.clone(), history.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return;
                }
                if let Err(e) = store.append(&thread_id(i), &history).await {
                    panic!("filling: {e}");
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    t0.elapsed()
}

async fn appends(store: &Arc<DynConversationStore>, n: usize, a: &Args) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for t in 0..a.tasks {
        let (store, done) = (store.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
            while Instant::now() < deadline {
                let id = thread_id(rng.below(n));
                let exchange = [
                    ChatMessage::user("and the day after?"),
                    ChatMessage::assistant("rain in the morning, clearing up by noon."),
                ];
                if let Err(e) = store.append(&id, &exchange).await {
                    panic!("append: {e}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

/// Latencies of `a.loads` history loads, sorted.
async fn loads(store: &Arc<DynConversationStore>, n: usize, a: &Args) -> Vec<Duration> {
    let per_task = a.loads.div_ceil(a.tasks);
    let mut handles = Vec::new();
    for t in 0..a.tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (t as u64 + 1));
            let mut out = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let id = thread_id(rng.below(n));
                let t0 = Instant::now();
                match store.get(&id).await {
                    Ok(Some(c)) => assert!(c.messages.len() >= 10, "short history"),
                    Ok(None) => panic!("{id} missing"),
                    Err(e) => panic!("get: {e}"),
                }
                out.push(t0.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            all.extend(v);
        }
    }
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    println!(
        "| store | threads stored | fill (threads/s) | exchanges appended/s ({} tasks) | messages appended/s | history load p50 (ms) | p99 (ms) | max (ms) | same threads again: p50 (ms) | p99 (ms) |",
        a.tasks
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &a.threads {
        for kind in &a.stores {
            let Some((store, cleanup)) = make(kind).await else {
                continue;
            };
            let filled = fill(&store, n, a.tasks).await;
            // Loads first, so every history holds exactly the 10 messages stored. The same
            // threads are loaded twice: the first load of a thread last written more than
            // a minute ago also slides its expiry in PostgreSQL (a write), which a long fill
            // makes the common case; the second load is a read only.
            let lat = loads(&store, n, &a).await;
            let again = loads(&store, n, &a).await;
            let rate = appends(&store, n, &a).await;
            println!(
                "| {kind} | {n} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                n as f64 / filled.as_secs_f64(),
                rate,
                rate * 2.0,
                pct(&lat, 0.50),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
                pct(&again, 0.50),
                pct(&again, 0.99),
            );
            drop(store);
            drop(cleanup);
        }
    }
}
