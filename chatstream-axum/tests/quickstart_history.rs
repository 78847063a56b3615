//! `GET /api/chat/{sessionId}/messages`: a session's stored exchanges, as the quickstart
//! page reads them on reload; only the caller's own conversation; JSON errors otherwise.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use chatstream_axum::auth::StaticTokens;
use chatstream_axum::quickstart::{HistoryResponse, SubmitResponse};
use chatstream_axum::{quickstart, seed001, ChatstreamState};
use chatstream_core::{
    ChatRequest, CoalesceConfig, Gateway, InMemoryBroker, InMemoryConversationStore, Role,
    ScriptedBackend, StreamKey, Worker, WorkerConfig, WorkerHandle,
};
use common::{answer_text, body_text, error_body, get, post_json, request, sse_events};
use tower::ServiceExt;

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

/// Broker, worker and gateway sharing one conversation store with the routers, as the
/// quickstart example assembles them.
struct App {
    state: ChatstreamState,
    backend: ScriptedBackend,
    _worker: WorkerHandle,
}

impl App {
    fn new(
        backend: ScriptedBackend,
        state: impl FnOnce(ChatstreamState) -> ChatstreamState,
    ) -> Self {
        let broker = InMemoryBroker::new();
        let store = Arc::new(InMemoryConversationStore::default());
        let worker = Worker::builder(
            Arc::new(broker.message_source()),
            Arc::new(broker.clone()),
            Arc::new(backend.clone()),
        )
        .cancels(Arc::new(broker.clone()))
        .store(store.clone())
        .config(WorkerConfig {
            coalesce: CoalesceConfig::off(),
            ..WorkerConfig::default()
        })
        .build()
        .spawn();
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone()))
            .cancels(Arc::new(broker))
            .build();
        let state = state(ChatstreamState::new(gateway).with_store(store));
        Self {
            state,
            backend,
            _worker: worker,
        }
    }

    fn with_auth(backend: ScriptedBackend) -> Self {
        let tokens = StaticTokens::new().with(ALICE, "alice").with(BOB, "bob");
        Self::new(backend, |s| {
            s.with_authenticator(Arc::new(tokens))
                .with_stream_auth(true)
        })
    }

    fn router(&self) -> Router {
        seed001::router(self.state.clone())
            .merge(quickstart::router(self.state.clone()))
            .fallback(chatstream_axum::not_found)
            .method_not_allowed_fallback(chatstream_axum::method_not_allowed)
    }

    async fn call(&self, req: Request<Body>) -> Response<Body> {
        match self.router().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// Submits `text` (in `session` when given) as `bearer` (when given).
    async fn submit(
        &self,
        text: &str,
        session: Option<&str>,
        bearer: Option<&str>,
    ) -> SubmitResponse {
        let body = match session {
            Some(s) => serde_json::json!({"text": text, "sessionId": s}),
            None => serde_json::json!({"text": text}),
        };
        let req = authorized(post_json("/api/chat", &body.to_string()), bearer);
        let resp = self.call(req).await;
        assert_eq!(resp.status(), 202);
        let text = body_text(resp).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad 202 body ({e}): {text}"))
    }

    /// Reads the answer's stream to its end; returns the answer's text.
    async fn read_answer(&self, s: &SubmitResponse, bearer: Option<&str>) -> String {
        let events = sse_events(self.call(authorized(get(&s.stream), bearer)).await).await;
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
        answer_text(&events)
    }

    /// `GET /api/chat/{session}/messages` answered 200: the stored messages as
    /// `(role, content)`.
    async fn history(&self, session: &str, bearer: Option<&str>) -> Vec<(Role, String)> {
        let path = format!("/api/chat/{session}/messages");
        let resp = self.call(authorized(get(&path), bearer)).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = body_text(resp).await;
        let body: HistoryResponse =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad history ({e}): {text}"));
        assert_eq!(body.session_id, session);
        body.messages
            .into_iter()
            .map(|m| (m.role, m.content))
            .collect()
    }

    /// The status and error code of a history request that must fail.
    async fn history_error(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let (status, ct, body) = error_body(self.call(authorized(get(path), bearer)).await).await;
        assert_eq!(ct, "application/json", "{path}");
        assert!(!body.error.message.is_empty());
        (status, body.error.code)
    }

    fn answer(&self, s: &SubmitResponse, text: &str) -> String {
        let key = StreamKey::new(s.session_id.as_str(), s.message_id.as_str());
        self.backend.answer(&ChatRequest::new(key, text))
    }
}

fn authorized(mut req: Request<Body>, bearer: Option<&str>) -> Request<Body> {
    if let Some(token) = bearer {
        let value = format!("Bearer {token}").parse();
        req.headers_mut()
            .insert("authorization", value.unwrap_or_else(|_| unreachable!()));
    }
    req
}

fn user(text: &str) -> (Role, String) {
    (Role::User, text.to_owned())
}

fn assistant(text: &str) -> (Role, String) {
    (Role::Assistant, text.to_owned())
}

