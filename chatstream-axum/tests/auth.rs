//! Per-stream authorization on the seed 001 stream route and the quickstart's submit route,
//! switched on in the state: only the submitter or a stream token opens a stream, and
//! refusals are logged.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::Request;
use chatstream_axum::auth::StaticTokens;
use chatstream_axum::quickstart::SubmitResponse;
use chatstream_core::{GatewayConfig, ScriptedBackend, StreamKey};
use common::*;

const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";

fn pipeline(stream_auth: bool) -> Pipeline {
    let tokens = StaticTokens::new().with(ALICE, "alice").with(BOB, "bob");
    Pipeline::with(ScriptedBackend::default(), GatewayConfig::default(), |s| {
        s.with_authenticator(Arc::new(tokens))
            .with_stream_auth(stream_auth)
    })
}

fn with_bearer(mut req: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse();
    req.headers_mut()
        .insert("authorization", value.unwrap_or_else(|_| unreachable!()));
    req
}

async fn submit(p: &Pipeline, token: &str) -> SubmitResponse {
    let req = with_bearer(post_json("/api/chat", r#"{"text":"hi"}"#), token);
    let resp = p.call(req).await;
    assert_eq!(resp.status(), 202);
    let body = body_text(resp).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn path(s: &SubmitResponse) -> String {
    format!("/api/stream/{}/{}", s.session_id, s.message_id)
}

/// The warnings of this test binary, from a global subscriber writing into a shared buffer.
/// Not a scoped one (`with_subscriber`): tracing caches whether anyone wants a callsite's
/// events, and a callsite another test thread hit while no subscriber was in scope could be
/// cached as unwanted, so the scoped subscriber missed the event now and then.
fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .unwrap_or_else(|e| panic!("a global subscriber was set already: {e}"));
        logs
    })
}

/// A buffer that log lines are written into.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_or(Ok(0), |mut v| {
            v.extend_from_slice(buf);
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn submitting_needs_a_bearer_token_and_returns_a_stream_token() {
    let p = pipeline(true);
    let resp = p.call(post_json("/api/chat", r#"{"text":"hi"}"#)).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (status, _, err) = error_body(resp).await;
    assert_eq!((status, err.error.code.as_str()), (401, "unauthorized"));

    let s = submit(&p, ALICE).await;
    let token = s.stream_token.clone().unwrap_or_default();
    assert!(token.starts_with("st1."), "{s:?}");
    assert_eq!(s.stream, format!("{}?token={token}", path(&s)));
}

#[tokio::test]
async fn the_submitter_may_read_its_stream_and_another_user_may_not() {
    let p = pipeline(true);
    let s = submit(&p, ALICE).await;

    let logs = logs();
    let resp = p.call(with_bearer(get(&path(&s)), BOB)).await;
    let (status, _, err) = error_body(resp).await;
    assert_eq!((status, err.error.code.as_str()), (404, "not_found"));
    let logged = logs.text();
    assert!(logged.contains("stream access refused"), "{logged}");
    assert!(logged.contains("bob"), "{logged}");
    assert!(logged.contains(&*s.message_id), "{logged}");

    let (status, _, _) = error_body(p.call(get(&path(&s))).await).await;
    assert_eq!(status, 401, "no credentials");
    let (status, _, _) = error_body(p.call(with_bearer(get(&path(&s)), "nobody")).await).await;
    assert_eq!(status, 401, "unknown bearer");

    let events = sse_events(p.call(with_bearer(get(&path(&s)), ALICE)).await).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
    assert!(answer_text(&events).contains("You said: \"hi\""));
}

#[tokio::test]
async fn a_stream_token_opens_its_stream_only() {
    let p = pipeline(true);
    let s = submit(&p, ALICE).await;
    let token = s.stream_token.clone().unwrap_or_default();

    // The URL from the submit answer, as an EventSource opens it, and the bearer form.
    let events = sse_events(p.call(get(&s.stream)).await).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
    let resp = p.call(with_bearer(get(&path(&s)), &token)).await;
    assert_eq!(resp.status(), 200);

    let other = submit(&p, BOB).await;
    let uri = format!("{}?token={token}", path(&other));
    let (status, _, err) = error_body(p.call(get(&uri)).await).await;
    assert_eq!((status, err.error.code.as_str()), (403, "forbidden"));

    let key = StreamKey::new(s.session_id.as_str(), s.message_id.as_str());
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = p.state.stream_signer().sign_at(&key, long_ago);
    let uri = format!("{}?token={expired}", path(&s));
    let (status, _, err) = error_body(p.call(get(&uri)).await).await;
    assert_eq!((status, err.error.code.as_str()), (401, "unauthorized"));
    assert!(
        err.error.message.contains("expired"),
        "{}",
        err.error.message
    );
}

#[tokio::test]
async fn with_stream_auth_off_nothing_is_asked() {
    let p = pipeline(false);
    let resp = p.call(post_json("/api/chat", r#"{"text":"hi"}"#)).await;
    assert_eq!(resp.status(), 202);
    let body = body_text(resp).await;
    assert!(!body.contains("streamToken"), "{body}");
    let s: SubmitResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    let events = sse_events(p.call(get(&s.stream)).await).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("__END__"));
}
