//! The conformance suite of [`ResponseStore`](crate::ResponseStore)s (the Responses API's
//! stored responses): the in-memory store, Redis and PostgreSQL run these checks unchanged
//! (`response_store_conformance_tests!`).
//!
//! A store implements [`ResponseStoreHarness`]: each call gives two handles on one fresh,
//! empty, isolated store, as two gateway instances of a deployment hold it. Each check is a
//! `pub async fn` taking the harness and panics with what a user would notice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::store_checks::{ok, HOSTILE};
use crate::{
    ChatMessage, DynResponseStore, FinishReason, ResponseHeader, ResponseOutcome, ResponseRecord,
    ResponseStatus, Usage,
};

/// The TTL of stores that are not testing expiry (30 days, as OpenAI keeps responses).
pub const RESPONSE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Makes stores for the response-store checks.
#[async_trait]
pub trait ResponseStoreHarness: Send + Sync {
    /// Two handles on one fresh, empty, isolated store (on connections of their own where
    /// the store has any), keeping each record for `ttl` from its creation (whole seconds
    /// at least: Redis expires by the second).
    async fn stores(&self, ttl: Duration) -> [Arc<DynResponseStore>; 2];
}

/// The in-memory store's harness: two handles on one store.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryResponseStoreHarness;

#[async_trait]
impl ResponseStoreHarness for InMemoryResponseStoreHarness {
    async fn stores(&self, ttl: Duration) -> [Arc<DynResponseStore>; 2] {
        let store = Arc::new(crate::InMemoryResponseStore::new(ttl));
        [store.clone(), store]
    }
}

/// A record using every field, owned by `owner`.
pub fn sample_record(id: &str, owner: Option<&str>) -> ResponseRecord {
    ResponseRecord {
        header: ResponseHeader {
            id: id.into(),
            created_at: 1_700_000_000,
            model: "gpt-test".into(),
            background: true,
            instructions: Some("Answer briefly.".into()),
            max_output_tokens: Some(64),
            metadata: BTreeMap::from([("k".to_owned(), HOSTILE[0].to_owned())]),
            previous_response_id: Some("resp_prev".into()),
            store: true,
            temperature: Some(0.7),
            top_p: Some(0.9),
            tools: vec![serde_json::json!({"type": "function", "name": "get_weather"})],
            user: Some("end-user-1".into()),
        },
        owner: owner.map(str::to_owned),
        input_items: vec![serde_json::json!({"id": "msg_a", "type": "message"})],
        context: vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("what about tomorrow?"),
        ],
        outcome: None,
    }
}

/// A final outcome saying `text`, then calling a client tool.
pub fn sample_outcome(text: &str) -> ResponseOutcome {
    ResponseOutcome {
        status: ResponseStatus::Completed,
        text: text.into(),
        usage: Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        }),
        finish_reason: FinishReason::ToolCalls,
        error: None,
        tool_calls: vec![crate::ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        }],
    }
}

/// What one instance stores, another reads whole; the first outcome wins; a deleted
/// response stays deleted.
pub async fn responses_shared_between_instances(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(RESPONSE_TTL).await;
    let id = "resp_{1}: x*";
    ok("create", a.create(&sample_record(id, Some("alice")))).await;
    let got = ok("get", b.get(id))
        .await
        .expect("stored by the other instance");
    assert_eq!(
        got,
        sample_record(id, Some("alice")),
        "record changed in the store"
    );
    assert_eq!(got.status(), ResponseStatus::Queued);

    assert!(ok("finish", b.finish(id, &sample_outcome("Par"))).await);
    assert!(
        !ok("finish", a.finish(id, &sample_outcome("other"))).await,
        "a second final state replaced the first"
    );
    let got = ok("get", a.get(id)).await.expect("still stored");
    assert_eq!(got.outcome, Some(sample_outcome("Par")));
    assert_eq!(got.status(), ResponseStatus::Completed);
    assert_eq!(got.owner.as_deref(), Some("alice"));

    assert!(ok("delete", a.delete(id)).await);
    assert!(!ok("delete", b.delete(id)).await, "deleted twice");
    assert!(
        !ok("finish", b.finish(id, &sample_outcome("late"))).await,
        "a late outcome revived a deleted response"
    );
    assert_eq!(ok("get", b.get(id)).await, None);
    assert_eq!(ok("get", a.get("resp_unknown")).await, None);
}

/// Creating a record again replaces it and its outcome; a record created with an outcome
/// keeps it.
pub async fn responses_create_replaces(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(RESPONSE_TTL).await;
    ok("create", a.create(&sample_record("resp_r", Some("alice")))).await;
    assert!(ok("finish", a.finish("resp_r", &sample_outcome("first"))).await);
    let mut again = sample_record("resp_r", Some("alice"));
    again.header.model = "another-model".into();
    ok("create", b.create(&again)).await;
    let got = ok("get", a.get("resp_r")).await.expect("stored");
    assert_eq!(got, again, "the new record did not replace the old one");
    assert_eq!(got.outcome, None, "the old outcome outlived its record");

    let mut done = sample_record("resp_done", None);
    done.outcome = Some(sample_outcome("already over"));
    ok("create", a.create(&done)).await;
    assert_eq!(ok("get", b.get("resp_done")).await, Some(done));
    assert!(!ok("finish", b.finish("resp_done", &sample_outcome("x"))).await);
}

