//! The OpenAI Responses API router: objects, events, stored responses, background mode,
//! resume, cancel, delete, input items and errors, through `Router::oneshot`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::auth::StaticTokens;
use chatstream_axum::responses::{self, ResponsesRouteConfig};
use chatstream_axum::SseConfig;
use chatstream_core::wire::sse::SseEvent;
use chatstream_core::{
    ChatRequest, GatewayConfig, InMemoryResponseStore, ResponseStore, ScriptedBackend, StreamKey,
};
use common::*;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Setup {
    p: Pipeline,
    store: InMemoryResponseStore,
}

fn setup_with(backend: ScriptedBackend, gateway: GatewayConfig, auth: bool) -> Setup {
    let tokens = StaticTokens::new()
        .with("alice-key", "alice")
        .with("bob-key", "bob");
    let p = Pipeline::with(backend, gateway, |s| {
        s.with_sse_config(SseConfig::default().with_keep_alive(None))
            .with_authenticator(Arc::new(tokens))
            .with_stream_auth(auth)
            .with_body_limit(4096)
    });
    Setup {
        p,
        store: InMemoryResponseStore::default(),
    }
}

fn setup() -> Setup {
    setup_with(ScriptedBackend::default(), GatewayConfig::default(), false)
}

/// A slow answer, to cancel or leave in the middle.
fn slow() -> ScriptedBackend {
    ScriptedBackend::default()
        .with_delay(Duration::from_millis(20))
        .with_repeat(20)
}

impl Setup {
    fn app(&self) -> Router {
        let config = ResponsesRouteConfig::new(Arc::new(self.store.clone())).with_model("scripted");
        responses::router(self.p.state.clone(), config)
    }

    async fn call(&self, req: Request<Body>) -> Response<Body> {
        match self.app().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    async fn json(&self, req: Request<Body>) -> (u16, Value) {
        let resp = self.call(req).await;
        let status = resp.status().as_u16();
        let text = body_text(resp).await;
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, v)
    }

