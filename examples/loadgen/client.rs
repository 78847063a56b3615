//! The SSE clients: one task per client, real HTTP/1.1 over loopback (hyper), each
//! submitting one request with `POST /api/chat` and reading its answer from seed 001's
//! `GET /api/stream/{sessionId}/{messageId}`, checking every token's number and timing it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::backend::{realtime_us, Plan};

/// The HTTP client every task shares (one connection per concurrent request).
pub(crate) type Http = Client<HttpConnector, Body>;

pub(crate) fn http() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// Counts clients whose stream is open (response headers in) or failed to open.
#[derive(Debug, Default)]
pub(crate) struct Ramp {
    pub(crate) opened: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) changed: Notify,
    /// Tokens received by every client so far (the progress line).
    pub(crate) received: std::sync::atomic::AtomicU64,
}

impl Ramp {
    fn open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }
    fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }
    /// Waits until `n` clients opened or failed.
    pub(crate) async fn settled(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.opened.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed) >= n {
                return;
            }
            changed.await;
        }
    }
}

/// What one client saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Distinct tokens received.
    pub(crate) tokens: u64,
    /// Token numbers never received.
    pub(crate) missing: u64,
    /// Tokens received more than once (or out of order).
    pub(crate) duplicates: u64,
    /// Whether `__END__` arrived.
    pub(crate) ended: bool,
    /// The first thing that went wrong.
    pub(crate) error: Option<String>,
    /// Emit → receive of token 0, µs.
    pub(crate) first_us: Option<u32>,
    /// Emit → receive of every token, µs.
    pub(crate) latencies: Vec<u32>,
    /// When the last token arrived.
    pub(crate) last_token: Option<Instant>,
}

/// What every load client shares.
#[derive(Debug, Clone)]
pub(crate) struct LoadShared {
    pub(crate) http: Http,
    pub(crate) addr: SocketAddr,
    pub(crate) run: String,
    pub(crate) epoch_us: u64,
    pub(crate) ramp: Arc<Ramp>,
    /// Connections being opened at once, at most.
    pub(crate) connecting: Arc<Semaphore>,
    /// When every client gives up.
    pub(crate) deadline: Instant,
}

/// One load client: submit, open the stream, read it to the end.
pub(crate) async fn load_client(shared: LoadShared, index: usize, plan: Plan) -> Outcome {
    let mut out = Outcome {
        latencies: Vec::with_capacity(plan.tokens as usize),
        ..Outcome::default()
    };
    let permit = shared.connecting.acquire().await;
    let body = match open_stream(&shared, index, plan).await {
        Ok(body) => body,
        Err(e) => {
            shared.ramp.fail();
            out.error = Some(e);
            return out;
        }
    };
    drop(permit);
    shared.ramp.open();
    let read = read_stream(body, &shared, &mut out);
    if tokio::time::timeout_at(shared.deadline, read)
        .await
        .is_err()
    {
        out.error.get_or_insert_with(|| "time limit".to_owned());
    }
    if out.ended {
        out.missing += u64::from(plan.tokens).saturating_sub(out.tokens + out.missing);
    }
    out
}

async fn open_stream(shared: &LoadShared, index: usize, plan: Plan) -> Result<Body, String> {
    let submit = serde_json::json!({
        "text": plan.text(),
        "sessionId": format!("{}-{index}", shared.run),
    });
    let request = Request::post(format!("http://{}/api/chat", shared.addr))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(submit.to_string()))
        .map_err(|e| e.to_string())?;
    let response = shared
        .http
        .request(request)
        .await
        .map_err(|e| format!("submit: {e}"))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
        .await
        .map_err(|e| format!("submit body: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!(
            "submit: {status} {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("submit answer: {e}"))?;
    let path = answer["stream"]
        .as_str()
        .ok_or("submit answer without stream")?;
    get_stream(&shared.http, shared.addr, path).await
}

/// `GET` an SSE stream; its body once the headers say 200.
async fn get_stream(http: &Http, addr: SocketAddr, path: &str) -> Result<Body, String> {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("stream: {}", response.status()));
    }
    Ok(Body::new(response.into_body()))
}

/// Follows one stream's tokens: numbering, timing.
struct Tokens<'a> {
    out: &'a mut Outcome,
    next: u32,
    /// Text of a token not complete yet (the seeds' mode sends a character at a time).
    partial: String,
}