/// Each record keeps its own owner (the HTTP layer lets only it read, cancel or delete),
/// and ids that a pattern or a query could confuse stay apart.
pub async fn responses_keep_owners_and_ids_apart(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(RESPONSE_TTL).await;
    let ids = [
        "resp_1", "RESP_1", "resp_%", "resp_*", "resp_?", "resp_1 ", "resp_[1]",
    ];
    let owners = [
        Some("alice"),
        Some("bob"),
        None,
        Some(HOSTILE[1]),
        Some(HOSTILE[4]),
    ];
    for (i, id) in ids.iter().enumerate() {
        let owner = owners[i % owners.len()];
        let mut record = sample_record(id, owner);
        record.context = vec![ChatMessage::user(format!("question {i}"))];
        ok("create", a.create(&record)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let got = ok("get", b.get(id)).await.expect("stored");
        assert_eq!(got.header.id, *id);
        assert_eq!(
            got.owner.as_deref(),
            owners[i % owners.len()],
            "owner of {id:?}"
        );
        assert_eq!(
            got.context[0].content,
            format!("question {i}"),
            "{id:?} mixed up"
        );
    }
    assert!(ok("finish", b.finish("resp_%", &sample_outcome("p"))).await);
    assert!(ok("delete", a.delete("resp_*")).await);
    for id in ids {
        let got = ok("get", a.get(id)).await;
        match id {
            "resp_*" => assert_eq!(got, None),
            "resp_%" => assert_eq!(got.and_then(|r| r.outcome), Some(sample_outcome("p"))),
            _ => {
                let got = got.unwrap_or_else(|| panic!("{id:?} gone with another's delete"));
                assert_eq!(got.outcome, None, "{id:?} finished with another's outcome");
            }
        }
    }
}

/// Text the client sent comes back verbatim; ids that cannot be stored (or are not) read
/// as absent, without an error.
pub async fn responses_hostile_text_and_bad_ids(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(RESPONSE_TTL).await;
    let mut record = sample_record(HOSTILE[0], Some("alice"));
    record.header.instructions = Some(HOSTILE.join("|"));
    record.context = HOSTILE
        .iter()
        .map(|t| ChatMessage::user(*t))
        .chain([ChatMessage::user("nul \u{0} inside")])
        .collect();
    record
        .header
        .metadata
        .extend(HOSTILE.iter().map(|t| ((*t).to_owned(), (*t).to_owned())));
    ok("create", a.create(&record)).await;
    let mut outcome = sample_outcome(&HOSTILE.join(""));
    outcome.error = Some("nul \u{0} error".into());
    assert!(ok("finish", b.finish(HOSTILE[0], &outcome)).await);
    record.outcome = Some(outcome);
    assert_eq!(ok("get", b.get(HOSTILE[0])).await, Some(record));
    for bad in ["", "\u{0}", "resp_\u{0}", HOSTILE[1], HOSTILE[3], "%", "*"] {
        assert_eq!(ok("get", a.get(bad)).await, None, "{bad:?}");
        assert!(
            !ok("finish", a.finish(bad, &sample_outcome("x"))).await,
            "{bad:?}"
        );
        assert!(!ok("delete", a.delete(bad)).await, "{bad:?}");
    }
    assert!(
        ok("get", a.get(HOSTILE[0])).await.is_some(),
        "a bad id touched a record"
    );
}

/// Of many instances finishing one response at once, exactly one outcome is written, and
/// it is the one stored.
pub async fn responses_concurrent_finish(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(RESPONSE_TTL).await;
    ok("create", a.create(&sample_record("resp_race", None))).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let text = format!("answer {i}");
                let won = ok("finish", store.finish("resp_race", &sample_outcome(&text))).await;
                (text, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (text, won) = ok("finish task", t).await;
        if won {
            winners.push(text);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let got = ok("get", b.get("resp_race")).await.expect("stored");
    assert_eq!(got.outcome.map(|o| o.text), winners.pop());
}

/// A record expires its TTL after creation: reading it and finishing it do not extend
/// it, and once gone it cannot be finished or deleted.
pub async fn responses_expire(h: &impl ResponseStoreHarness) {
    let [a, b] = h.stores(Duration::from_secs(2)).await;
    ok(
        "create",
        a.create(&sample_record("resp_exp", Some("alice"))),
    )
    .await;
    assert!(ok("get", b.get("resp_exp")).await.is_some(), "gone at once");
    assert!(ok("finish", b.finish("resp_exp", &sample_outcome("done"))).await);
    // Read it until it is gone: the reads (and the outcome) must not keep it alive.
    let gone = tokio::time::timeout(Duration::from_secs(15), async {
        while ok("get", a.get("resp_exp")).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "a response with a 2 s TTL, read every 100 ms, still there 15 s later"
    );
    assert!(!ok("finish", b.finish("resp_exp", &sample_outcome("late"))).await);
    assert!(
        !ok("delete", b.delete("resp_exp")).await,
        "an expired record deleted"
    );
    // Created again, it starts afresh, without the old outcome.
    ok("create", a.create(&sample_record("resp_exp", Some("bob")))).await;
    let got = ok("get", b.get("resp_exp")).await.expect("created again");
    assert_eq!(got.owner.as_deref(), Some("bob"));
    assert_eq!(got.outcome, None);
}
