//! A fake OpenAI-compatible server for tests and benchmarks: hand-rolled HTTP/1.1 on a
//! local port, no dependencies beyond tokio.
//!
//! ```no_run
//! # async fn demo() {
//! use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
//! let fake = FakeOpenAi::start(Behaviour::Answer(Answer::new(["Hel", "lo"]))).await;
//! // point OPENAI_URL (or OpenAiConfig::base_url) at fake.base_url() …
//! assert!(fake.requests().is_empty());
//! # }
//! ```
//!
//! It serves `POST /v1/chat/completions` (streamed as real SSE `chat.completion.chunk`s
//! when the body says `"stream": true`, else one `chat.completion` object) and
//! `GET /v1/models`. Every response says `Connection: close`; one task serves each
//! connection. The server stops when the [`FakeOpenAi`] is dropped.

mod answer;
mod http;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use answer::{last_user_text, serve, words};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The model named in answers when the request names none.
const MODEL: &str = "fake-model";

/// What the server answers to chat completion requests.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer, one streamed chunk per token.
    pub tokens: Vec<String>,
    /// Pause before each token.
    pub delay_per_token: Duration,
    /// Send a usage chunk when the request asks for one (`stream_options.include_usage`).
    pub usage: bool,
    /// Answer with the last user message instead of `tokens`, cut into words (each with
    /// its leading space), so every request gets its own answer.
    pub echo: bool,
}

impl Answer {
    /// An answer made of `tokens`, no delay, usage on.
    pub fn new<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            tokens: tokens.into_iter().map(Into::into).collect(),
            delay_per_token: Duration::ZERO,
            usage: true,
            echo: false,
        }
    }

    /// Echoes the last user message (see [`Answer::echo`]).
    pub fn echo() -> Self {
        Self {
            echo: true,
            ..Self::new(Vec::<String>::new())
        }
    }

    /// Sets the pause before each token.
    pub fn with_delay(mut self, delay_per_token: Duration) -> Self {
        self.delay_per_token = delay_per_token;
        self
    }

    /// Turns the usage chunk on or off.
    pub fn with_usage(mut self, usage: bool) -> Self {
        self.usage = usage;
        self
    }

    /// The tokens answering `body`, and the finish reason: `length` when the request's
    /// `max_tokens` (or `max_completion_tokens`) cut them.
    fn tokens_for(&self, body: &Value) -> (Vec<String>, &'static str) {
        let mut tokens = if self.echo {
            words(&last_user_text(body))
        } else {
            self.tokens.clone()
        };
        let limit = body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens"))
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok());
        match limit {
            Some(n) if n < tokens.len() => {
                tokens.truncate(n);
                (tokens, "length")
            }
            _ => (tokens, "stop"),
        }
    }
}

impl Default for Answer {
    fn default() -> Self {
        Self::new(["Hello", "!", " How", " can", " I", " help", "?"])
    }
}

/// How the server behaves towards chat completion requests (`GET /v1/models` always works).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Behaviour {
    /// Answers normally.
    Answer(Answer),
    /// Streams the first `n` tokens of the answer, then closes the connection without a
    /// finish reason or `data: [DONE]`. A non-streaming request gets no response at all.
    CutAfter(Answer, usize),
    /// Responds with this status and JSON body (see [`Behaviour::status`]).
    Status(u16, Value),
    /// Sends `200` and the SSE headers, then nothing, until the client goes away.
    Stall,
    /// Asks for a tool, then answers: a request that offers tool `name` (in `tools`) and
    /// whose last message is not a `tool` message gets a call of it with `arguments` (id
    /// `call_N`, finish reason `tool_calls`); any other request (a tool result last, or the
    /// tool not offered) gets `then`.
    CallTool {
        /// The tool's name.
        name: String,
        /// The arguments, as JSON text.
        arguments: String,
        /// The answer once the tool's result is in.
        then: Answer,
    },
}

