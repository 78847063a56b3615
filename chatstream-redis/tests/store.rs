//! The conversation store against a real Redis (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`).

use std::time::Duration;

use chatstream_core::{ChatMessage, ConversationStore};
use chatstream_redis::testkit::{connect_or_skip, PrefixGuard};
use chatstream_redis::{RedisClient, RedisConversationStore};
use redis::AsyncCommands;

const DAY_MS: u64 = 86_400_000;
const EXPIRY: Duration = Duration::from_secs(7_776_000);

async fn store(tag: &str) -> Option<(RedisConversationStore, RedisClient, PrefixGuard)> {
    let client = connect_or_skip(tag).await?;
    let guard = PrefixGuard::new(&client);
    Some((
        RedisConversationStore::new(client.clone(), EXPIRY),
        client,
        guard,
    ))
}

async fn ttl(client: &RedisClient, key: &str) -> i64 {
    client.connection().ttl(key).await.expect("TTL")
}

async fn set_last_activity(client: &RedisClient, id: &str, ms: u64) {
    let key = client.keys().conversation_meta(id);
    let _: () = client
        .connection()
        .hset(key, "last_activity", ms)
        .await
        .expect("HSET");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test]
async fn channel_mapping_is_stable_and_its_expiry_slides() {
    let Some((store, client, _g)) = store("chan").await else {
        return;
    };
    let id = store
        .conversation_for_channel("convex_id_12345")
        .await
        .unwrap();
    assert!(id.starts_with("thread_"), "seed 004 style thread id: {id}");
    let chan = client.keys().channel("convex_id_12345");
    let meta = client.keys().conversation_meta(&id);
    // Let time pass (as far as Redis is concerned), then access again.
    let mut con = client.connection();
    let _: () = con.expire(&chan, 10).await.unwrap();
    let _: () = con.expire(&meta, 10).await.unwrap();
    assert_eq!(
        store
            .conversation_for_channel("convex_id_12345")
            .await
            .unwrap(),
        id
    );
    for key in [&chan, &meta] {
        let t = ttl(&client, key).await;
        assert!(
            t > 7_776_000 - 60,
            "{key}: expiry not refreshed on access (TTL {t})"
        );
    }
    assert_ne!(
        store
            .conversation_for_channel("another-channel")
            .await
            .unwrap(),
        id,
        "each channel has its own conversation"
    );
    // An expired mapping makes a new thread, as seed 004 documents.
    let _: () = con.del(&chan).await.unwrap();
    assert_ne!(
        store
            .conversation_for_channel("convex_id_12345")
            .await
            .unwrap(),
        id
    );
}

#[tokio::test]
async fn history_appends_in_order_with_metadata_and_slides_expiry() {
    let Some((store, client, _g)) = store("hist").await else {
        return;
    };
    let id = store.conversation_for_channel("c").await.unwrap();
    store
        .append(
            &id,
            &[ChatMessage::user("hi"), ChatMessage::assistant("hello")],
        )
        .await
        .unwrap();
    store
        .append(&id, &[ChatMessage::user("again")])
        .await
        .unwrap();
    let msgs = client.keys().conversation_messages(&id);
    let _: () = client.connection().expire(&msgs, 10).await.unwrap();
    let c = store.get(&id).await.unwrap().expect("stored");
    assert_eq!(
        c.messages,
        vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("again")
        ]
    );
    assert_eq!(c.meta.id, id);
    assert_eq!(c.meta.message_count, 3);
    assert!(c.meta.created_at_ms > 0 && c.meta.last_activity_ms >= c.meta.created_at_ms);
    assert!(
        ttl(&client, &msgs).await > 7_776_000 - 60,
        "get must slide the expiry"
    );
    assert!(store.get("no-such-thread").await.unwrap().is_none());
    // append creates a conversation that does not exist yet
    store
        .append("fresh", &[ChatMessage::user("x")])
        .await
        .unwrap();
    assert_eq!(
        store
            .get("fresh")
            .await
            .unwrap()
            .expect("created")
            .meta
            .message_count,
        1
    );
}

#[tokio::test]
async fn keys_share_a_hash_tag_per_conversation() {
    let Some((store, client, _g)) = store("keys").await else {
        return;
    };
    let id = store
        .conversation_for_channel("chan:with}odd{chars")
        .await
        .unwrap();
    store.append(&id, &[ChatMessage::user("hi")]).await.unwrap();
    let p = client.keys().prefix().to_owned();
    let mut con = client.connection();
    for key in [
        format!("{p}{{conv:{id}}}:meta"),
        format!("{p}{{conv:{id}}}:messages"),
        format!("{p}{{chan:chan%3Awith%7Dodd%7Bchars}}"),
    ] {
        let exists: bool = con.exists(&key).await.unwrap();
        assert!(exists, "missing key {key}");
    }
}

