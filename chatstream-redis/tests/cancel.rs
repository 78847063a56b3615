//! The pub/sub cancel channel against a real Redis (skipped when unreachable, unless
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
