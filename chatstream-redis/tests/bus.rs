//! The Redis Streams token bus against a real Redis: resume on another instance, history
//! lost after trimming or expiry, retried and superseded publishes, stream status (skipped
//! when Redis is unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`). Restarts of Redis
//! are in `aof_restart.rs`, on a server of its own.

use std::time::Duration;

use chatstream_core::{
    Destination, Error, FinishReason, StreamEvent, StreamKey, StreamStatus, TokenEnvelope,
    TokenSink, TokenSource,
};
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_redis::{BusConfig, RedisClient, RedisTokenSink, RedisTokenSource};
use futures::StreamExt;
use redis::AsyncCommands;

const WAIT: Duration = Duration::from_secs(10);

fn config() -> BusConfig {
    BusConfig {
        block: Duration::from_millis(300),
        ..BusConfig::default()
    }
}

fn key(tag: &str) -> StreamKey {
    StreamKey::new(format!("session:{tag}"), format!("msg/{tag}"))
}

/// `n` tokens then End, numbered from `seq_base(attempt)`.
fn answer(key: &StreamKey, attempt: u32, n: u64) -> Vec<TokenEnvelope> {
    let base = TokenEnvelope::seq_base(attempt);
    let mut out: Vec<_> = (0..n)
        .map(|i| {
            TokenEnvelope::new(
                key.clone(),
                attempt,
                base + i,
                StreamEvent::token(format!("t{i} ")),
            )
        })
        .collect();
    out.push(TokenEnvelope::new(
        key.clone(),
        attempt,
        base + n,
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    ));
    out
}

async fn setup(
    tag: &str,
    config: BusConfig,
) -> Option<(RedisClient, RedisTokenSink, RedisTokenSource, PrefixGuard)> {
    let client = connect_or_skip(tag).await?;
    let guard = PrefixGuard::new(&client);
    let sink = RedisTokenSink::new(client.clone(), config.clone())
        .await
        .expect("sink");
    let source = RedisTokenSource::new(client.clone(), config);
    Some((client, sink, source, guard))
}

async fn read_all(
    source: &RedisTokenSource,
    key: &StreamKey,
    after: Option<u64>,
) -> Vec<TokenEnvelope> {
    tokio::time::timeout(WAIT, async {
        source
            .subscribe(key, after)
            .await
            .expect("subscribe")
            .map(|r| r.expect("envelope"))
            .collect::<Vec<_>>()
            .await
    })
    .await
    .expect("stream did not end")
}

async fn subscribe_err(source: &RedisTokenSource, key: &StreamKey, after: Option<u64>) -> Error {
    match tokio::time::timeout(WAIT, source.subscribe(key, after))
        .await
        .expect("hung")
    {
        Err(e) => e,
        Ok(mut s) => match tokio::time::timeout(WAIT, s.next())
            .await
            .expect("hung on a gone stream")
        {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        },
    }
}

#[tokio::test]
async fn a_client_resumes_on_another_instance_with_exactly_the_rest() {
    let Some((client, sink, first, _g)) = setup("resume", config()).await else {
        return;
    };
    let all = answer(&key("r"), 1, 12);
    // Publish in two batches, the second after the first reader has started.
    sink.publish(&Destination::default(), &all[..5])
        .await
        .unwrap();
    let mut stream = first.subscribe(&all[0].key, None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next().await.expect("item").expect("envelope"));
    }
    drop(stream); // the client goes away mid-answer
    sink.publish(&Destination::default(), &all[5..])
        .await
        .unwrap();
    // Another gateway, on its own connection.
    let other = RedisClient::connect(&redis_url(), client.keys().prefix())
        .await
        .expect("second client");
    let second = RedisTokenSource::new(other, config());
    let rest = read_all(&second, &all[0].key, Some(seen.last().expect("some").seq)).await;
    seen.extend(rest);
    assert_eq!(
        seen, all,
        "the resumed client must see every envelope exactly once"
    );
}

