//! Everything the Redis adapter offers, on a real Redis Cluster (3 masters, 3 replicas): the
//! conformance suite (request queue, token bus, cancel channel), the conversation-store and
//! response-store suites, publishes and reads that span every master, and a stream whose
//! slot migrates to another master mid-answer (`MOVED`/`ASK`).
//!
//! The suites run on the cluster named by `CHATSTREAM_REDIS_CLUSTER_URL` (`.ci/run` starts
//! one with `ops/redis-cluster.sh start DIR`, which prints the URL); the migration test
//! starts a cluster of its own, as it reshapes it. Skipped with a line when the variable is
//! unset or `redis-server` is missing, unless `CHATSTREAM_REQUIRE_SERVICES=1`, where they
//! fail. A master killed mid-answer is in `cluster_failover.rs`.

use std::collections::HashSet;
use std::time::Duration;

use chatstream_core::{
    Destination, Error, FinishReason, SessionFeed, StreamEvent, StreamKey, TokenEnvelope,
    TokenSink, TokenSource,
};
use chatstream_redis::testkit::cluster::RedisCluster;
use chatstream_redis::testkit::{connect_to_or_skip, PrefixGuard, Target};
use chatstream_redis::{
    BusConfig, RedisClient, RedisSessionFeed, RedisTokenSink, RedisTokenSource,
};
use futures::StreamExt;

mod conformance {
    chatstream_core::conformance_tests!(chatstream_redis::testkit::RedisHarness::connect_cluster());
}

mod store {
    chatstream_core::store_conformance_tests!(
        chatstream_redis::testkit::RedisStoreHarness::connect_to_or_skip(
            chatstream_redis::testkit::Target::Cluster
        )
    );
}

mod responses {
    chatstream_core::response_store_conformance_tests!(
        chatstream_redis::testkit::RedisResponseStoreHarness::connect_to_or_skip(
            chatstream_redis::testkit::Target::Cluster
        )
    );
}

const WAIT: Duration = Duration::from_secs(15);

fn config() -> BusConfig {
    BusConfig {
        block: Duration::from_millis(500),
        ..BusConfig::default()
    }
}

/// `n` tokens then End.
fn answer(key: &StreamKey, n: u64) -> Vec<TokenEnvelope> {
    let base = TokenEnvelope::seq_base(1);
    let mut out: Vec<_> = (0..n)
        .map(|i| {
            TokenEnvelope::new(
                key.clone(),
                1,
                base + i,
                StreamEvent::token(format!("t{i} ")),
            )
        })
        .collect();
    out.push(TokenEnvelope::new(
        key.clone(),
        1,
        base + n,
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    ));
    out
}

