//! The conformance suite of [`ConversationStore`](crate::ConversationStore)s: the in-memory store, Redis and
//! PostgreSQL run these checks unchanged (`store_conformance_tests!`).
//!
//! A store implements [`StoreHarness`]: each call gives a fresh, empty, isolated store (its
//! own Redis prefix, its own Postgres schema) with the expiry asked for. Each check is a
//! `pub async fn` taking the harness and panics with what a user would notice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{ChatMessage, ConversationMeta, DynConversationStore, Role};

/// The expiry of stores that are not testing expiry.
pub const LONG_TTL: Duration = Duration::from_secs(90 * 86_400);

/// Makes stores for the store checks.
#[async_trait]
pub trait StoreHarness: Send + Sync {
    /// A fresh, empty store whose conversations expire `ttl` after their last access
    /// (whole seconds at least: Redis expires by the second).
    async fn store(&self, ttl: Duration) -> Arc<DynConversationStore>;
}

/// The in-memory store's harness.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryStoreHarness;

#[async_trait]
impl StoreHarness for InMemoryStoreHarness {
    async fn store(&self, ttl: Duration) -> Arc<DynConversationStore> {
        Arc::new(crate::InMemoryConversationStore::new(ttl))
    }
}

/// Strings that break a store that formats values into its queries or keys.
pub const HOSTILE: &[&str] = &[
    "'; DROP TABLE chatstream_messages; --",
    "Robert'); DELETE FROM chatstream_conversations WHERE ('1'='1",
    "\" OR \"\"=\"",
    "$1 $$ \\x00 %s %n {conv:*} * ? [a-z]",
    "ünïcødé 🦀 \u{202e}rtl",
    "line\nbreak\r\ttab",
];

/// Awaits a store call that must succeed within 20 s (shared by the response-store checks).
pub(crate) async fn ok<T, E: std::fmt::Debug>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what} failed: {e:?}"),
        Err(_) => panic!("{what} took more than 20 s"),
    }
}

fn text_of(messages: &[ChatMessage]) -> Vec<(Role, &str)> {
    messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect()
}

/// Messages come back in the order appended, with the thread's metadata as created.
pub async fn store_keeps_order_and_metadata(h: &impl StoreHarness) {
    let store = h.store(LONG_TTL).await;
    let meta = ok(
        "create",
        store.create_in_org(Some("Trip plans"), Some("alice"), Some("acme")),
    )
    .await;
    assert_eq!(meta.title.as_deref(), Some("Trip plans"));
    assert_eq!(meta.owner.as_deref(), Some("alice"));
    assert_eq!(meta.org.as_deref(), Some("acme"));
    assert_eq!(meta.message_count, 0);
    assert!(meta.created_at_ms > 0 && meta.created_at_ms <= meta.last_activity_ms);
    let first = [ChatMessage::user("one"), ChatMessage::assistant("two")];
    let second = [ChatMessage::user("three"), ChatMessage::assistant("four")];
    ok("append", store.append(&meta.id, &first)).await;
    ok("append", store.append(&meta.id, &second)).await;
    let got = ok("get", store.get(&meta.id))
        .await
        .expect("the thread just written");
    assert_eq!(
        text_of(&got.messages),
        vec![
            (Role::User, "one"),
            (Role::Assistant, "two"),
            (Role::User, "three"),
            (Role::Assistant, "four")
        ],
        "history out of order"
    );
    assert_eq!(got.meta.message_count, 4);
    assert_eq!(got.meta.title.as_deref(), Some("Trip plans"));
    assert_eq!(got.meta.owner.as_deref(), Some("alice"));
    assert_eq!(got.meta.org.as_deref(), Some("acme"));
    assert_eq!(got.meta.created_at_ms, meta.created_at_ms);
    // Appending to an id nobody created creates it (workers append to seed 004 threads).
    ok(
        "append",
        store.append("fresh-thread", &[ChatMessage::user("hi")]),
    )
    .await;
    let fresh = ok("get", store.get("fresh-thread"))
        .await
        .expect("created by append");
    assert_eq!(fresh.meta.message_count, 1);
    assert_eq!(fresh.meta.owner, None);
}