#[tokio::test]
async fn a_subscription_waits_for_a_stream_not_yet_started() {
    let Some((_c, sink, source, _g)) = setup("wait", config()).await else {
        return;
    };
    let all = answer(&key("w"), 1, 5);
    let reader = {
        let source = source.clone();
        let key = all[0].key.clone();
        tokio::spawn(async move { read_all(&source, &key, None).await })
    };
    // Give the reader a moment to block, across at least one XREAD timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for env in &all {
        sink.publish(&Destination::default(), std::slice::from_ref(env))
            .await
            .unwrap();
    }
    assert_eq!(reader.await.unwrap(), all);
}

#[tokio::test]
async fn retried_batches_are_not_duplicated_and_redeliveries_follow_in_order() {
    let Some((_c, sink, source, _g)) = setup("retry", config()).await else {
        return;
    };
    let k = key("x");
    let first = answer(&k, 1, 6);
    // Attempt 1 dies after 3 envelopes; the batch is retried once.
    sink.publish(&Destination::default(), &first[..3])
        .await
        .unwrap();
    sink.publish(&Destination::default(), &first[..3])
        .await
        .unwrap();
    let second = answer(&k, 2, 4);
    sink.publish(&Destination::default(), &second)
        .await
        .unwrap();
    // A zombie of attempt 1 publishes late: dropped without failing.
    sink.publish(&Destination::default(), &first[3..5])
        .await
        .unwrap();
    let got = read_all(&source, &k, None).await;
    let expected: Vec<_> = first[..3].iter().chain(&second).cloned().collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn out_of_order_publishes_of_one_attempt_fail() {
    let Some((_c, sink, _s, _g)) = setup("order", config()).await else {
        return;
    };
    let all = answer(&key("o"), 1, 6);
    sink.publish(&Destination::default(), &all[3..5])
        .await
        .unwrap();
    let err = sink.publish(&Destination::default(), &all[..3]).await;
    assert!(err.is_err(), "a gap in one attempt must not pass silently");
}

#[tokio::test]
async fn history_trimmed_away_is_reported_lost() {
    let cfg = BusConfig {
        max_len: 10,
        ..config()
    };
    let Some((_c, sink, source, _g)) = setup("trim", cfg).await else {
        return;
    };
    let all = answer(&key("t"), 1, 40);
    for chunk in all.chunks(4) {
        sink.publish(&Destination::default(), chunk).await.unwrap();
    }
    let k = &all[0].key;
    assert!(matches!(
        subscribe_err(&source, k, Some(3)).await,
        Error::HistoryLost { after_seq: 3 }
    ));
    assert!(matches!(
        subscribe_err(&source, k, None).await,
        Error::HistoryLost { .. }
    ));
    // What is still held replays.
    assert_eq!(read_all(&source, k, Some(35)).await, all[36..].to_vec());
}

#[tokio::test]
async fn expiry_after_end_and_expired_streams_are_reported_lost() {
    let cfg = BusConfig {
        retention_after_end: Duration::from_secs(60),
        idle_expiry: Duration::from_secs(600),
        tombstone: Duration::from_secs(300),
        ..config()
    };
    let Some((client, sink, source, _g)) = setup("expire", cfg).await else {
        return;
    };
    let all = answer(&key("e"), 1, 4);
    let k = &all[0].key;
    let (stream, marker) = (client.keys().token_stream(k), client.keys().token_marker(k));
    let mut con = client.connection();
    sink.publish(&Destination::default(), &all[..2])
        .await
        .unwrap();
    let live: i64 = con.pttl(&stream).await.unwrap();
    assert!(
        live > 590_000,
        "an unfinished stream carries the safety expiry: {live}"
    );
    sink.publish(&Destination::default(), &all[2..])
        .await
        .unwrap();
    let ended: i64 = con.pttl(&stream).await.unwrap();
    let mark: i64 = con.pttl(&marker).await.unwrap();
    assert!(
        ended <= 60_000 && ended > 50_000,
        "End shortens the expiry: {ended}"
    );
    assert!(
        mark > ended + 250_000,
        "the marker outlives the stream: {mark}"
    );
    // The stream expires (simulated): resumes fail clearly instead of waiting.
    let _: () = con.del(&stream).await.unwrap();
    assert!(matches!(
        subscribe_err(&source, k, Some(1)).await,
        Error::HistoryLost { after_seq: 1 }
    ));
    assert!(matches!(
        subscribe_err(&source, k, None).await,
        Error::HistoryLost { .. }
    ));
    // At the End, the stream is over rather than lost: the End again.
    assert_eq!(read_all(&source, k, Some(4)).await, all[4..].to_vec());
    // Even with the marker gone, a resume after a seq cannot wait for a stream that was.
    let _: () = con.del(&marker).await.unwrap();
    assert!(matches!(
        subscribe_err(&source, k, Some(1)).await,
        Error::HistoryLost { .. }
    ));
}

#[tokio::test]
async fn a_stream_that_expires_under_a_subscriber_ends_with_history_lost() {
    let Some((client, sink, source, _g)) = setup("gone", config()).await else {
        return;
    };
    let all = answer(&key("g"), 1, 6);
    sink.publish(&Destination::default(), &all[..3])
        .await
        .unwrap();
    let mut stream = source.subscribe(&all[0].key, None).await.unwrap();
    for _ in 0..3 {
        stream.next().await.expect("item").expect("envelope");
    }
    let _: () = client
        .connection()
        .del(client.keys().token_stream(&all[0].key))
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("hung on a vanished stream");
    assert!(
        matches!(next, Some(Err(Error::HistoryLost { after_seq: 2 }))),
        "{next:?}"
    );
}

/// Every node of [`redis_url`] (one server, or each node of a cluster), with a connection
/// to it and the ids of the connections named `name` there (`CLIENT LIST`).
async fn named_connections(name: &str) -> Vec<(redis::aio::MultiplexedConnection, String)> {
    let needle = format!("name={name} ");
    let mut out = Vec::new();
    for url in redis_url().split(',') {
        let mut con = redis::Client::open(url)
            .expect("node URL")
            .get_multiplexed_async_connection()
            .await
            .expect("node connection");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut con)
            .await
            .expect("CLIENT command");
        for id in list
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        {
            out.push((con.clone(), id.to_owned()));
        }
    }
    out
}

