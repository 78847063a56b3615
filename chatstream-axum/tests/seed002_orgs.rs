//! Seed 002 scoped by organisation: users of one organisation share its threads; a user of
//! another organisation, or of none, gets 404 for them, like for a missing thread.

mod chat;
mod common;

use std::sync::Arc;

use chat::*;
use chatstream_axum::auth::StaticTokens;
use chatstream_core::ScriptedBackend;
use common::error_body;

const ALICE_ACME: &str = "a1";
const BOB_ACME: &str = "b1";
const CAROL_GLOBEX: &str = "c1";
const DAVE_NO_ORG: &str = "d1";

fn chat() -> Chat {
    let tokens = StaticTokens::parse("a1:alice:acme, b1:bob:acme, c1:carol:globex, d1:dave")
        .expect("token table");
    Chat::with(ScriptedBackend::default(), |s| {
        s.with_authenticator(Arc::new(tokens))
    })
}

#[tokio::test]
async fn an_organisations_users_share_its_threads() {
    let c = chat();
    let resp = c
        .call(req(
            "POST",
            "/chat/threads",
            Some(ALICE_ACME),
            Some(r#"{"title":"Q3 plan"}"#),
        ))
        .await;
    assert_eq!(resp.status(), 201);
    let v = json(resp).await;
    assert_eq!(v["thread"]["userId"], "alice");
    assert_eq!(v["thread"]["orgId"], "acme");
    let id = v["thread"]["id"].as_str().unwrap_or_default().to_owned();

    // Bob, of the same organisation, writes to it and reads it.
    let uri = format!("/chat/threads/{id}/messages/stream");
    let events = events(
        c.call(req(
            "POST",
            &uri,
            Some(BOB_ACME),
            Some(r#"{"content":"hi"}"#),
        ))
        .await,
    )
    .await;
    assert_eq!(kinds(&events).last().map(String::as_str), Some("done"));
    let v = json(
        c.call(req(
            "GET",
            &format!("/chat/threads/{id}/messages"),
            Some(ALICE_ACME),
            None,
        ))
        .await,
    )
    .await;
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(2), "{v}");
    let listed = json(
        c.call(req("GET", "/chat/threads", Some(BOB_ACME), None))
            .await,
    )
    .await;
    assert_eq!(listed["threads"][0]["id"], id.as_str());
}

#[tokio::test]
async fn another_organisations_thread_is_not_found() {
    let c = chat();
    let id = c.thread(ALICE_ACME).await;
    let dave = c.thread(DAVE_NO_ORG).await;
    for (token, thread) in [
        (CAROL_GLOBEX, &id),
        (DAVE_NO_ORG, &id),
        (ALICE_ACME, &dave),
        (CAROL_GLOBEX, &dave),
    ] {
        for (method, uri, body) in [
            ("GET", format!("/chat/threads/{thread}/messages"), None),
            (
                "POST",
                format!("/chat/threads/{thread}/messages"),
                Some(r#"{"content":"x"}"#),
            ),
            (
                "POST",
                format!("/chat/threads/{thread}/messages/stream"),
                Some(r#"{"content":"x"}"#),
            ),
            (
                "GET",
                format!("/chat/threads/{thread}/messages/m/stream"),
                None,
            ),
            (
                "DELETE",
                format!("/chat/threads/{thread}/messages/m/stream"),
                None,
            ),
        ] {
            let (status, _, err) =
                error_body(c.call(req(method, &uri, Some(token), body)).await).await;
            assert_eq!(
                (status, err.error.code.as_str()),
                (404, "not_found"),
                "{token} {method} {uri}"
            );
        }
    }
    let carol = json(
        c.call(req("GET", "/chat/threads", Some(CAROL_GLOBEX), None))
            .await,
    )
    .await;
    assert_eq!(carol["threads"], serde_json::json!([]));
    let dave_list = json(
        c.call(req("GET", "/chat/threads", Some(DAVE_NO_ORG), None))
            .await,
    )
    .await;
    assert_eq!(
        dave_list["threads"].as_array().map(Vec::len),
        Some(1),
        "dave's own only"
    );
}
