//! The stream registry against a real Redis (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`): what one gateway instance records, another reads.

use std::time::Duration;

use chatstream_core::{StreamKey, StreamRecord, StreamRegistry};
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_redis::{RedisClient, RedisStreamRegistry, DEFAULT_REGISTRY_TTL};
use redis::AsyncCommands;

#[tokio::test]
async fn one_instance_records_and_another_finds_owner_and_latest() {
    let Some(client) = connect_or_skip("registry").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    // Two instances: two clients of the same Redis and prefix.
    let other = RedisClient::connect(&redis_url(), client.keys().prefix())
        .await
        .expect("second client");
    let a = RedisStreamRegistry::new(client.clone(), DEFAULT_REGISTRY_TTL);
    let b = RedisStreamRegistry::new(other, DEFAULT_REGISTRY_TTL);
    // Ids with the characters keys must not be confused by.
    let first = StreamKey::new("chat {1}:x", "m*1");
    let second = StreamKey::new("chat {1}:x", "m 2");
    a.record(&first, Some("alice")).await.expect("record");
    a.record(&second, None).await.expect("record");
    assert_eq!(
        b.lookup(&first).await.expect("lookup"),
        Some(StreamRecord::new(first.clone(), Some("alice".into())))
    );
    assert_eq!(
        b.lookup(&second).await.expect("lookup"),
        Some(StreamRecord::new(second.clone(), None))
    );
    assert_eq!(b.latest("chat {1}:x").await.expect("latest"), Some(second));
    assert_eq!(b.latest("chat {1}").await.expect("latest"), None);
    assert_eq!(
        b.lookup(&StreamKey::new("chat {1}:x", "m"))
            .await
            .expect("lookup"),
        None
    );
}

#[tokio::test]
async fn records_expire_after_their_ttl() {
    let Some(client) = connect_or_skip("registry-ttl").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let r = RedisStreamRegistry::new(client.clone(), Duration::from_secs(90));
    let key = StreamKey::new("s", "m");
    r.record(&key, Some("alice")).await.expect("record");
    let mut keys: Vec<String> = client
        .connection()
        .keys(format!("{}*", client.keys().prefix()))
        .await
        .expect("KEYS");
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in keys {
        let ttl: i64 = client.connection().ttl(&k).await.expect("TTL");
        assert!((1..=90).contains(&ttl), "{k} expires in {ttl} s");
    }
}
