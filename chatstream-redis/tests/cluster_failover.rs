//! A Redis Cluster master is SIGKILLed while 50 answers stream, on a cluster this test
//! owns (3 masters + 3 replicas, [`RedisCluster`]).
//!
//! The master killed is the one serving the most of the 50 token streams; it stays dead,
//! and the cluster promotes its replica after the node timeout (2 s). Replication is
//! asynchronous, so the promoted replica may lack entries the old master acknowledged to
//! the worker. Every cut answer must therefore end, within [`CLIENT_LIMIT`], either whole
//! (the exact text, `End` with `stop`, no error event; resets allowed and counted) or with
//! an explicit `history lost` fault after a prefix of the answer: never another error,
//! never garbled, never a hang. 5 requests submitted once the cluster is healthy again are
//! held to the same rule.
//!
//! The worker (request queue, token bus, cancel channel) and the gateway (token source,
//! request sink, cancel channel) each have their own client on the cluster's URL list, as
//! two processes would, and ride out the failover by themselves
//! ([`BusConfig::retry_for`] at its default, 30 s).
//!
//! Needs `redis-server` and `redis-cli` on `PATH`; without them the test skips with a line
//! on stderr, unless `CHATSTREAM_REQUIRE_SERVICES=1`, where it fails.
//!
//! ```text
//! cargo test -p chatstream-redis --all-features --test cluster_failover -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatstream_core::{ChatRequest, Fault, FinishReason, ScriptedBackend, StreamKey};
use chatstream_redis::testkit::cluster::RedisCluster;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// Longest a client may wait for the end of its stream: a hang shows up as a failure.
/// Longer than a reader's retries ([`BusConfig::retry_for`], 30 s) plus an answer, so a
/// reader that gives up shows as its error, not as a hang.
const CLIENT_LIMIT: Duration = Duration::from_secs(45);
/// Longest any other step may take.
const STEP: Duration = Duration::from_secs(20);
/// Longest the cluster may take to replace the killed master (node timeout 2 s, then the
/// election).
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);
/// How long a submit that fails (the cluster still settling) is tried again.
const SUBMIT_RETRY: Duration = Duration::from_secs(15);
/// Answers in flight when the master dies.
const CUT: usize = 50;
/// Answers asked for after the failover.
const AFTER: usize = 5;
/// Prefix of every key of this test (the cluster is the test's own).
const PREFIX: &str = "failover:";

mod support;
use support::{first_tokens, follow, pipeline, Outcome, Pipeline};

/// The `i`th request of a batch.
fn request(tag: &str, i: usize) -> ChatRequest {
    ChatRequest::new(
        StreamKey::new(format!("{tag}-s{i}"), format!("{tag}-m{i}")),
        format!("question {i}"),
    )
}

/// A batch of clients: their tasks, the channel that hears when a client has seen its
/// first tokens, and the submits that failed and were tried again.
struct Batch {
    clients: tokio::task::JoinSet<(ChatRequest, Outcome)>,
    started: mpsc::UnboundedReceiver<()>,
    failed_submits: Vec<String>,
}

/// Submits `n` requests and follows each in a task. A submit that fails is tried again
/// (every 200 ms, for [`SUBMIT_RETRY`]), and the failure recorded.
async fn batch(p: &Pipeline, tag: &str, n: usize, ended: &Arc<AtomicUsize>) -> Batch {
    let (tx, started) = mpsc::unbounded_channel();
    let mut clients = tokio::task::JoinSet::new();
    let mut failed_submits = Vec::new();
    for i in 0..n {
        let request = request(tag, i);
        let deadline = Instant::now() + SUBMIT_RETRY;
        let stream = loop {
            match timeout(STEP, p.gateway.submit(request.clone()))
                .await
                .expect("submit hung")
            {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    failed_submits.push(format!("{}: {e}", request.key));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!(
                    "submit {} still fails after {SUBMIT_RETRY:?}: {e} \
                     (earlier: {failed_submits:?})",
                    request.key
                ),
            }
        };
        let (tx, ended) = (tx.clone(), ended.clone());
        clients.spawn(async move {
            let outcome = follow(stream, tx, CLIENT_LIMIT).await;
            ended.fetch_add(1, Ordering::SeqCst);
            (request, outcome)
        });
    }
    Batch {
        clients,
        started,
        failed_submits,
    }
}

/// How a batch ended: whole answers, `history lost` endings, resets in all, and every
/// other ending (with what the client saw).
#[derive(Debug, Default)]
struct Tally {
    whole: usize,
    history_lost: usize,
    resets: usize,
    wrong: Vec<String>,
}

