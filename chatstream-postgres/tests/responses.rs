//! The response store on the real PostgreSQL (skipped when unreachable, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`): the response-store conformance suite that the
//! in-memory and Redis stores run too, and what is PostgreSQL's own (the migration, the
//! sweep of expired rows, a pool shared with the conversations).

use std::time::Duration;

use chatstream_core::testkit::response_checks::{sample_outcome, sample_record, RESPONSE_TTL};
use chatstream_core::{ConversationStore, ResponseStore};
use chatstream_postgres::testkit::{
    postgres_url, response_stores_or_skip, store_or_skip, SchemaGuard,
};

chatstream_core::response_store_conformance_tests!(
    chatstream_postgres::testkit::PgResponseStoreHarness::connect_or_skip()
);

/// Rows of `id` in the table, expired or not.
async fn rows(store: &chatstream_postgres::PgResponseStore, id: &str) -> i64 {
    let client = store.pool().get().await.expect("connection");
    client
        .query_one(
            "SELECT count(*) FROM chatstream_responses WHERE id = $1",
            &[&id],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_and_the_record_is_stored_once() {
    let guard = SchemaGuard::new(postgres_url());
    let Some([a, b]) = response_stores_or_skip("sweep", Duration::from_secs(1), &guard).await
    else {
        return;
    };
    a.create(&sample_record("resp_old", Some("alice")))
        .await
        .expect("create");
    a.finish("resp_old", &sample_outcome("done"))
        .await
        .expect("finish");
    // The outcome is a column of the one row, not a second row or a copy of the record.
    assert_eq!(rows(&a, "resp_old").await, 1);
    let expired = tokio::time::timeout(Duration::from_secs(15), async {
        while a.get("resp_old").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(expired.is_ok(), "a 1 s record still readable 15 s later");
    assert_eq!(rows(&a, "resp_old").await, 1, "expired but not yet swept");
    // `b` has not swept yet in this process: its first create sweeps.
    b.create(&sample_record("resp_new", None))
        .await
        .expect("create");
    assert_eq!(
        rows(&a, "resp_old").await,
        0,
        "the expired row was not swept"
    );
    assert_eq!(rows(&a, "resp_new").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_and_responses_share_a_database_and_a_pool() {
    let guard = SchemaGuard::new(postgres_url());
    let Some(conversations) = store_or_skip("shared", RESPONSE_TTL, &guard).await else {
        return;
    };
    let responses = conversations.responses(RESPONSE_TTL);
    responses
        .create(&sample_record("resp_1", Some("alice")))
        .await
        .expect("create");
    let thread = conversations
        .create_in_org(Some("t"), Some("alice"), Some("acme"))
        .await
        .expect("thread");
    assert!(responses.get("resp_1").await.expect("get").is_some());
    assert!(conversations.get(&thread.id).await.expect("get").is_some());
    // Both migrations are recorded, once each.
    let client = conversations.pool().get().await.expect("connection");
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM chatstream_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("migrations")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_an_id_or_owner_is_refused_not_sent() {
    let guard = SchemaGuard::new(postgres_url());
    let Some([a, _]) = response_stores_or_skip("nul", RESPONSE_TTL, &guard).await else {
        return;
    };
    let err = a
        .create(&sample_record("resp_\u{0}", None))
        .await
        .expect_err("a NUL id");
    assert!(err.to_string().contains("NUL"), "{err}");
    assert!(a
        .create(&sample_record("resp_x", Some("al\u{0}ice")))
        .await
        .is_err());
    assert_eq!(rows(&a, "resp_x").await, 0);
}