/// Kills this client's news connections, as a network cut or a server restart would.
async fn kill_news(client: &RedisClient) -> usize {
    let found = named_connections(&client.news_name()).await;
    for (mut con, id) in found.iter().cloned() {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut con)
            .await
            .expect("CLIENT command");
    }
    found.len()
}

/// Waits (up to [`WAIT`]) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Long enough that the look at quiet streams cannot serve anything within [`WAIT`]: only
/// the news can.
fn news_only() -> BusConfig {
    BusConfig {
        block: Duration::from_secs(60),
        ..BusConfig::default()
    }
}

#[tokio::test]
async fn a_subscription_survives_a_lost_news_connection_and_misses_nothing_published_meanwhile() {
    let Some((client, sink, source, _g)) = setup("cut", news_only()).await else {
        return;
    };
    let all = answer(&key("c"), 1, 6);
    sink.publish(&Destination::default(), &all[..3])
        .await
        .unwrap();
    let mut stream = source.subscribe(&all[0].key, None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(stream.next().await.expect("item").expect("envelope"));
    }
    eventually("the news connection is up", || async {
        source.news_connections() == 1
    })
    .await;
    eventually("the news connection is listed", || async {
        kill_news(&client).await > 0
    })
    .await;
    // Published while the news connection may be down: its news can be lost.
    sink.publish(&Destination::default(), &all[3..])
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(
        WAIT,
        stream
            .map(|r| r.expect("envelope after reconnect"))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("hung after the news connection was cut");
    seen.extend(rest);
    assert_eq!(seen, all);
    assert_eq!(source.news_connections(), 2, "reconnected once");
}

#[tokio::test]
async fn hundreds_of_subscriptions_take_one_connection_and_each_gets_its_own_envelopes() {
    let Some((client, sink, source, _g)) = setup("many", news_only()).await else {
        return;
    };
    const STREAMS: usize = 300;
    let answers: Vec<Vec<TokenEnvelope>> = (0..STREAMS)
        .map(|i| answer(&key(&format!("m{i}")), 1, 1 + (i as u64 % 7)))
        .collect();
    // Half the streams have begun before their subscriber comes, half begin after.
    for a in answers.iter().step_by(2) {
        sink.publish(&Destination::default(), &a[..1])
            .await
            .unwrap();
    }
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
    assert_eq!(source.followed_streams(), STREAMS);
    let per_reader = BusConfig::default().streams_per_reader;
    assert_eq!(source.readers(), STREAMS.div_ceil(per_reader));
    // Reads go on the shared connection: the source adds its news connection only.
    eventually("the news connection is up", || async {
        named_connections(&client.news_name()).await.len() == 1
    })
    .await;
    assert!(named_connections(&client.reader_name()).await.is_empty());
    for (i, a) in answers.iter().enumerate() {
        let from = if i % 2 == 0 { 1 } else { 0 };
        sink.publish(&Destination::default(), &a[from..])
            .await
            .unwrap();
    }
    for (reader, a) in readers.into_iter().zip(&answers) {
        assert_eq!(&reader.await.unwrap(), a, "stream {}", a[0].key);
    }
    eventually("readers end with their last stream", || async {
        source.readers() == 0
    })
    .await;
    assert_eq!(source.followed_streams(), 0);
}

#[tokio::test]
async fn each_publish_is_read_at_once_through_the_news() {
    let Some((_client, sink, source, _g)) = setup("news", news_only()).await else {
        return;
    };
    let waiting = answer(&key("waiting"), 1, 2);
    let newcomer = answer(&key("newcomer"), 1, 3);
    let mut first = source.subscribe(&waiting[0].key, None).await.unwrap();
    sink.publish(&Destination::default(), &newcomer)
        .await
        .unwrap();
    assert_eq!(read_all(&source, &newcomer[0].key, None).await, newcomer);
    assert_eq!(source.readers(), 1, "one reader follows both");
    // The stream that was waiting gets each envelope as it is published, well before the
    // minute after which a quiet stream is read anyway.
    for env in &waiting {
        sink.publish(&Destination::default(), std::slice::from_ref(env))
            .await
            .unwrap();
        let got = tokio::time::timeout(WAIT, first.next())
            .await
            .expect("the first subscription hung");
        assert_eq!(got.expect("item").expect("envelope"), *env);
    }
}

#[tokio::test]
async fn news_of_streams_nobody_follows_is_ignored() {
    let Some((client, sink, source, _g)) = setup("noise", news_only()).await else {
        return;
    };
    let mine = answer(&key("mine"), 1, 2);
    let mut stream = source.subscribe(&mine[0].key, None).await.unwrap();
    // A malformed message and news of other streams on the channel change nothing.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(client.keys().news_channel())
        .arg(b"\xff\xfe\nnot a key\n".as_slice())
        .query_async(&mut client.connection())
        .await
        .unwrap();
    sink.publish(&Destination::default(), &answer(&key("other"), 1, 3))
        .await
        .unwrap();
    sink.publish(&Destination::default(), &mine).await.unwrap();
    for env in &mine {
        let got = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("hung");
        assert_eq!(got.expect("item").expect("envelope"), *env);
    }
}

#[tokio::test]
async fn dropped_subscribers_are_forgotten_at_once() {
    let Some((_client, _sink, source, _g)) = setup("drop", news_only()).await else {
        return;
    };
    let mut streams = Vec::new();
    for i in 0..10 {
        streams.push(
            source
                .subscribe(&key(&format!("d{i}")), None)
                .await
                .unwrap(),
        );
    }
    assert_eq!(source.followed_streams(), 10);
    // Clients go away while nothing is published; the reader forgets them now.
    streams.truncate(4);
    eventually("the reader follows the 4 left", || async {
        source.followed_streams() == 4
    })
    .await;
    drop(streams);
    eventually("the reader ends", || async { source.readers() == 0 }).await;
    assert_eq!(source.followed_streams(), 0);
}

#[tokio::test]
async fn a_slow_subscriber_does_not_hold_up_the_other_streams_of_its_reader() {
    let cfg = BusConfig {
        read_count: 4,
        ..config()
    };
    let Some((_c, sink, source, _g)) = setup("slow", cfg).await else {
        return;
    };
    let slow = answer(&key("slow"), 1, 60);
    let fast = answer(&key("fast"), 1, 60);
    let mut slow_stream = source.subscribe(&slow[0].key, None).await.unwrap();
    sink.publish(&Destination::default(), &slow).await.unwrap();
    // The slow subscriber reads nothing for now; the other stream flows to its End.
    sink.publish(&Destination::default(), &fast).await.unwrap();
    assert_eq!(read_all(&source, &fast[0].key, None).await, fast);
    assert_eq!(source.readers(), 1, "both streams on one reader");
    // Once it reads, it gets everything, in order, nothing skipped.
    let mut got = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, slow_stream.next())
        .await
        .expect("the slow subscription hung")
    {
        got.push(item.expect("envelope"));
    }
    assert_eq!(got, slow);
}

