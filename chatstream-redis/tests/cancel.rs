//! The pub/sub cancel channel and session feed against a real Redis (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`).

use std::time::Duration;

use chatstream_core::{CancelChannel, StreamKey};
use chatstream_redis::testkit::{connect_or_skip, PrefixGuard};
use chatstream_redis::RedisCancelChannel;
use futures::StreamExt;

#[tokio::test]
async fn every_listener_of_a_prefix_gets_every_cancel_and_no_other() {
    let Some(client) = connect_or_skip("cancel").await else {
        return;
    };
    let Some(other) = connect_or_skip("cancel-other").await else {
        return;
    };
    let (_g1, _g2) = (PrefixGuard::new(&client), PrefixGuard::new(&other));
    let channel = RedisCancelChannel::new(client.clone());
    let mut a = channel.cancellations().await.unwrap();
    let mut b = RedisCancelChannel::new(client)
        .cancellations()
        .await
        .unwrap();
    let mut elsewhere = RedisCancelChannel::new(other)
        .cancellations()
        .await
        .unwrap();
    let key = StreamKey::new("s:1", "m\"1");
    channel.cancel(&key).await.unwrap();
    for listener in [&mut a, &mut b] {
        let got = tokio::time::timeout(Duration::from_secs(5), listener.next()).await;
        assert_eq!(got.ok().flatten(), Some(key.clone()));
    }
    let crossed = tokio::time::timeout(Duration::from_millis(200), elsewhere.next()).await;
    assert!(crossed.is_err(), "a cancel reached another prefix");
}

#[tokio::test]
async fn session_news_reaches_every_gateway_of_the_prefix_and_not_the_cancel_listeners() {
    use chatstream_core::SessionFeed;
    use chatstream_redis::RedisSessionFeed;

    let Some(client) = connect_or_skip("feed").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let feed = RedisSessionFeed::new(client.clone());
    let mut gateway_a = feed.announcements().await.unwrap();
    let mut gateway_b = RedisSessionFeed::new(client.clone())
        .announcements()
        .await
        .unwrap();
    let mut cancels = RedisCancelChannel::new(client)
        .cancellations()
        .await
        .unwrap();
    let key = StreamKey::new("channel 1", "m-1");
    feed.announce(&key).await.unwrap();
    for gateway in [&mut gateway_a, &mut gateway_b] {
        let got = tokio::time::timeout(Duration::from_secs(5), gateway.next()).await;
        assert_eq!(got.ok().flatten(), Some(key.clone()));
    }
    let crossed = tokio::time::timeout(Duration::from_millis(200), cancels.next()).await;
    assert!(crossed.is_err(), "news of a stream arrived as a cancel");
}