impl Tokens<'_> {
    fn text(&mut self, text: &str, now_us: u64, now: Instant) {
        if !self.partial.is_empty() {
            let mut joined = std::mem::take(&mut self.partial);
            joined.push_str(text);
            self.complete(&joined, now_us, now);
            return;
        }
        self.complete(text, now_us, now);
    }

    /// Takes the whole tokens of `text` (each ends with a space) and keeps the rest.
    fn complete(&mut self, text: &str, now_us: u64, now: Instant) {
        let (whole, rest) = match text.rfind(' ') {
            Some(end) => (&text[..end], &text[end + 1..]),
            None => ("", text),
        };
        for token in whole.split(' ').filter(|t| !t.is_empty()) {
            self.token(token, now_us, now);
        }
        self.partial.push_str(rest);
    }

    fn token(&mut self, token: &str, now_us: u64, now: Instant) {
        let parsed = token
            .split_once(':')
            .and_then(|(k, us)| Some((k.parse::<u32>().ok()?, us.parse::<u64>().ok()?)));
        let Some((k, emitted)) = parsed else {
            self.out
                .error
                .get_or_insert_with(|| format!("garbled token {token:?}"));
            return;
        };
        if k < self.next {
            self.out.duplicates += 1;
            return;
        }
        self.out.missing += u64::from(k - self.next);
        self.next = k + 1;
        self.out.tokens += 1;
        let latency = u32::try_from(now_us.saturating_sub(emitted)).unwrap_or(u32::MAX);
        if k == 0 {
            self.out.first_us = Some(latency);
        }
        self.out.latencies.push(latency);
        self.out.last_token = Some(now);
    }
}

async fn read_stream(body: Body, shared: &LoadShared, out: &mut Outcome) {
    let mut chunks = body.into_data_stream();
    let mut sse = SseLines::default();
    let mut state = Tokens {
        out,
        next: 0,
        partial: String::new(),
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                state.out.error.get_or_insert_with(|| format!("body: {e}"));
                return;
            }
        };
        let now = Instant::now();
        let now_us = realtime_us().saturating_sub(shared.epoch_us);
        let mut ended = false;
        let before = state.out.tokens;
        sse.feed(&chunk, |data| {
            if data == b"__END__" {
                ended = true;
            } else if let Some(text) = data
                .strip_prefix(br#"{"token": ""#)
                .and_then(|d| d.strip_suffix(br#""}"#))
            {
                match std::str::from_utf8(text) {
                    Ok(text) => state.text(text, now_us, now),
                    Err(_) => {
                        state.out.error.get_or_insert_with(|| "not UTF-8".into());
                    }
                }
            } else {
                let text = String::from_utf8_lossy(data).into_owned();
                state.out.error.get_or_insert(text);
            }
        });
        let got = state.out.tokens - before;
        shared.ramp.received.fetch_add(got, Ordering::Relaxed);
        if ended {
            state.out.ended = true;
            return;
        }
    }
    state
        .out
        .error
        .get_or_insert_with(|| "stream closed before __END__".into());
}

/// Splits an SSE body into the payloads of its `data:` lines.
#[derive(Debug, Default)]
struct SseLines {
    buf: Vec<u8>,
}

impl SseLines {
    fn feed(&mut self, chunk: &[u8], mut on_data: impl FnMut(&[u8])) {
        if self.buf.is_empty() {
            let used = blocks(chunk, &mut on_data);
            self.buf.extend_from_slice(&chunk[used..]);
        } else {
            self.buf.extend_from_slice(chunk);
            let used = blocks(&self.buf, &mut on_data);
            self.buf.drain(..used);
        }
    }
}

/// Hands over the `data:` payloads of the complete events of `text`; the bytes used.
fn blocks(text: &[u8], on_data: &mut impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    while let Some(pos) = text[start..].windows(2).position(|w| w == b"\n\n") {
        for line in text[start..start + pos].split(|b| *b == b'\n') {
            if let Some(data) = line.strip_prefix(b"data: ") {
                on_data(data);
            }
        }
        start += pos + 2;
    }
    start
}

/// An idle client: opens the SSE stream of a key nobody answers and holds it until told
/// to let go. Returns whether it opened.
pub(crate) async fn idle_client(
    http: Http,
    addr: SocketAddr,
    path: String,
    ramp: Arc<Ramp>,
    connecting: Arc<Semaphore>,
    mut release: watch::Receiver<bool>,
) -> bool {
    let permit = connecting.acquire().await;
    match get_stream(&http, addr, &path).await {
        Ok(body) => {
            drop(permit);
            ramp.open();
            let _ = release.wait_for(|r| *r).await;
            drop(body);
            true
        }
        Err(e) => {
            eprintln!("idle stream {path}: {e}");
            ramp.fail();
            false
        }
    }
}
