//! The response store against a real Redis (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`): what one gateway instance stores, another reads.

use std::time::Duration;

use chatstream_core::{
    ChatMessage, FinishReason, ResponseHeader, ResponseOutcome, ResponseRecord, ResponseStatus,
    ResponseStore, Usage,
};
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_redis::{RedisClient, RedisResponseStore, DEFAULT_RESPONSE_TTL};
use redis::AsyncCommands;

fn record(id: &str) -> ResponseRecord {
    ResponseRecord {
        header: ResponseHeader {
            id: id.into(),
            created_at: 1_700_000_000,
            model: "m".into(),
            background: true,
            temperature: Some(0.7),
            ..Default::default()
        },
        owner: Some("alice".into()),
        input_items: vec![serde_json::json!({"id": "msg_a", "type": "message"})],
        context: vec![ChatMessage::user("hi")],
        outcome: None,
    }
}

fn outcome(text: &str) -> ResponseOutcome {
    ResponseOutcome {
        status: ResponseStatus::Cancelled,
        text: text.into(),
        usage: Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        }),
        finish_reason: FinishReason::Cancelled,
        error: None,
    }
}

#[tokio::test]
async fn one_instance_stores_and_another_reads_finishes_and_deletes() {
    let Some(client) = connect_or_skip("responses").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let other = RedisClient::connect(&redis_url(), client.keys().prefix())
        .await
        .expect("second client");
    let a = RedisResponseStore::new(client.clone(), DEFAULT_RESPONSE_TTL);
    let b = RedisResponseStore::new(other, DEFAULT_RESPONSE_TTL);
    let id = "resp_{1}: x*";
    a.create(&record(id)).await.expect("create");
    let got = b.get(id).await.expect("get").expect("stored");
    assert_eq!(got, record(id));
    assert_eq!(got.status(), ResponseStatus::Queued);

    assert!(b.finish(id, &outcome("Par")).await.expect("finish"));
    assert!(!a.finish(id, &outcome("other")).await.expect("finish"));
    let got = a.get(id).await.expect("get").expect("stored");
    assert_eq!(got.outcome, Some(outcome("Par")));
    assert_eq!(got.status(), ResponseStatus::Cancelled);

    assert!(a.delete(id).await.expect("delete"));
    assert!(!b.delete(id).await.expect("delete"));
    assert!(!b.finish(id, &outcome("late")).await.expect("finish"));
    assert_eq!(b.get(id).await.expect("get"), None);
    assert_eq!(a.get("resp_unknown").await.expect("get"), None);
}

#[tokio::test]
async fn both_keys_expire_with_the_record() {
    let Some(client) = connect_or_skip("responses-ttl").await else {
        return;
    };
    let _guard = PrefixGuard::new(&client);
    let store = RedisResponseStore::new(client.clone(), Duration::from_secs(90));
    store.create(&record("r1")).await.expect("create");
    store.finish("r1", &outcome("a")).await.expect("finish");
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