impl Behaviour {
    /// Answers with `tokens`.
    pub fn answer<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Behaviour::Answer(Answer::new(tokens))
    }

    /// Streams the first `n` of `tokens`, then cuts the connection.
    pub fn cut_after<I, S>(tokens: I, n: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Behaviour::CutAfter(Answer::new(tokens), n)
    }

    /// Calls tool `name` with `arguments`, then answers with `then` (see
    /// [`Behaviour::CallTool`]).
    pub fn call_tool(name: impl Into<String>, arguments: impl Into<String>, then: Answer) -> Self {
        Behaviour::CallTool {
            name: name.into(),
            arguments: arguments.into(),
            then,
        }
    }

    /// Responds with `status` and the error body OpenAI sends for it (401 invalid key,
    /// 429 rate limit, 500 server error, others a generic error).
    pub fn status(status: u16) -> Self {
        let (message, kind, code) = match status {
            401 => (
                "Incorrect API key provided: dummy-to***ken. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
            429 => (
                "Rate limit reached for requests. Please try again in 20s.",
                "requests",
                json!("rate_limit_exceeded"),
            ),
            500 => (
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                Value::Null,
            ),
            _ => ("The fake server was told to fail.", "api_error", Value::Null),
        };
        Behaviour::Status(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        )
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Answer(Answer::default())
    }
}

/// How a streamed response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`, as most servers stream. A cut stream lacks the final
    /// empty chunk, which HTTP clients report as an error.
    #[default]
    Chunked,
    /// No length, the body ends when the connection closes. A cut stream looks like a
    /// complete one to the HTTP client; only the missing `[DONE]` tells.
    CloseDelimited,
}

#[derive(Debug)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    framing: Framing,
    requests: Mutex<Vec<Value>>,
    traceparents: Mutex<Vec<Option<String>>>,
    next_id: AtomicU64,
    tokens_streamed: Arc<std::sync::atomic::AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running fake server. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FakeOpenAi {
    /// Starts a server on `127.0.0.1` at a free port, streaming with chunked encoding.
    ///
    /// # Panics
    /// When no local port can be bound (use [`FakeOpenAi::try_start`] to handle that).
    pub async fn start(behaviour: Behaviour) -> Self {
        match Self::try_start(behaviour, Framing::Chunked).await {
            Ok(server) => server,
            Err(e) => panic!("fake OpenAI server: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Starts a server with the given framing of streamed bodies.
    pub async fn try_start(behaviour: Behaviour, framing: Framing) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            framing,
            requests: Mutex::new(Vec::new()),
            traceparents: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            tokens_streamed: Arc::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT/v1`, the value for `OPENAI_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The JSON bodies of the chat completion requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// The W3C `traceparent` header of each chat completion request received so far
    /// (`None` for a request without one), oldest first.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        lock(&self.shared.traceparents).clone()
    }

    /// Answer tokens written to clients so far, over all streamed answers: a client that
    /// stops reading (a cancelled generation) stops this count within a token or two (the
    /// writes the kernel still buffers before the connection's reset comes back).
    pub fn tokens_streamed(&self) -> usize {
        self.shared
            .tokens_streamed
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes the behaviour for requests that arrive from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections: aborting it aborts them all.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    connections.spawn(serve(socket, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::debug!(error = %e, "fake OpenAI: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn post(body: &str) -> Vec<u8> {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn streams_sse_chunks_then_done() {
        let fake =
            FakeOpenAi::try_start(Behaviour::answer(["Hi", " there"]), Framing::CloseDelimited)
                .await
                .unwrap();
        let out = raw(
            fake.addr(),
            &post(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}"#),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        let data: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, "Hi there");
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
        assert_eq!(chunks[chunks.len() - 1]["usage"]["total_tokens"], 4);
        assert_eq!(fake.requests()[0]["model"], "m");
    }

    #[tokio::test]
    async fn echo_answers_with_the_question_and_honours_max_tokens() {
        let fake = FakeOpenAi::start(Behaviour::Answer(Answer::echo())).await;
        let out = raw(
            fake.addr(),
            &post(r#"{"max_tokens":2,"messages":[{"role":"user","content":"one two three"}]}"#),
        )
        .await;
        let body: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "one two");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(words("a  b c"), ["a", "  b", " c"]);
    }

    #[tokio::test]
    async fn garbage_gets_an_error_not_a_panic() {
        let fake = FakeOpenAi::start(Behaviour::default()).await;
        assert!(raw(fake.addr(), b"\x00\x01garbage\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        assert!(
            raw(fake.addr(), b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
        assert!(raw(fake.addr(), &post("not json"))
            .await
            .starts_with("HTTP/1.1 400"));
        assert!(raw(fake.addr(), b"GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        let models = raw(fake.addr(), b"GET /v1/models HTTP/1.1\r\n\r\n").await;
        assert!(models.starts_with("HTTP/1.1 200") && models.contains(MODEL));
        assert!(fake.requests().is_empty());
    }
}
