//! The response store against a real Redis (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`): the response-store conformance suite (what one gateway
//! instance stores, another reads), and the Redis-specific key expiry.

use std::time::Duration;

use chatstream_core::testkit::response_checks::{sample_outcome, sample_record};
use chatstream_core::ResponseStore;
use chatstream_redis::testkit::{connect_or_skip, PrefixGuard};
use chatstream_redis::RedisResponseStore;
use redis::AsyncCommands;

chatstream_core::response_store_conformance_tests!(
    chatstream_redis::testkit::RedisResponseStoreHarness::connect_or_skip()
);

#[tokio::test]
async fn both_keys_expire_with_the_record() {
    let Some(client) = connect_or_skip("responses-ttl").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let store = RedisResponseStore::new(client.clone(), Duration::from_secs(90));
    store
        .create(&sample_record("r1", Some("alice")))
        .await
        .expect("create");
    store
        .finish("r1", &sample_outcome("a"))
        .await
        .expect("finish");
    let prefix = client.keys().prefix().to_owned();
    let mut conn = client.connection();
    for key in [
        format!("{prefix}{{resp:r1}}"),
        format!("{prefix}{{resp:r1}}:outcome"),
    ] {
        let ttl: i64 = conn.ttl(&key).await.expect("ttl");
        assert!((1..=90).contains(&ttl), "{key}: {ttl}");
    }
}