#[tokio::test]
async fn the_history_holds_each_finished_exchange_in_order() {
    let app = App::new(ScriptedBackend::default(), |s| s);
    let first = app.submit("one", Some("my-session_1"), None).await;
    let answer1 = app.read_answer(&first, None).await;
    assert_eq!(answer1, app.answer(&first, "one"));
    assert_eq!(
        app.history("my-session_1", None).await,
        [user("one"), assistant(&answer1)]
    );

    let second = app.submit("two", Some("my-session_1"), None).await;
    let answer2 = app.read_answer(&second, None).await;
    assert_eq!(
        app.history("my-session_1", None).await,
        [
            user("one"),
            assistant(&answer1),
            user("two"),
            assistant(&answer2)
        ]
    );

    // Another session's history is its own.
    let other = app.submit("three", None, None).await;
    let answer3 = app.read_answer(&other, None).await;
    assert_eq!(
        app.history(&other.session_id, None).await,
        [user("three"), assistant(&answer3)]
    );
}

#[tokio::test]
async fn a_session_whose_first_answer_is_streaming_has_an_empty_history() {
    // Slow enough that the answer is still being written when the history is read; the
    // stop ends it at once.
    let app = App::new(
        ScriptedBackend::default().with_delay(Duration::from_secs(5)),
        |s| s,
    );
    let s = app.submit("slow", None, None).await;
    assert_eq!(app.history(&s.session_id, None).await, []);

    // Stopped: the stream ends, and the exchange is stored with what was said so far.
    let stop = app
        .call(request("DELETE", &s.stream, None, Body::empty()))
        .await;
    assert!(
        stop.status() == 202 || stop.status() == 200,
        "{}",
        stop.status()
    );
    let partial = app.read_answer(&s, None).await;
    let full = app.answer(&s, "slow");
    assert!(
        full.starts_with(&partial) && partial.len() < full.len(),
        "{partial:?}"
    );
    let mut want = vec![user("slow")];
    if !partial.is_empty() {
        want.push(assistant(&partial));
    }
    assert_eq!(app.history(&s.session_id, None).await, want);
}

#[tokio::test]
async fn unknown_sessions_and_bad_ids_are_json_errors() {
    let app = App::new(ScriptedBackend::default(), |s| s);
    assert_eq!(
        app.history_error("/api/chat/never-used/messages", None)
            .await,
        (404, "not_found".to_owned())
    );
    let long = format!("/api/chat/{}/messages", "x".repeat(129));
    for bad in [
        "/api/chat/a%20b/messages",
        "/api/chat/%C3%A9/messages",
        &long,
    ] {
        assert_eq!(
            app.history_error(bad, None).await,
            (400, "invalid_field".to_owned()),
            "{bad}"
        );
    }
    assert_eq!(
        app.history_error("/api/chat/a/b/messages", None).await.0,
        404
    );
    let post = app.call(post_json("/api/chat/s/messages", "{}")).await;
    let (status, _, body) = error_body(post).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (405, "method_not_allowed")
    );
}

#[tokio::test]
async fn without_a_store_the_route_says_so() {
    let broker = InMemoryBroker::new();
    let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker)).build();
    let router = quickstart::router(ChatstreamState::new(gateway));
    let resp = match router.oneshot(get("/api/chat/s/messages")).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (status, ct, body) = error_body(resp).await;
    assert_eq!(
        (status, ct.as_str(), body.error.code.as_str()),
        (500, "application/json", "internal")
    );
}

#[tokio::test]
async fn with_stream_auth_a_user_reads_only_its_own_conversation() {
    let app = App::with_auth(ScriptedBackend::default());
    let a = app
        .submit("alice speaks", Some("shared"), Some(ALICE))
        .await;
    let answer_a = app.read_answer(&a, Some(ALICE)).await;
    assert_eq!(
        app.history("shared", Some(ALICE)).await,
        [user("alice speaks"), assistant(&answer_a)]
    );

    // No or bad credentials: 401, as for the submit route.
    let path = "/api/chat/shared/messages";
    assert_eq!(
        app.history_error(path, None).await,
        (401, "unauthorized".to_owned())
    );
    assert_eq!(
        app.history_error(path, Some("nope")).await,
        (401, "unauthorized".to_owned())
    );
    // A stream token opens one stream, not a conversation.
    let token = a.stream_token.clone().unwrap_or_default();
    assert_eq!(app.history_error(path, Some(&token)).await.0, 401);

    // Another user naming the same session: 404, as if it did not exist.
    assert_eq!(
        app.history_error(path, Some(BOB)).await,
        (404, "not_found".to_owned())
    );
    // Once that user speaks in a session of that name, it reads its own conversation only.
    let b = app.submit("bob speaks", Some("shared"), Some(BOB)).await;
    let answer_b = app.read_answer(&b, Some(BOB)).await;
    assert_eq!(
        app.history("shared", Some(BOB)).await,
        [user("bob speaks"), assistant(&answer_b)]
    );
    assert_eq!(
        app.history("shared", Some(ALICE)).await,
        [user("alice speaks"), assistant(&answer_a)]
    );
}

#[tokio::test]
async fn with_stream_auth_a_first_answer_in_flight_is_an_empty_history_for_its_owner_only() {
    let app = App::with_auth(ScriptedBackend::default().with_delay(Duration::from_secs(5)));
    let a = app.submit("slow", Some("fresh"), Some(ALICE)).await;
    assert_eq!(app.history("fresh", Some(ALICE)).await, []);
    assert_eq!(
        app.history_error("/api/chat/fresh/messages", Some(BOB))
            .await,
        (404, "not_found".to_owned())
    );
    let stop = authorized(request("DELETE", &a.stream, None, Body::empty()), None);
    assert!(app.call(stop).await.status().is_success());
}