#[tokio::test]
async fn status_says_not_found_open_or_ended_in_one_round_trip() {
    let Some((client, sink, source, _g)) = setup("status", config()).await else {
        return;
    };
    let k = key("st");
    assert_eq!(source.status(&k).await.unwrap(), StreamStatus::NotFound);
    let all = answer(&k, 1, 3);
    sink.publish(&Destination::default(), &all[..2])
        .await
        .unwrap();
    assert_eq!(source.status(&k).await.unwrap(), StreamStatus::Open);
    sink.publish(&Destination::default(), &all[2..])
        .await
        .unwrap();
    assert_eq!(
        source.status(&k).await.unwrap(),
        StreamStatus::Ended {
            finish_reason: FinishReason::Stop
        }
    );
    // Expired with its End kept in the marker: still ended.
    let _: () = client
        .connection()
        .del(client.keys().token_stream(&k))
        .await
        .unwrap();
    assert_eq!(
        source.status(&k).await.unwrap(),
        StreamStatus::Ended {
            finish_reason: FinishReason::Stop
        }
    );
    // A cancelled stream says so.
    let c = key("cancelled");
    let mut stopped = answer(&c, 1, 2);
    if let Some(end) = stopped.last_mut() {
        end.event = StreamEvent::End {
            finish_reason: FinishReason::Cancelled,
            usage: None,
        };
    }
    sink.publish(&Destination::default(), &stopped)
        .await
        .unwrap();
    assert_eq!(
        source.status(&c).await.unwrap(),
        StreamStatus::Ended {
            finish_reason: FinishReason::Cancelled
        }
    );
}