#[tokio::test]
async fn threads_are_listed_per_owner_newest_first() {
    let Some((store, client, _g)) = store("owner").await else {
        return;
    };
    let a = store.create(Some("first"), Some("alice")).await.unwrap();
    let b = store.create(Some("second"), Some("alice")).await.unwrap();
    store.create(Some("theirs"), Some("bob")).await.unwrap();
    set_last_activity(&client, &a.id, now_ms() - 1000).await;
    store
        .append(&b.id, &[ChatMessage::user("x")])
        .await
        .unwrap();
    let list = store.list("alice").await.unwrap();
    assert_eq!(
        list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [&b.id, &a.id]
    );
    assert_eq!(list[0].title.as_deref(), Some("second"));
    assert_eq!(list[0].owner.as_deref(), Some("alice"));
    // A conversation that expired disappears from the list.
    let _: () = client
        .connection()
        .del(client.keys().conversation_meta(&a.id))
        .await
        .unwrap();
    assert_eq!(store.list("alice").await.unwrap().len(), 1);
    assert!(store.list("nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn stats_count_ages_messages_and_memory() {
    let Some((store, client, _g)) = store("stats").await else {
        return;
    };
    let now = now_ms();
    for (i, days) in [0u64, 3, 10, 40].iter().enumerate() {
        let id = format!("t{i}");
        store
            .append(&id, &[ChatMessage::user("a"), ChatMessage::assistant("b")])
            .await
            .unwrap();
        set_last_activity(&client, &id, now - days * DAY_MS - 1000).await;
    }
    let s = store.stats().await.unwrap();
    assert_eq!(s.conversations, 4);
    assert_eq!(s.messages, 8);
    assert_eq!(s.age_buckets, [1, 1, 1, 1]);
    assert!(s.oldest_ms.is_some() && s.oldest_ms <= s.newest_ms);
    assert!(
        s.memory_bytes.is_some_and(|b| b > 0),
        "memory: {:?}",
        s.memory_bytes
    );
}

#[tokio::test]
async fn clear_older_than_removes_only_old_conversations() {
    let Some((store, client, _g)) = store("clear").await else {
        return;
    };
    let old = store.conversation_for_channel("old-chan").await.unwrap();
    let new = store.conversation_for_channel("new-chan").await.unwrap();
    store.append(&old, &[ChatMessage::user("a")]).await.unwrap();
    store.append(&new, &[ChatMessage::user("b")]).await.unwrap();
    set_last_activity(&client, &old, now_ms() - 40 * DAY_MS).await;
    let removed = store
        .clear_older_than(Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(store.get(&old).await.unwrap().is_none());
    assert!(store.get(&new).await.unwrap().is_some());
    let mut con = client.connection();
    let gone: bool = con.exists(client.keys().channel("old-chan")).await.unwrap();
    assert!(
        !gone,
        "the old channel mapping must go with its conversation"
    );
    assert_eq!(
        store.conversation_for_channel("new-chan").await.unwrap(),
        new
    );
}

#[tokio::test]
async fn clear_all_removes_only_the_stores_keys_of_its_prefix() {
    let Some((store, client, _g)) = store("clearall").await else {
        return;
    };
    let Some(other) = connect_or_skip("clearall-other").await else {
        return;
    };
    let _g2 = PrefixGuard::new(&other);
    let other_store = RedisConversationStore::new(other.clone(), EXPIRY);
    store.conversation_for_channel("a").await.unwrap();
    store.create(None, Some("alice")).await.unwrap();
    other_store.conversation_for_channel("b").await.unwrap();
    // A token stream under the same prefix is not the store's.
    let unrelated = format!("{}{{tok:s:m}}", client.keys().prefix());
    let _: () = client.connection().set(&unrelated, "x").await.unwrap();
    assert_eq!(store.clear_all().await.unwrap(), 2);
    assert_eq!(store.stats().await.unwrap().conversations, 0);
    assert!(store.list("alice").await.unwrap().is_empty());
    let kept: bool = client.connection().exists(&unrelated).await.unwrap();
    assert!(kept, "clear_all removed a key that is not a conversation's");
    assert_eq!(
        other_store.stats().await.unwrap().conversations,
        1,
        "another prefix was touched"
    );
}