fn tally(backend: &ScriptedBackend, results: &[(ChatRequest, Outcome)]) -> Tally {
    let mut t = Tally::default();
    for (request, o) in results {
        t.resets += o.resets;
        let answer = backend.answer(request);
        match &o.fault {
            None if o.finish == Some(FinishReason::Stop) && o.text == answer => t.whole += 1,
            Some(Fault::HistoryLost) if o.finish.is_none() && answer.starts_with(&o.text) => {
                t.history_lost += 1;
            }
            _ => t.wrong.push(format!(
                "{}: fault {:?}, finish {:?}, {} resets, {} of {} chars{}: {:?}",
                request.key,
                o.fault,
                o.finish,
                o.resets,
                o.text.len(),
                answer.len(),
                if answer.starts_with(&o.text) {
                    " (a prefix of the answer)"
                } else {
                    " (NOT a prefix of the answer)"
                },
                o.text,
            )),
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cut_by_a_master_failover_end_whole_or_with_history_lost() {
    master_killed(Victim::MostStreams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_survive_the_failover_of_the_request_queues_master() {
    master_killed(Victim::QueueMaster).await;
}

/// Which master the test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The one serving the most of the answers' token streams.
    MostStreams,
    /// The one serving the request queue (the worker's consumer group, its pending
    /// entries and the ones not taken yet), whatever token streams it also serves.
    QueueMaster,
}

async fn master_killed(choice: Victim) {
    // Blocks a few seconds: before any task of the test exists.
    let Some(mut cluster) = RedisCluster::start_or_skip() else {
        return;
    };
    // Every answer at once: all of them are cut by the kill.
    let p = pipeline(&cluster.url(), PREFIX, 64).await;
    assert!(
        p.gateway_client.is_cluster(),
        "{} did not give cluster clients",
        cluster.url()
    );
    let keys = p.gateway_client.keys().clone();
    let ended = Arc::new(AtomicUsize::new(0));

    let mut cut = batch(&p, "a", CUT, &ended).await;
    first_tokens(&mut cut.started, CUT, STEP).await;
    assert_eq!(
        ended.load(Ordering::SeqCst),
        0,
        "every answer is mid-way when the master dies"
    );

    // The kit's calls block for their loopback round trips: off the runtime's workers.
    let (victim, per_master, queue_on_victim, down) = tokio::task::block_in_place(|| {
        let mut streams: BTreeMap<u16, usize> = BTreeMap::new();
        for port in cluster.masters() {
            streams.insert(port, 0);
        }
        for i in 0..CUT {
            let stream = keys.token_stream(&request("a", i).key);
            *streams.entry(cluster.master_of(&stream)).or_default() += 1;
        }
        let queue_master =
            cluster.master_of(&keys.queue(&chatstream_redis::QueueConfig::default().name));
        let victim = match choice {
            Victim::MostStreams => {
                *streams
                    .iter()
                    .max_by_key(|&(_, n)| *n)
                    .expect("the cluster has masters")
                    .0
            }
            Victim::QueueMaster => queue_master,
        };
        let queue_on_victim = queue_master == victim;
        let down = Instant::now();
        cluster.kill(victim);
        (victim, streams, queue_on_victim, down)
    });

    // Only measured: the clients are not held back by it.
    if let Err(e) = cluster.wait_healthy_async(FAILOVER_LIMIT).await {
        panic!("the cluster did not recover from killing master {victim}: {e}");
    }
    let failover = down.elapsed();

    let mut after = batch(&p, "b", AFTER, &ended).await;
    let cut_results = std::mem::take(&mut cut.clients).join_all().await;
    let cut_done = down.elapsed();
    let after_results = std::mem::take(&mut after.clients).join_all().await;
    let before = tally(&p.backend, &cut_results);
    let later = tally(&p.backend, &after_results);
    eprintln!(
        "cluster failover: killed master {victim} (serving {} of {CUT} streams; per \
         master {per_master:?}; request queue {}); healthy {:.1} s after the kill; {CUT} \
         cut: {} whole, {} history lost, {} resets, {} other; the last ended {:.1} s \
         after the kill; {AFTER} later ({} failed submits retried): {} whole, {} history \
         lost, {} resets, {} other; worker {:?}",
        per_master[&victim],
        if queue_on_victim {
            "there too"
        } else {
            "elsewhere"
        },
        failover.as_secs_f64(),
        before.whole,
        before.history_lost,
        before.resets,
        before.wrong.len(),
        cut_done.as_secs_f64(),
        after.failed_submits.len(),
        later.whole,
        later.history_lost,
        later.resets,
        later.wrong.len(),
        p.worker.stats(),
    );
    if !after.failed_submits.is_empty() {
        eprintln!(
            "submits after the failover that failed: {:?}",
            after.failed_submits
        );
    }
    assert!(
        before.wrong.is_empty() && later.wrong.is_empty(),
        "neither whole nor history lost:\n{}",
        before
            .wrong
            .iter()
            .chain(&later.wrong)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(before.whole + before.history_lost, CUT);
    assert_eq!(later.whole + later.history_lost, AFTER);
    p.worker.shutdown().await;
}