/// The slot owner of every key, asked of a node with `CLUSTER SHARDS`-free means:
/// `CLUSTER KEYSLOT` then `CLUSTER SLOTS`.
async fn owners(client: &RedisClient, keys: &[String]) -> HashSet<(String, i64)> {
    let mut con = client.connection();
    let slots: Vec<(i64, i64, (String, i64))> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<redis::Value>>(&mut con)
        .await
        .expect("CLUSTER SLOTS")
        .into_iter()
        .map(|range| {
            let redis::Value::Array(parts) = range else {
                panic!("a slot range: {range:?}")
            };
            let start: i64 = redis::from_redis_value(&parts[0]).expect("start");
            let end: i64 = redis::from_redis_value(&parts[1]).expect("end");
            let master: (String, i64) = match &parts[2] {
                redis::Value::Array(m) => (
                    redis::from_redis_value(&m[0]).expect("host"),
                    redis::from_redis_value(&m[1]).expect("port"),
                ),
                other => panic!("a master: {other:?}"),
            };
            (start, end, master)
        })
        .collect();
    let mut out = HashSet::new();
    for key in keys {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("CLUSTER KEYSLOT");
        let (_, _, master) = slots
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&slot))
            .expect("every slot is served");
        out.insert(master.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_spanning_every_master_reaches_every_subscriber_in_order() {
    let Some(client) = connect_to_or_skip(Target::Cluster, "spread").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let sink = RedisTokenSink::new(client.clone(), config())
        .await
        .expect("sink");
    let source = RedisTokenSource::new(client.clone(), config());
    let answers: Vec<Vec<TokenEnvelope>> = (0..40)
        .map(|i| answer(&StreamKey::new(format!("s{i}"), format!("m{i}")), 5))
        .collect();
    let stream_keys: Vec<String> = answers
        .iter()
        .map(|a| client.keys().token_stream(&a[0].key))
        .collect();
    assert_eq!(
        owners(&client, &stream_keys).await.len(),
        3,
        "the streams live on all three masters"
    );
    let mut readers = Vec::new();
    for a in &answers {
        let stream = source.subscribe(&a[0].key, None).await.expect("subscribe");
        readers.push(tokio::spawn(async move {
            tokio::time::timeout(
                WAIT,
                stream.map(|r| r.expect("envelope")).collect::<Vec<_>>(),
            )
            .await
            .expect("stream did not end")
        }));
    }
    // Interleaved, a token of every stream per publish: each publish spans every slot.
    for i in 0..6 {
        let batch: Vec<TokenEnvelope> = answers.iter().map(|a| a[i].clone()).collect();
        sink.publish(&Destination::default(), &batch)
            .await
            .expect("publish");
    }
    for (reader, a) in readers.into_iter().zip(&answers) {
        assert_eq!(&reader.await.expect("reader"), a, "stream {}", a[0].key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_feed_works_on_a_cluster() {
    let Some(client) = connect_to_or_skip(Target::Cluster, "feed").await else {
        return;
    };
    let feed = RedisSessionFeed::new(client.clone());
    let mut news = feed.announcements().await.expect("subscribe");
    let key = StreamKey::new("feed-s", "feed-m");
    // Classic PUBLISH reaches every node's subscribers: the announcing and the listening
    // connection need not be on the same node.
    feed.announce(&key).await.expect("announce");
    let got = tokio::time::timeout(WAIT, news.next())
        .await
        .expect("no announcement")
        .expect("the feed ended");
    assert_eq!(got, key);
}

/// Runs `CLUSTER …` on the node at `port`.
fn node_cmd(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con)
}

/// Moves `slot` from the master on `from` to the one on `to`, the way `redis-cli --cluster
/// reshard` does: IMPORTING / MIGRATING, `MIGRATE` of its keys, then the new owner on
/// every master.
fn migrate_slot(cluster: &RedisCluster, slot: u16, from: u16, to: u16) {
    let id = |port| -> String {
        redis::from_redis_value(&node_cmd(port, &["CLUSTER", "MYID"]).expect("MYID")).expect("id")
    };
    let (from_id, to_id) = (id(from), id(to));
    let slot = slot.to_string();
    node_cmd(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).expect("IMPORTING");
    node_cmd(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).expect("MIGRATING");
    loop {
        let keys: Vec<String> = redis::from_redis_value(
            &node_cmd(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]).expect("GETKEYSINSLOT"),
        )
        .expect("keys");
        if keys.is_empty() {
            break;
        }
        let port = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        node_cmd(from, &args).expect("MIGRATE");
    }
    for master in cluster.masters() {
        node_cmd(master, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).expect("SETSLOT NODE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_slot_moves_to_another_master_mid_answer_arrives_whole() {
    let Some(cluster) = RedisCluster::start_or_skip() else {
        return;
    };
    let client = RedisClient::connect(&cluster.url(), "migrate:")
        .await
        .expect("cluster client");
    assert!(client.is_cluster());
    let sink = RedisTokenSink::new(client.clone(), config())
        .await
        .expect("sink");
    let source = RedisTokenSource::new(client.clone(), config());
    let key = StreamKey::new("moving", "answer");
    let all = answer(&key, 30);
    let stream_key = client.keys().token_stream(&key);
    let slot: u16 = redis::from_redis_value(
        &node_cmd(cluster.masters()[0], &["CLUSTER", "KEYSLOT", &stream_key]).expect("KEYSLOT"),
    )
    .expect("slot");
    let from = cluster.master_of(&stream_key);
    let to = *cluster
        .masters()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");

    let mut stream = source.subscribe(&key, None).await.expect("subscribe");
    let mut seen = Vec::new();
    sink.publish(&Destination::default(), &all[..10])
        .await
        .expect("publish before");
    for _ in 0..10 {
        seen.push(stream.next().await.expect("item").expect("envelope"));
    }
    let migration = tokio::task::spawn_blocking(move || {
        migrate_slot(&cluster, slot, from, to);
        cluster
    });
    // Published while the slot moves (ASK while it is half-way), then after (MOVED).
    for env in &all[10..20] {
        sink.publish(&Destination::default(), std::slice::from_ref(env))
            .await
            .expect("publish during the move");
    }
    let cluster = migration.await.expect("migration");
    assert_eq!(cluster.master_of(&stream_key), to, "the slot moved");
    sink.publish(&Destination::default(), &all[20..])
        .await
        .expect("publish after the move");
    let rest: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("hung after the move");
    for item in rest {
        seen.push(item.unwrap_or_else(|e: Error| panic!("an error after the move: {e}")));
    }
    assert_eq!(seen, all);
    // A late reader gets the whole answer from the new master.
    let replay: Vec<_> = tokio::time::timeout(
        WAIT,
        source
            .subscribe(&key, None)
            .await
            .expect("subscribe again")
            .map(|r| r.expect("envelope"))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("hung");
    assert_eq!(replay, all);
}
