//! The Redis Streams request queue against a real Redis: crashed consumers' requests are
//! claimed, live ones are not, poison goes to the dead-letter stream with its reason
//! (skipped when Redis is unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`).

use std::time::Duration;

use chatstream_core::{ChatRequest, Delivery, MessageSource, RequestSink, StreamKey};
use chatstream_redis::testkit::{connect_or_skip, PrefixGuard};
use chatstream_redis::{QueueConfig, RedisClient, RedisRequestSink, RedisRequestSource};
use redis::AsyncCommands;

const WAIT: Duration = Duration::from_secs(10);

fn config(claim_idle_ms: u64, delivery_limit: u32) -> QueueConfig {
    QueueConfig {
        claim_idle: Duration::from_millis(claim_idle_ms),
        block: Duration::from_millis(200),
        delivery_limit,
        ..QueueConfig::default()
    }
}

async fn setup(
    tag: &str,
    cfg: &QueueConfig,
) -> Option<(RedisClient, RedisRequestSink, PrefixGuard)> {
    let client = connect_or_skip(tag).await?;
    let guard = PrefixGuard::new(&client);
    Some((client.clone(), RedisRequestSink::new(client, cfg), guard))
}

async fn source(client: &RedisClient, cfg: &QueueConfig) -> RedisRequestSource {
    RedisRequestSource::new(client.clone(), cfg.clone())
        .await
        .expect("source")
}

async fn recv(source: &RedisRequestSource) -> Delivery {
    tokio::time::timeout(WAIT, source.recv())
        .await
        .expect("no delivery in time")
        .expect("recv")
        .expect("open")
}

fn request(tag: &str) -> ChatRequest {
    ChatRequest::new(
        StreamKey::new(format!("s-{tag}"), format!("m-{tag}")),
        "hello",
    )
}

#[tokio::test]
async fn a_crashed_consumers_request_is_claimed_with_a_higher_attempt() {
    let cfg = config(300, 5);
    let Some((client, sink, _g)) = setup("claim", &cfg).await else {
        return;
    };
    let rescuer = source(&client, &cfg).await; // creates the group
    sink.submit(&request("c")).await.unwrap();
    // A worker in another process reads it and dies without settling.
    let stream = client.keys().queue(&cfg.name);
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&cfg.group)
        .arg("crashed-worker")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut client.connection())
        .await
        .unwrap();
    let d = recv(&rescuer).await;
    assert_eq!(d.request.as_ref().unwrap().key, request("c").key);
    assert_eq!(d.attempt, 2, "a claimed request is a redelivery");
    d.acker.ack().await.unwrap();
    assert_eq!(sink.len().await.unwrap(), 0, "acked entries are deleted");
}

#[tokio::test]
async fn a_live_consumers_long_work_is_not_claimed() {
    let cfg = config(300, 5);
    let Some((client, sink, _g)) = setup("live", &cfg).await else {
        return;
    };
    let busy = source(&client, &cfg).await;
    let idle = source(&client, &cfg).await;
    sink.submit(&request("l")).await.unwrap();
    let d = recv(&busy).await;
    assert_eq!(d.attempt, 1);
    // Three claim periods pass while the first worker still generates.
    let stolen = tokio::time::timeout(Duration::from_millis(1200), idle.recv()).await;
    assert!(
        stolen.is_err(),
        "the heartbeat must keep a request being worked on: {stolen:?}"
    );
    d.acker.ack().await.unwrap();
    let after = tokio::time::timeout(Duration::from_millis(500), idle.recv()).await;
    assert!(after.is_err(), "an acked request came back");
}

#[tokio::test]
async fn nack_requeues_with_a_higher_attempt_and_the_limit_dead_letters() {
    let cfg = config(60_000, 3);
    let Some((client, sink, _g)) = setup("limit", &cfg).await else {
        return;
    };
    let src = source(&client, &cfg).await;
    sink.submit(&request("n")).await.unwrap();
    let d = recv(&src).await;
    assert_eq!(d.attempt, 1);
    d.acker.nack(true).await.unwrap();
    let d = recv(&src).await;
    assert_eq!(d.attempt, 2);
    drop(d); // dropped unsettled: requeued at once
    let d = recv(&src).await;
    assert_eq!(d.attempt, 3);
    d.acker.nack(true).await.unwrap(); // third attempt failed too: limit reached
    let empty = tokio::time::timeout(Duration::from_millis(500), src.recv()).await;
    assert!(
        empty.is_err(),
        "a request past its delivery limit was delivered again"
    );
    let dead = sink.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "delivery limit of 3 reached");
    assert_eq!(dead[0].deliveries, 3);
    let body: serde_json::Value = serde_json::from_slice(&dead[0].body).unwrap();
    assert_eq!(body["messageId"], "m-n");
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_stream_with_its_reason() {
    let cfg = config(60_000, 5);
    let Some((client, sink, _g)) = setup("poison", &cfg).await else {
        return;
    };
    let src = source(&client, &cfg).await;
    sink.submit_raw(b"{\"not\": \"a request\"").await.unwrap();
    let d = recv(&src).await;
    let reason = d
        .request
        .as_ref()
        .expect_err("garbage must not decode")
        .to_string();
    d.acker.dead_letter(&reason).await.unwrap();
    let dead = sink.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"{\"not\": \"a request\"");
    assert!(dead[0].reason.contains("decode"), "{}", dead[0].reason);
    assert_eq!(sink.len().await.unwrap(), 0);
    let dead_stream = client.keys().dead_letters(&cfg.name);
    let n: u64 = client.connection().xlen(dead_stream).await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn seed_004_bodies_decode_and_close_ends_recv() {
    let cfg = config(60_000, 5);
    let Some((client, sink, _g)) = setup("seed4", &cfg).await else {
        return;
    };
    let src = source(&client, &cfg).await;
    sink.submit_raw(br#"{"channel": "convex_id_12345", "message_id": "msg-1", "message": "Hi"}"#)
        .await
        .unwrap();
    let d = recv(&src).await;
    let r = d.request.as_ref().expect("seed 004 request");
    assert_eq!(
        (&*r.key.session_id, &*r.key.message_id),
        ("convex_id_12345", "msg-1")
    );
    d.acker.ack().await.unwrap();
    src.close();
    let r = tokio::time::timeout(WAIT, src.recv())
        .await
        .expect("recv after close hung");
    assert!(matches!(r, Ok(None)));
}