/// Reads and writes slide the expiry; an idle conversation and channel mapping expire.
pub async fn store_expiry_slides(h: &impl StoreHarness) {
    let store = h.store(Duration::from_secs(2)).await;
    ok("append", store.append("kept", &[ChatMessage::user("a")])).await;
    ok("append", store.append("idle", &[ChatMessage::user("b")])).await;
    let channel = ok("channel", store.conversation_for_channel("chan-1")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(ok("get", store.get("kept")).await.is_some());
    assert_eq!(
        ok("channel", store.conversation_for_channel("chan-1")).await,
        channel,
        "a mapping used within its expiry keeps its conversation"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        ok("get", store.get("idle")).await.is_none(),
        "a conversation idle past its expiry is gone"
    );
    let kept = ok("get", store.get("kept")).await;
    assert!(kept.is_some(), "the read 1.3 s ago slid the expiry");
    assert_eq!(
        ok("channel", store.conversation_for_channel("chan-1")).await,
        channel
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(ok("get", store.get("kept")).await.is_none());
    assert_ne!(
        ok("channel", store.conversation_for_channel("chan-1")).await,
        channel,
        "an idle channel gets a new conversation"
    );
    // An expired id appended to again starts empty.
    ok(
        "append",
        store.append("idle", &[ChatMessage::user("again")]),
    )
    .await;
    let again = ok("get", store.get("idle")).await.expect("re-created");
    assert_eq!(text_of(&again.messages), vec![(Role::User, "again")]);
}

/// Owners and organisations see their own threads only, newest activity first.
pub async fn store_scopes_users_and_orgs(h: &impl StoreHarness) {
    let store = h.store(LONG_TTL).await;
    let a1 = ok(
        "create",
        store.create_in_org(Some("a1"), Some("alice"), Some("acme")),
    )
    .await;
    let b1 = ok(
        "create",
        store.create_in_org(Some("b1"), Some("bob"), Some("acme")),
    )
    .await;
    let c1 = ok(
        "create",
        store.create_in_org(Some("c1"), Some("carol"), Some("globex")),
    )
    .await;
    let a2 = ok("create", store.create(Some("a2"), Some("alice"))).await;
    let ids = |v: Vec<ConversationMeta>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let mut alice = ids(ok("list", store.list("alice")).await);
    alice.sort();
    let mut want = vec![a1.id.clone(), a2.id.clone()];
    want.sort();
    assert_eq!(alice, want, "alice's threads");
    let mut acme = ids(ok("list_org", store.list_org("acme")).await);
    acme.sort();
    let mut want = vec![a1.id.clone(), b1.id.clone()];
    want.sort();
    assert_eq!(acme, want, "acme's threads");
    assert_eq!(
        ids(ok("list_org", store.list_org("globex")).await),
        vec![c1.id.clone()]
    );
    assert!(ok("list", store.list("mallory")).await.is_empty());
    assert!(ok("list_org", store.list_org("initech")).await.is_empty());
    assert!(ok("list_org", store.list_org("")).await.is_empty());
    // Activity reorders: the thread written last comes first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    ok("append", store.append(&b1.id, &[ChatMessage::user("bump")])).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    ok("append", store.append(&a1.id, &[ChatMessage::user("bump")])).await;
    assert_eq!(
        ids(ok("list_org", store.list_org("acme")).await),
        vec![a1.id.clone(), b1.id.clone()],
        "newest activity first"
    );
}

/// Exchanges appended at once to one thread by many workers stay whole and in each
/// worker's order.
pub async fn store_concurrent_appends(h: &impl StoreHarness) {
    const WORKERS: usize = 8;
    const EXCHANGES: usize = 10;
    let store = h.store(LONG_TTL).await;
    let thread = ok("create", store.create(Some("busy"), Some("alice"))).await;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        let id = thread.id.clone();
        tasks.push(tokio::spawn(async move {
            for e in 0..EXCHANGES {
                let tag = format!("w{w}-e{e}");
                let exchange = [ChatMessage::user(tag.clone()), ChatMessage::assistant(tag)];
                ok("append", store.append(&id, &exchange)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("append task");
    }
    let got = ok("get", store.get(&thread.id)).await.expect("thread");
    assert_eq!(got.messages.len(), WORKERS * EXCHANGES * 2, "lost messages");
    assert_eq!(got.meta.message_count, (WORKERS * EXCHANGES * 2) as u64);
    let mut next = [0usize; WORKERS];
    for pair in got.messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User, "an exchange was split: {pair:?}");
        assert_eq!(
            pair[1].role,
            Role::Assistant,
            "an exchange was split: {pair:?}"
        );
        assert_eq!(pair[0].content, pair[1].content, "exchanges interleaved");
        let (w, e) = pair[0]
            .content
            .trim_start_matches('w')
            .split_once("-e")
            .and_then(|(w, e)| Some((w.parse::<usize>().ok()?, e.parse::<usize>().ok()?)))
            .expect("tag");
        assert_eq!(e, next[w], "worker {w}'s exchanges out of order");
        next[w] += 1;
    }
}

/// Stats count conversations and messages, all active today.
pub async fn store_stats(h: &impl StoreHarness) {
    let store = h.store(LONG_TTL).await;
    let empty = ok("stats", store.stats()).await;
    assert_eq!((empty.conversations, empty.messages), (0, 0));
    for (i, n) in [1usize, 2, 3].into_iter().enumerate() {
        let id = format!("stats-{i}");
        let msgs: Vec<_> = (0..n).map(|k| ChatMessage::user(format!("m{k}"))).collect();
        ok("append", store.append(&id, &msgs)).await;
    }
    let s = ok("stats", store.stats()).await;
    assert_eq!(s.conversations, 3);
    assert_eq!(s.messages, 6);
    assert_eq!(s.age_buckets, [3, 0, 0, 0]);
    let (oldest, newest) = (s.oldest_ms.expect("oldest"), s.newest_ms.expect("newest"));
    assert!(oldest <= newest);
}

/// `clear_older_than` removes only idle conversations, `clear_all` everything, and both
/// say how many.
pub async fn store_cleanup(h: &impl StoreHarness) {
    let store = h.store(LONG_TTL).await;
    ok("append", store.append("old-1", &[ChatMessage::user("a")])).await;
    ok("append", store.append("old-2", &[ChatMessage::user("b")])).await;
    let chan = ok("channel", store.conversation_for_channel("chan-old")).await;
    assert_eq!(
        ok("clear", store.clear_older_than(Duration::from_secs(3600))).await,
        0,
        "nothing is an hour old"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ok("append", store.append("new-1", &[ChatMessage::user("c")])).await;
    assert_eq!(
        ok("clear", store.clear_older_than(Duration::from_millis(1000))).await,
        3,
        "the two old conversations and the channel's"
    );
    assert!(ok("get", store.get("old-1")).await.is_none());
    assert!(ok("get", store.get("new-1")).await.is_some());
    assert_ne!(
        ok("channel", store.conversation_for_channel("chan-old")).await,
        chan,
        "a cleared channel's conversation is not handed out again"
    );
    let n = ok("clear_all", store.clear_all()).await;
    assert_eq!(n, 2, "new-1 and the channel's new conversation");
    assert!(ok("get", store.get("new-1")).await.is_none());
    assert_eq!(ok("stats", store.stats()).await.conversations, 0);
}

/// Unknown, empty and hostile ids read as absent; hostile text is stored verbatim.
pub async fn store_bad_ids_and_hostile_text(h: &impl StoreHarness) {
    let store = h.store(LONG_TTL).await;
    for id in ["", "no-such-thread", "nul\0byte", "../../etc/passwd"]
        .into_iter()
        .chain(HOSTILE.iter().copied())
    {
        assert!(
            ok("get", store.get(id)).await.is_none(),
            "{id:?} names no conversation"
        );
    }
    assert!(ok("list", store.list("nul\0byte")).await.is_empty());
    for (i, text) in HOSTILE.iter().enumerate() {
        let meta = ok(
            "create",
            store.create_in_org(Some(text), Some(text), Some(text)),
        )
        .await;
        ok(
            "append",
            store.append(&meta.id, &[ChatMessage::user(*text)]),
        )
        .await;
        let got = ok("get", store.get(&meta.id)).await.expect("stored");
        assert_eq!(got.meta.title.as_deref(), Some(*text), "title {i} changed");
        assert_eq!(got.meta.owner.as_deref(), Some(*text));
        assert_eq!(got.meta.org.as_deref(), Some(*text));
        assert_eq!(got.messages[0].content, *text, "content {i} changed");
        let listed = ok("list", store.list(text)).await;
        assert_eq!(listed.len(), 1, "owner {text:?} lists its one thread");
        assert_eq!(ok("list_org", store.list_org(text)).await.len(), 1);
        // A hostile id works as an id too.
        ok(
            "append",
            store.append(text, &[ChatMessage::assistant(*text)]),
        )
        .await;
        let by_id = ok("get", store.get(text)).await.expect("hostile id stored");
        assert_eq!(by_id.messages[0].content, *text);
    }
    assert_eq!(
        ok("stats", store.stats()).await.conversations,
        2 * HOSTILE.len() as u64,
        "nothing else was created or dropped"
    );
}
