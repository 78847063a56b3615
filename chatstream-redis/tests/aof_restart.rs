//! Redis crashes and restarts while 20 answers stream, on a server this test owns.
//!
//! With AOF on (`appendonly yes`, `appendfsync always`) every answer cut by the restart
//! must end whole: the exact text, at most one reset, no error event, then `End`. The
//! worker (Redis Streams request queue, Redis token bus) and the gateway (Redis token
//! source) reconnect and go on from their positions by themselves; 5 requests submitted
//! after the restart are answered whole, and a stop after the restart reaches the worker
//! (its cancel listener resubscribed). Without persistence the restart loses the streams:
//! then each cut answer ends whole or with `history lost`, never hangs and is never garbled.
//!
//! The server is SIGKILLed, not shut down: a crash is the harder case, as nothing gets the
//! chance to flush. With `appendfsync always` Redis writes and fsyncs the AOF before it
//! replies to any command (and before a blocked reader is served), so whatever a worker
//! or a reader was told is on disk. It stays down for [`DOWNTIME`], longer than the token
//! readers used to retry (about 3 s), then starts again on the same port and directory.
//!
//! Needs `redis-server` on `PATH`; without it the tests skip with a line on stderr, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`, where they fail.
//!
//! ```text
//! cargo test -p chatstream-redis --all-features --test aof_restart -- --nocapture
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatstream_core::testkit::skip_or_fail;
use chatstream_core::{ChatRequest, Fault, FinishReason, ScriptedBackend, StopOutcome, StreamKey};
use chatstream_redis::RedisClient;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// How long Redis stays down: longer than the ~3 s the token readers used to retry.
const DOWNTIME: Duration = Duration::from_secs(4);
/// Longest a client may wait for the end of its stream: a hang shows up as a failure.
const CLIENT_LIMIT: Duration = Duration::from_secs(90);
/// Longest any other step may take.
const STEP: Duration = Duration::from_secs(20);
/// Answers in flight when Redis goes down.
const CUT: usize = 20;
/// Answers asked for after the restart.
const AFTER: usize = 5;

mod support;
use support::{first_tokens, follow, pipeline, Outcome, Pipeline};