    async fn events(&self, req: Request<Body>) -> Vec<SseEvent> {
        let resp = self.call(req).await;
        assert_eq!(resp.status(), 200);
        let ct = resp.headers().get("content-type").cloned();
        assert_eq!(
            ct.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        sse_events(resp).await
    }

    /// Polls `GET /v1/responses/{id}` until it is final.
    async fn final_state(&self, id: &str) -> Value {
        within(async {
            loop {
                let (status, v) = self.json(get(&format!("/v1/responses/{id}"))).await;
                assert_eq!(status, 200, "{v}");
                if !matches!(v["status"].as_str(), Some("queued" | "in_progress")) {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

fn with_bearer(mut req: Request<Body>, token: &str) -> Request<Body> {
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.headers_mut().insert("authorization", v);
    }
    req
}

fn post(uri: &str, body: impl Into<Value>) -> Request<Body> {
    let body: Value = body.into();
    post_json(uri, &body.to_string())
}

fn data(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("not JSON ({err}): {}", e.data))
}

fn kinds(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| data(e)["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn numbers(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| data(e)["sequence_number"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

fn deltas(events: &[SseEvent]) -> String {
    events
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn expected(p: &Pipeline, id: &str, said: &str) -> String {
    p.backend
        .answer(&ChatRequest::new(StreamKey::new(id, id), said))
}

#[tokio::test]
async fn a_plain_response_is_the_whole_object_with_output_text_and_is_stored() {
    let s = setup();
    let body = json!({"model": "scripted", "input": "hello", "instructions": "be kind", "temperature": 0.5, "metadata": {"k": "v"}});
    let (status, v) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "scripted");
    assert_eq!(v["instructions"], "be kind");
    assert_eq!(v["temperature"], 0.5);
    assert_eq!(v["metadata"], json!({"k": "v"}));
    let answer = expected(&s.p, &id, "hello");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["role"], "assistant");
    assert_eq!(v["output"][0]["content"][0]["text"], answer.as_str());
    assert_eq!(v["output_text"], answer.as_str());

    let (status, again) = s.json(get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(again, v, "the stored response reads back the same");
}

#[tokio::test]
async fn a_streamed_response_sends_the_events_in_the_sdks_order() {
    let s = setup();
    let events = s
        .events(post(
            "/v1/responses",
            json!({"input": "hi", "stream": true}),
        ))
        .await;
    let kinds = kinds(&events);
    let head = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ];
    assert_eq!(kinds[..5], head, "{kinds:?}");
    let tail = [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ];
    assert_eq!(kinds[kinds.len() - 4..], tail, "{kinds:?}");
    let n = numbers(&events);
    assert!(n.windows(2).all(|w| w[0] < w[1]), "{n:?}");
    let last = data(events.last().expect("events"));
    let id = last["response"]["id"].as_str().expect("id").to_owned();
    let answer = expected(&s.p, &id, "hi");
    assert_eq!(deltas(&events), answer);
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        answer.as_str()
    );
    // The default model is named; the stored record reaches `completed` by itself.
    assert_eq!(last["response"]["model"], "scripted");
    let stored = s.final_state(&id).await;
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["output_text"], answer.as_str());
}

#[tokio::test]
async fn background_answers_queued_at_once_and_resumes_exactly_after_any_event() {
    let s = setup();
    let (status, v) = s
        .json(post(
            "/v1/responses",
            json!({"input": "later", "background": true}),
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["background"], true);
    let id = v["id"].as_str().expect("id").to_owned();
    let done = s.final_state(&id).await;
    assert_eq!(done["status"], "completed");
    let answer = expected(&s.p, &id, "later");
    assert_eq!(done["output_text"], answer.as_str());

    let uri = format!("/v1/responses/{id}?stream=true");
    let whole = s.events(get(&uri)).await;
    assert_eq!(
        deltas(&whole),
        answer,
        "a read after the end replays the whole answer"
    );
    let n = numbers(&whole);
    for after in [n[0], n[3], n[n.len() / 2], n[n.len() - 2]] {
        let resumed = s
            .events(get(&format!("{uri}&starting_after={after}")))
            .await;
        let rest: Vec<_> = whole
            .iter()
            .filter(|e| data(e)["sequence_number"].as_u64() > Some(after))
            .collect();
        assert_eq!(resumed.len(), rest.len(), "starting_after={after}");
        for (a, b) in resumed.iter().zip(rest) {
            assert_eq!(a.data, b.data, "starting_after={after}");
        }
    }
}

#[tokio::test]
async fn background_with_stream_streams_and_the_record_completes() {
    let s = setup();
    let events = s
        .events(post(
            "/v1/responses",
            json!({"input": "x", "background": true, "stream": true}),
        ))
        .await;
    let first = data(&events[0]);
    assert_eq!(first["response"]["status"], "queued");
    let id = first["response"]["id"].as_str().expect("id").to_owned();
    assert_eq!(deltas(&events), expected(&s.p, &id, "x"));
    assert_eq!(s.final_state(&id).await["status"], "completed");
}

#[tokio::test]
async fn previous_response_id_continues_the_stored_conversation() {
    let s = setup();
    let (_, first) = s
        .json(post(
            "/v1/responses",
            json!({"input": "one", "instructions": "sys"}),
        ))
        .await;
    let first_id = first["id"].as_str().expect("id");
    let body = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "two"}]}], "previous_response_id": first_id});
    let (status, second) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], first_id);
    let second_id = second["id"].as_str().expect("id");
    let record = s.store.get(second_id).await.expect("get").expect("stored");
    let said: Vec<(&str, &str)> = record
        .context
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    let first_answer = first["output_text"].as_str().expect("text");
    // Instructions do not carry over; the history does, from the store.
    assert_eq!(
        said,
        [
            ("user", "one"),
            ("assistant", first_answer),
            ("user", "two")
        ]
    );

    let body = json!({"input": "x", "previous_response_id": "resp_nope"});
    let (status, e) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn cancel_leaves_cancelled_with_the_partial_output_and_usage() {
    let s = setup_with(slow(), GatewayConfig::default(), false);
    let (_, v) = s
        .json(post(
            "/v1/responses",
            json!({"input": "long", "background": true}),
        ))
        .await;
    let id = v["id"].as_str().expect("id").to_owned();
    // Wait for the first delta.
    let resp = s
        .call(get(&format!("/v1/responses/{id}?stream=true")))
        .await;
    let mut body = resp.into_body();
    within(async {
        while !next_chunk(&mut body)
            .await
            .contains("response.output_text.delta")
        {}
    })
    .await;
    drop(body);
    let (status, c) = s
        .json(post_json(&format!("/v1/responses/{id}/cancel"), ""))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["status"], "cancelled");
    let text = c["output_text"].as_str().expect("text");
    let answer = expected(&s.p, &id, "long");
    assert!(!text.is_empty() && text.len() < answer.len(), "{text:?}");
    assert!(answer.starts_with(text), "{text:?}");
    assert!(c["usage"]["output_tokens"].as_u64() > Some(0), "{c}");
    // A second cancel (and a read) gives the same response.
    let (_, again) = s
        .json(post_json(&format!("/v1/responses/{id}/cancel"), ""))
        .await;
    assert_eq!(again, c);
    assert_eq!(s.final_state(&id).await, c);
}

#[tokio::test]
async fn cancel_of_a_finished_response_returns_it_unchanged() {
    let s = setup();
    let (_, v) = s.json(post("/v1/responses", json!({"input": "a"}))).await;
    let id = v["id"].as_str().expect("id");
    let (status, c) = s
        .json(post_json(&format!("/v1/responses/{id}/cancel"), ""))
        .await;
    assert_eq!(status, 200);
    assert_eq!(c, v);
}