#[tokio::test]
async fn a_stream_that_begins_mid_attempt_reports_its_start_lost() {
    // What a worker leaves after Redis came back empty: it goes on publishing where it was.
    let Some((_c, sink, source, _g)) = setup("midway", config()).await else {
        return;
    };
    let all = answer(&key("mid"), 1, 8);
    let k = &all[0].key;
    sink.publish(&Destination::default(), &all[5..])
        .await
        .unwrap();
    assert!(
        matches!(
            subscribe_err(&source, k, None).await,
            Error::HistoryLost { .. }
        ),
        "an answer without its beginning must not pass for a whole one"
    );
    assert!(matches!(
        subscribe_err(&source, k, Some(3)).await,
        Error::HistoryLost { after_seq: 3 }
    ));
    // A client that had read up to seq 4 gets exactly the rest.
    assert_eq!(read_all(&source, k, Some(4)).await, all[5..].to_vec());
    // A later attempt starting a stream afresh is whole.
    let second = answer(&key("mid2"), 2, 3);
    sink.publish(&Destination::default(), &second)
        .await
        .unwrap();
    assert_eq!(read_all(&source, &second[0].key, None).await, second);
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_ends_only_its_own_subscription() {
    let Some((client, sink, source, _g)) = setup("wrongtype", config()).await else {
        return;
    };
    let bad = key("bad");
    let _: () = client
        .connection()
        .set(client.keys().token_stream(&bad), "not a stream")
        .await
        .unwrap();
    let good = answer(&key("good"), 1, 4);
    // The good stream is followed first, so the read that fails on the bad key has both.
    let good_stream = source.subscribe(&good[0].key, None).await.unwrap();
    let good_reader = tokio::spawn(async move {
        tokio::time::timeout(
            WAIT,
            good_stream
                .map(|r| r.expect("the good stream must not end with the bad key's error"))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("the good stream did not end")
    });
    let mut bad_stream = source.subscribe(&bad, None).await.unwrap();
    let failed = tokio::time::timeout(WAIT, bad_stream.next())
        .await
        .expect("the bad key's subscription hung");
    assert!(matches!(failed, Some(Err(_))), "{failed:?}");
    sink.publish(&Destination::default(), &good).await.unwrap();
    assert_eq!(good_reader.await.unwrap(), good);
}

#[tokio::test]
async fn a_hole_inside_an_attempt_ends_the_stream_with_history_lost_after_what_came_before() {
    // As after a cluster failover to a replica that had not received entry 3 yet: the
    // worker was told it was appended, and goes on with 4.
    let Some((_c, sink, source, _g)) = setup("hole", config()).await else {
        return;
    };
    let all = answer(&key("h"), 1, 6);
    sink.publish(&Destination::default(), &all[..3])
        .await
        .unwrap();
    let mut live = source.subscribe(&all[0].key, None).await.unwrap();
    for env in &all[..3] {
        let got = tokio::time::timeout(WAIT, live.next()).await.expect("hung");
        assert_eq!(got.expect("item").expect("envelope"), *env);
    }
    sink.publish(&Destination::default(), &all[4..])
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(WAIT, live.collect::<Vec<_>>())
        .await
        .expect("hung at the hole");
    assert!(
        matches!(rest.as_slice(), [Err(Error::HistoryLost { after_seq: 2 })]),
        "{rest:?}"
    );
    // A client reading from the start gets what is there up to the hole, then the same.
    let from_start: Vec<_> = tokio::time::timeout(
        WAIT,
        source
            .subscribe(&all[0].key, None)
            .await
            .unwrap()
            .collect::<Vec<_>>(),
    )
    .await
    .expect("hung");
    assert_eq!(from_start.len(), 4, "{from_start:?}");
    for (got, want) in from_start.iter().zip(&all[..3]) {
        assert_eq!(got.as_ref().expect("envelope"), want);
    }
    assert!(matches!(
        from_start[3],
        Err(Error::HistoryLost { after_seq: 2 })
    ));
}

#[tokio::test]
async fn a_retried_batch_in_the_middle_of_a_stream_is_appended_once() {
    // Batches in the middle of an attempt go as plain appends, without the script; one sent
    // again (its first try reached Redis, the reply did not) must not add anything twice.
    let Some((_c, sink, source, _g)) = setup("retry-mid", config()).await else {
        return;
    };
    let all = answer(&key("r"), 1, 8);
    sink.publish(&Destination::default(), &all[..2])
        .await
        .unwrap();
    for _ in 0..2 {
        sink.publish(&Destination::default(), &all[2..5])
            .await
            .unwrap();
    }
    // Partly new: 5 is there already, 6 and 7 are not.
    sink.publish(&Destination::default(), &all[5..6])
        .await
        .unwrap();
    sink.publish(&Destination::default(), &all[5..8])
        .await
        .unwrap();
    sink.publish(&Destination::default(), &all[8..])
        .await
        .unwrap();
    assert_eq!(read_all(&source, &all[0].key, None).await, all);
}
