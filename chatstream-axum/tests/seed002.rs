//! Seed 002's streaming chat API: threads, messages, the typed SSE events, the fallback,
//! authentication, ownership, bad bodies, the time limit, history and resume.

mod chat;
mod common;

use std::time::Duration;

use chat::*;
use chatstream_core::{ChatMessage, ChatRequest, ConversationStore, ScriptedBackend, StreamKey};
use common::{error_body, within};
use serde_json::Value;

#[tokio::test]
async fn threads_are_created_and_their_messages_listed() {
    let c = Chat::new();
    let resp = c
        .call(req(
            "POST",
            "/chat/threads",
            Some(ALICE),
            Some(r#"{"title":"Trip"}"#),
        ))
        .await;
    assert_eq!(resp.status(), 201);
    let v = json(resp).await;
    let thread = &v["thread"];
    assert_eq!(thread["title"], "Trip");
    assert_eq!(thread["userId"], "alice");
    assert_eq!(thread["messageCount"], 0);
    assert_iso(thread["createdAt"].as_str().unwrap_or_default());
    let id = thread["id"].as_str().unwrap_or_default().to_owned();

    let uri = format!("/chat/threads/{id}/messages");
    let v = json(c.call(req("GET", &uri, Some(ALICE), None)).await).await;
    assert_eq!(v, serde_json::json!({"messages": []}));

    // Without a title: the default one.
    let v = json(
        c.call(req("POST", "/chat/threads", Some(ALICE), Some("{}")))
            .await,
    )
    .await;
    assert_eq!(v["thread"]["title"], "New Chat");

    let v = json(c.call(req("GET", "/chat/threads", Some(ALICE), None)).await).await;
    assert_eq!(v["threads"].as_array().map(Vec::len), Some(2));
    let v = json(c.call(req("GET", "/chat/threads", Some(BOB), None)).await).await;
    assert_eq!(v["threads"], serde_json::json!([]));
}

#[tokio::test]
async fn streaming_sends_the_documented_events_in_order() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let uri = format!("/chat/threads/{id}/messages/stream");
    let body = r#"{"content":"hello there"}"#;
    let events = events(c.call(req("POST", &uri, Some(ALICE), Some(body))).await).await;
    assert_eq!(
        kinds(&events),
        [
            "connected",
            "message_saved",
            "workflow_status",
            "ai_response",
            "workflow_complete",
            "done"
        ]
    );
    for (_, e) in &events {
        assert_iso(&e.timestamp);
    }
    let connected = &events[0].1.data;
    assert_eq!(connected["threadId"], id.as_str());
    let message_id = connected["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message_id.is_empty());
    let saved = &events[1].1.data["message"];
    assert_eq!(saved["content"], "hello there");
    assert_eq!(saved["role"], "user");
    assert_eq!(saved["id"], message_id.as_str());

    let answers: Vec<&Value> = events
        .iter()
        .filter(|(_, e)| e.data.get("isComplete").is_some())
        .map(|(_, e)| &e.data)
        .collect();
    let (last, chunks) = answers
        .split_last()
        .unwrap_or_else(|| panic!("no ai_response"));
    assert!(chunks.len() > 2 && chunks.iter().all(|d| d["isComplete"] == false));
    let streamed: String = chunks
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    let request = ChatRequest::new(
        StreamKey::new(id.as_str(), message_id.as_str()),
        "hello there",
    );
    let expected = HistoryBackend::answer(0, &request);
    assert_eq!(streamed, expected);
    assert_eq!(last["isComplete"], true);
    assert_eq!(last["accumulated"], expected.as_str());
    assert_eq!(
        events.last().map(|(_, e)| &e.data["success"]),
        Some(&Value::Bool(true))
    );

    // The worker stored the exchange before the end.
    let stored = c.store.get(&id).await.ok().flatten().map(|t| t.messages);
    let both = vec![
        ChatMessage::user("hello there"),
        ChatMessage::assistant(expected),
    ];
    assert_eq!(stored, Some(both));
}

#[tokio::test]
async fn the_non_streaming_fallback_answers_with_the_whole_text() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let uri = format!("/chat/threads/{id}/messages");
    let resp = c
        .call(req("POST", &uri, Some(ALICE), Some(r#"{"content":"hi"}"#)))
        .await;
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    let response = v["response"].as_str().unwrap_or_default();
    assert!(
        response.starts_with("I saw 0 earlier messages. You said: \"hi\"."),
        "{v}"
    );
    let v = json(c.call(req("GET", &uri, Some(ALICE), None)).await).await;
    assert_eq!(v["messages"][0]["role"], "user");
    assert_eq!(v["messages"][1]["role"], "assistant");
    assert_eq!(v["messages"][1]["content"], response);
}

#[tokio::test]
async fn the_second_message_is_answered_with_the_first_exchange_as_history() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let send = format!("/chat/threads/{id}/messages");
    let first = json(
        c.call(req(
            "POST",
            &send,
            Some(ALICE),
            Some(r#"{"content":"one"}"#),
        ))
        .await,
    )
    .await;
    let stream = format!("/chat/threads/{id}/messages/stream");
    let events = events(
        c.call(req(
            "POST",
            &stream,
            Some(ALICE),
            Some(r#"{"content":"two"}"#),
        ))
        .await,
    )
    .await;
    let second = events
        .iter()
        .find_map(|(_, e)| e.data.get("accumulated").cloned())
        .unwrap_or_default();
    assert!(
        second
            .as_str()
            .unwrap_or_default()
            .starts_with("I saw 2 earlier messages."),
        "{second}"
    );
    let stored = c.store.get(&id).await.ok().flatten().map(|t| t.messages);
    let expected = vec![
        ChatMessage::user("one"),
        ChatMessage::assistant(first["response"].as_str().unwrap_or_default()),
        ChatMessage::user("two"),
        ChatMessage::assistant(second.as_str().unwrap_or_default()),
    ];
    assert_eq!(stored, Some(expected));
}

#[tokio::test]
async fn every_route_wants_a_valid_bearer_token() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let routes = [
        ("POST", "/chat/threads".to_owned(), Some(r#"{"title":"x"}"#)),
        ("GET", "/chat/threads".to_owned(), None),
        ("GET", format!("/chat/threads/{id}/messages"), None),
        (
            "POST",
            format!("/chat/threads/{id}/messages"),
            Some(r#"{"content":"x"}"#),
        ),
        (
            "POST",
            format!("/chat/threads/{id}/messages/stream"),
            Some(r#"{"content":"x"}"#),
        ),
        ("GET", format!("/chat/threads/{id}/messages/m/stream"), None),
    ];
    for (method, uri, body) in &routes {
        for token in [None, Some("wrong-token")] {
            let resp = c.call(req(method, uri, token, *body)).await;
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer",
                "{method} {uri}"
            );
            let (status, ct, err) = error_body(resp).await;
            assert_eq!(
                (status, ct.as_str()),
                (401, "application/json"),
                "{method} {uri}"
            );
            assert_eq!(err.error.code, "unauthorized");
        }
    }
}

#[tokio::test]
async fn another_users_thread_is_not_found() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let routes = [
        ("GET", format!("/chat/threads/{id}/messages"), None),
        (
            "POST",
            format!("/chat/threads/{id}/messages"),
            Some(r#"{"content":"x"}"#),
        ),
        (
            "POST",
            format!("/chat/threads/{id}/messages/stream"),
            Some(r#"{"content":"x"}"#),
        ),
        ("GET", format!("/chat/threads/{id}/messages/m/stream"), None),
        (
            "GET",
            "/chat/threads/no-such-thread/messages".to_owned(),
            None,
        ),
    ];
    for (method, uri, body) in &routes {
        let (status, _, err) = error_body(c.call(req(method, uri, Some(BOB), *body)).await).await;
        assert_eq!(
            (status, err.error.code.as_str()),
            (404, "not_found"),
            "{method} {uri}"
        );
    }
    let stored = c
        .store
        .get(&id)
        .await
        .ok()
        .flatten()
        .map(|t| t.messages.len());
    assert_eq!(stored, Some(0), "bob's messages reached alice's thread");
}

#[tokio::test]
async fn bad_and_oversize_bodies_are_json_errors() {
    let c = Chat::with(ScriptedBackend::default(), |s| s.with_body_limit(1024));
    let id = c.thread(ALICE).await;
    let uri = format!("/chat/threads/{id}/messages/stream");
    let big = format!(r#"{{"content":"{}"}}"#, "x".repeat(2000));
    for (body, status, code) in [
        ("{not json", 400, "invalid_json"),
        (r#"{"text":"wrong field"}"#, 400, "invalid_body"),
        (r#"{"content":"   "}"#, 400, "invalid_field"),
        (big.as_str(), 413, "payload_too_large"),
    ] {
        let (s, ct, err) =
            error_body(c.call(req("POST", &uri, Some(ALICE), Some(body))).await).await;
        assert_eq!(
            (s, ct.as_str(), err.error.code.as_str()),
            (status, "application/json", code)
        );
    }
    let long_title = format!(r#"{{"title":"{}"}}"#, "t".repeat(300));
    let (s, _, _) = error_body(
        c.call(req("POST", "/chat/threads", Some(ALICE), Some(&long_title)))
            .await,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn past_the_time_limit_the_client_gets_an_error_then_done() {
    let slow = ScriptedBackend::default()
        .with_delay(Duration::from_millis(20))
        .with_repeat(500);
    let c = Chat::with(slow, |s| s.with_stream_time_limit(SHORT));
    let id = c.thread(ALICE).await;
    let uri = format!("/chat/threads/{id}/messages/stream");
    let resp = c
        .call(req("POST", &uri, Some(ALICE), Some(r#"{"content":"go"}"#)))
        .await;
    let events = within(events(resp)).await;
    let k = kinds(&events);
    assert_eq!(k[k.len() - 2..], ["error", "done"], "{k:?}");
    let n = events.len();
    assert_eq!(events[n - 2].1.data["code"], "timeout");
    assert_eq!(events[n - 1].1.data["success"], false);

    let uri = format!("/chat/threads/{id}/messages");
    let (status, _, err) = error_body(
        c.call(req("POST", &uri, Some(ALICE), Some(r#"{"content":"go"}"#)))
            .await,
    )
    .await;
    assert_eq!((status, err.error.code.as_str()), (504, "timeout"));
}

#[tokio::test]
async fn a_dropped_client_resumes_from_last_event_id_with_the_whole_accumulated_text() {
    let c = Chat::new();
    let id = c.thread(ALICE).await;
    let uri = format!("/chat/threads/{id}/messages/stream");
    let full = events(
        c.call(req(
            "POST",
            &uri,
            Some(ALICE),
            Some(r#"{"content":"resume me"}"#),
        ))
        .await,
    )
    .await;
    let connected = &full[0].1.data;
    let resume = connected["resumeUrl"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = connected["streamToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Cut after the third answer chunk.
    let with_ids: Vec<_> = full.iter().filter(|(s, _)| s.id.is_some()).collect();
    let cut = with_ids[3].0.id.clone().unwrap_or_default();
    let expected: Vec<_> = with_ids[4..]
        .iter()
        .map(|(s, e)| (s.id.clone(), e.kind, e.data.clone()))
        .collect();

    for (uri, bearer) in [
        (resume.clone(), Some(ALICE)),
        (format!("{resume}?token={token}"), None),
        (format!("{resume}?token={token}&lastEventId={cut}"), None),
    ] {
        let mut r = req("GET", &uri, bearer, None);
        if !uri.contains("lastEventId") {
            r.headers_mut().insert(
                "last-event-id",
                cut.parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        let again = events(c.call(r).await).await;
        assert_eq!(again[0].1.data["resumed"], true, "{uri}");
        let got: Vec<_> = again[1..]
            .iter()
            .map(|(s, e)| (s.id.clone(), e.kind, e.data.clone()))
            .collect();
        assert_eq!(got, expected, "{uri}");
    }

    // A stream token of another message does not open this one.
    let other = c
        .state
        .stream_signer()
        .sign(&StreamKey::new(id.as_str(), "other"));
    let (status, _, _) = error_body(
        c.call(req("GET", &format!("{resume}?token={other}"), None, None))
            .await,
    )
    .await;
    assert_eq!(status, 403);
}