#[tokio::test]
async fn a_streamed_response_whose_client_left_is_cancelled_after_the_grace() {
    let gateway = GatewayConfig {
        cancel_grace: Duration::from_millis(50),
        ..GatewayConfig::default()
    };
    let s = setup_with(slow(), gateway, false);
    let resp = s
        .call(post(
            "/v1/responses",
            json!({"input": "bye", "stream": true}),
        ))
        .await;
    let mut body = resp.into_body();
    let first = next_chunk(&mut body).await;
    let id = first
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the response id in response.created")
        .to_owned();
    within(async {
        while !next_chunk(&mut body)
            .await
            .contains("response.output_text.delta")
        {}
    })
    .await;
    drop(body);
    let done = s.final_state(&id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(!done["output_text"].as_str().unwrap_or_default().is_empty());
}

#[tokio::test]
async fn delete_and_input_items_answer_as_openai() {
    let s = setup();
    let input = json!([{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]);
    let (_, v) = s.json(post("/v1/responses", json!({"input": input}))).await;
    let id = v["id"].as_str().expect("id");
    let (status, items) = s
        .json(get(&format!("/v1/responses/{id}/input_items")))
        .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], false);
    let data = items["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["role"], "user", "newest first by default");
    assert_eq!(
        data[0]["content"][0],
        json!({"type": "input_text", "text": "u"})
    );
    assert_eq!(items["first_id"], data[0]["id"]);
    let (_, asc) = s
        .json(get(&format!(
            "/v1/responses/{id}/input_items?order=asc&limit=1"
        )))
        .await;
    assert_eq!(asc["data"][0]["role"], "developer");
    assert_eq!(asc["has_more"], true);

    let del = |id: &str| {
        request(
            "DELETE",
            &format!("/v1/responses/{id}"),
            None,
            Body::empty(),
        )
    };
    let (status, d) = s.json(del(id)).await;
    assert_eq!(status, 200);
    assert_eq!(d, json!({"id": id, "object": "response", "deleted": true}));
    let (status, e) = s.json(get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(
        e["error"]["message"],
        format!("Response with id '{id}' not found.")
    );
    let (status, _) = s.json(del(id)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn errors_have_openais_shape_and_status() {
    let s = setup();
    let shape = |v: &Value| {
        let e = &v["error"];
        assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    };
    let (status, v) = s.json(post_json("/v1/responses", "{not json")).await;
    assert_eq!(status, 400);
    shape(&v);
    let body = json!({"input": [{"type": "computer_call_output", "call_id": "c"}]});
    let (status, v) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "input[0].type");
    let (status, v) = s.json(post("/v1/responses", json!({"model": "m"}))).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("input")));
    let body = json!({"input": "x", "tools": [{"type": "web_search"}]});
    let (status, _) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 400);
    let f = |extra: Value| {
        let mut tool = json!({"type": "function", "name": "get_weather"});
        if let (Some(t), Value::Object(extra)) = (tool.as_object_mut(), extra) {
            t.extend(extra);
        }
        tool
    };
    for (tools, param) in [
        (json!([{"type": "function"}]), "tools[0].name"),
        (json!([f(json!({"name": ""}))]), "tools[0].name"),
        (
            json!([f(json!({"parameters": "{}"}))]),
            "tools[0].parameters",
        ),
        (
            json!([f(json!({"description": 3}))]),
            "tools[0].description",
        ),
        (json!([f(json!({})), f(json!({}))]), "tools[1].name"),
    ] {
        let body = json!({"input": "x", "tools": tools});
        let (status, v) = s.json(post("/v1/responses", body)).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{v}"
        );
    }
    let (status, v) = s.json(get("/v1/responses/resp_unknown")).await;
    assert_eq!(status, 404);
    shape(&v);
    let big = json!({"input": "x".repeat(5000)});
    let (status, v) = s.json(post("/v1/responses", big)).await;
    assert_eq!(status, 413);
    shape(&v);
}

#[tokio::test]
async fn with_auth_a_key_is_needed_and_users_see_only_their_responses() {
    let s = setup_with(ScriptedBackend::default(), GatewayConfig::default(), true);
    let (status, v) = s.json(post("/v1/responses", json!({"input": "x"}))).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"]["message"].is_string());
    let (status, v) = s
        .json(with_bearer(
            post("/v1/responses", json!({"input": "x"})),
            "wrong",
        ))
        .await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = s
        .json(with_bearer(
            post("/v1/responses", json!({"input": "x"})),
            "alice-key",
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("id");
    let uri = format!("/v1/responses/{id}");
    let (status, _) = s.json(with_bearer(get(&uri), "alice-key")).await;
    assert_eq!(status, 200);
    let (status, _) = s.json(with_bearer(get(&uri), "bob-key")).await;
    assert_eq!(status, 404, "another user's response is unknown to them");
    let body = json!({"input": "y", "previous_response_id": id});
    let (status, _) = s
        .json(with_bearer(post("/v1/responses", body), "bob-key"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn store_false_keeps_nothing() {
    let s = setup();
    let (status, v) = s
        .json(post("/v1/responses", json!({"input": "x", "store": false})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["store"], false);
    let id = v["id"].as_str().expect("id");
    let (status, _) = s.json(get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(status, 404);
    let body = json!({"input": "x", "store": false, "background": true});
    let (status, _) = s.json(post("/v1/responses", body)).await;
    assert_eq!(status, 400);
}