/// A `redis-server` of this test: free loopback port, its own directory (removed on drop),
/// killed on drop.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` (after [`skip_or_fail`]) when `redis-server` is not installed.
    fn start(aof: bool) -> Option<Self> {
        if let Err(e) = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
        {
            return skip_or_fail("redis-server (this test starts its own; needed on PATH)", e);
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "chatstream-aof-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut server = Self {
            port,
            dir,
            aof,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let dir = self.dir.to_str().expect("UTF-8 temporary directory");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--save", "", "--dir", dir])
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server answers `PING` (after loading its data).
    async fn ready(&self) {
        let client = redis::Client::open(self.url()).expect("URL");
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(Ok(mut con)) = timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut con).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not come up; log: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Submits `n` requests and follows each in a task; returns the tasks and the channel that
/// hears when a client has seen its first tokens.
async fn batch(
    p: &Pipeline,
    tag: &str,
    n: usize,
    ended: &Arc<AtomicUsize>,
) -> (
    tokio::task::JoinSet<(ChatRequest, Outcome)>,
    mpsc::UnboundedReceiver<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = ChatRequest::new(
            StreamKey::new(format!("{tag}-s{i}"), format!("{tag}-m{i}")),
            format!("question {i}"),
        );
        let stream = timeout(STEP, p.gateway.submit(request.clone()))
            .await
            .expect("submit hung")
            .unwrap_or_else(|e| panic!("submit {}: {e}", request.key));
        let (tx, ended) = (tx.clone(), ended.clone());
        clients.spawn(async move {
            let outcome = follow(stream, tx, CLIENT_LIMIT).await;
            ended.fetch_add(1, Ordering::SeqCst);
            (request, outcome)
        });
    }
    (clients, rx)
}

/// Crashes the server (SIGKILL), keeps it down for [`DOWNTIME`] (the fault's length, not
/// a wait for anything), starts it again on the same port and directory and waits until it
/// answers. Returns how long it was away.
async fn crash_and_restart(server: &mut RedisServer) -> Duration {
    let down = Instant::now();
    server.kill();
    tokio::time::sleep(DOWNTIME).await;
    server.spawn();
    server.ready().await;
    down.elapsed()
}

/// Tallies a batch: (whole answers, most resets on one stream, resets in all, faults).
fn tally(
    backend: &ScriptedBackend,
    results: &[(ChatRequest, Outcome)],
) -> (usize, usize, usize, Vec<String>) {
    let whole = results
        .iter()
        .filter(|(r, o)| {
            o.fault.is_none() && o.finish == Some(FinishReason::Stop) && o.text == backend.answer(r)
        })
        .count();
    let most = results.iter().map(|(_, o)| o.resets).max().unwrap_or(0);
    let resets = results.iter().map(|(_, o)| o.resets).sum();
    let faults = results
        .iter()
        .filter_map(|(r, o)| o.fault.as_ref().map(|f| format!("{}: {f:?}", r.key)))
        .collect();
    (whole, most, resets, faults)
}

/// Waits until the worker's cancel listener has subscribed again.
async fn cancel_listener_back(client: &RedisClient) {
    let channel = client.keys().cancel_channel();
    let deadline = Instant::now() + STEP;
    loop {
        let reply: redis::RedisResult<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut client.connection())
            .await;
        if reply.is_ok_and(|(_, n)| n >= 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker's cancel listener never resubscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cut_by_a_restart_end_whole_when_redis_keeps_its_data() {
    let Some(mut server) = RedisServer::start(true) else {
        return;
    };
    server.ready().await;
    let p = pipeline(&server.url(), "aof:", 32).await;
    let ended = Arc::new(AtomicUsize::new(0));

    let (before, mut started) = batch(&p, "a", CUT, &ended).await;
    first_tokens(&mut started, CUT, STEP).await;
    assert_eq!(
        ended.load(Ordering::SeqCst),
        0,
        "every answer is mid-way when Redis goes down"
    );
    let down = crash_and_restart(&mut server).await;
    let back = Instant::now();

    let (after, _) = batch(&p, "b", AFTER, &ended).await;
    let before = before.join_all().await;
    let cut_done = back.elapsed();
    let after = after.join_all().await;
    let (whole, most_resets, resets, faults) = tally(&p.backend, &before);
    let (whole_after, _, _, faults_after) = tally(&p.backend, &after);
    eprintln!(
        "AOF restart: down {:.1} s; {CUT} answers cut: {whole} whole, {resets} resets \
         (at most {most_resets} per stream), {} with an error event; the last of them \
         ended {:.1} s after the restart; after the restart {whole_after} of {AFTER} whole; \
         worker {:?}",
        down.as_secs_f64(),
        faults.len(),
        cut_done.as_secs_f64(),
        p.worker.stats(),
    );
    for (request, outcome) in &before {
        assert!(
            outcome.fault.is_none(),
            "{}: an error event: {:?}",
            request.key,
            outcome.fault
        );
        assert_eq!(
            outcome.finish,
            Some(FinishReason::Stop),
            "{}: the stream did not end with End",
            request.key
        );
        assert_eq!(
            outcome.text,
            p.backend.answer(request),
            "{}: not the exact answer",
            request.key
        );
        assert!(
            outcome.resets <= 1,
            "{}: {} resets",
            request.key,
            outcome.resets
        );
    }
    assert_eq!(whole_after, AFTER, "after the restart: {faults_after:?}");

    // A stop after the restart reaches the worker: its cancel listener is back.
    cancel_listener_back(&p.gateway_client).await;
    let key = StreamKey::new("c-s", "c-m");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = timeout(
        STEP,
        p.gateway.submit(ChatRequest::new(key.clone(), "stop me")),
    )
    .await
    .expect("submit hung")
    .expect("submit");
    let stopped = tokio::spawn(follow(stream, tx, CLIENT_LIMIT));
    first_tokens(&mut rx, 1, STEP).await;
    let outcome = timeout(STEP, p.gateway.stop(&key))
        .await
        .expect("stop hung")
        .expect("stop");
    assert_eq!(outcome, StopOutcome::Stopping);
    let outcome = stopped.await.expect("client task");
    assert_eq!(
        outcome.finish,
        Some(FinishReason::Cancelled),
        "the stop after the restart did not reach the worker: {outcome:?}"
    );
    p.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cut_by_a_restart_that_loses_the_data_end_whole_or_with_history_lost() {
    let Some(mut server) = RedisServer::start(false) else {
        return;
    };
    server.ready().await;
    let p = pipeline(&server.url(), "aof:", 32).await;
    let ended = Arc::new(AtomicUsize::new(0));

    let (before, mut started) = batch(&p, "a", CUT, &ended).await;
    first_tokens(&mut started, CUT, STEP).await;
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    let down = crash_and_restart(&mut server).await;

    let (after, _) = batch(&p, "b", AFTER, &ended).await;
    let before = before.join_all().await;
    let after = after.join_all().await;
    let (whole, _, resets, faults) = tally(&p.backend, &before);
    let (whole_after, _, _, faults_after) = tally(&p.backend, &after);
    eprintln!(
        "restart without persistence: down {:.1} s; {CUT} answers cut: {whole} whole, \
         {resets} resets, {} ended with an error event ({:?}); after the restart \
         {whole_after} of {AFTER} whole",
        down.as_secs_f64(),
        faults.len(),
        faults.first(),
    );
    for (request, outcome) in &before {
        let answer = p.backend.answer(request);
        match &outcome.fault {
            None => {
                assert_eq!(outcome.finish, Some(FinishReason::Stop), "{}", request.key);
                assert_eq!(outcome.text, answer, "{}: garbled", request.key);
            }
            Some(Fault::HistoryLost) => assert!(
                answer.starts_with(&outcome.text),
                "{}: garbled before history lost: {:?}",
                request.key,
                outcome.text
            ),
            Some(other) => panic!("{}: {other:?} (expected history lost)", request.key),
        }
    }
    assert_eq!(whole_after, AFTER, "after the restart: {faults_after:?}");
    p.worker.shutdown().await;
}
