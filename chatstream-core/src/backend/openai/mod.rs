//! An OpenAI-compatible streaming backend on async-openai (feature `openai`).
//!
//! How it uses async-openai 0.43, and why:
//!
//! - **Retries.** async-openai's default client retries 429, 5xx and connect errors 3 times
//!   with backoff, honouring `Retry-After`. The backend installs a single-attempt transport
//!   instead (feature `middleware`, `Client::with_http_service`): a 401, 429 or 500 surfaces
//!   at once as [`Error::Backend`] with its status, and the worker decides about retrying
//!   through [`Error::is_retryable`].
//! - **Status codes.** The transport reads non-2xx bodies itself, so the status is kept for
//!   any body (async-openai loses it when a 4xx body is not an OpenAI error object).
//! - **Cut streams.** async-openai ends its chunk stream quietly both at `data: [DONE]` and
//!   when the server closes a close-delimited response early; only a broken chunked encoding
//!   surfaces as an error. The backend therefore treats a stream that ends before any
//!   `finish_reason` as cut, and yields an `Err` after the text received.
//! - **Stalls.** async-openai has no timeouts of its own. The backend bounds the wait for
//!   the response headers and for every chunk by [`OpenAiConfig::idle_timeout`] and the
//!   whole answer by [`OpenAiConfig::timeout`]; either yields [`Error::Timeout`].
//! - **Chunks** are parsed with lenient types of our own (feature `byot`), see `decode.rs`.

mod config;
mod decode;
mod http;

use std::collections::VecDeque;
use std::fmt;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use async_openai::Client;
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

pub use config::OpenAiConfig;
use decode::{Chunk, Decoder};

use crate::backend::ToolDefinition;
use crate::{
    ChatMessage, ChatRequest, Conversation, Error, LlmBackend, LlmEvent, LlmStream, Result, Role,
};

/// Streams answers from an OpenAI-compatible chat completions endpoint
/// (`POST {base_url}/chat/completions` with `stream: true`).
///
/// The conversation's history is sent first, then the request's messages. Tools offered
/// in the request's [`meta::TOOLS`](crate::meta::TOOLS) entry (by
/// [`ToolLoopLayer`](crate::backend::ToolLoopLayer)) are sent as `tools`; assistant messages
/// with [`ChatMessage::tool_calls`] as `tool_calls`, and `Role::Tool` messages as `tool`
/// messages with their `tool_call_id`. A `Role::Tool` message without a call id is sent as
/// a user message, because the API refuses a tool message without one.
///
/// # Errors
///
/// Nothing is retried here; [`Error::is_retryable`] tells the worker what to do.
///
/// - An HTTP error status (401, 429, 500, …) → [`Error::Backend`] with the status and the
///   server's message, from `stream()`.
/// - No connection (refused, DNS, TLS) → [`Error::Unavailable`] `{ what: "llm" }`.
/// - No response headers or no chunk within [`OpenAiConfig::idle_timeout`], or an answer
///   longer than [`OpenAiConfig::timeout`] → [`Error::Timeout`].
/// - The stream ends, breaks or carries an error object before the finish reason → an
///   `Err` item ([`Error::Backend`] without status) after the text received.
///
/// ```no_run
/// # async fn demo() -> chatstream_core::Result<()> {
/// use chatstream_core::backend::{OpenAiBackend, OpenAiConfig};
/// let backend = OpenAiBackend::new(OpenAiConfig::from_env())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiBackend {
    config: OpenAiConfig,
    client: Client<OpenAIConfig>,
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiBackend {
    /// A backend for `config`. Fails only when the HTTP client cannot be built (TLS setup).
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::unavailable("llm", e))?;
        let api = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(config.api_key.clone());
        let client = Client::build(http.clone(), api).with_http_service(http::transport(http));
        Ok(Self { config, client })
    }

    /// A backend configured from `OPENAI_URL`, `OPENAI_API_KEY` and `OPENAI_MODEL`.
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env())
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The request body sent for `request` in `conversation`. Fails when the request's
    /// tool definitions ([`meta::TOOLS`](crate::meta::TOOLS)) are malformed.
    pub fn chat_request(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<CreateChatCompletionRequest> {
        let messages = conversation
            .messages
            .iter()
            .chain(&request.messages)
            .map(to_openai)
            .collect();
        let tools: Vec<ChatCompletionTools> = ToolDefinition::from_request(request)?
            .into_iter()
            .map(|d| {
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: FunctionObject {
                        name: d.name,
                        description: Some(d.description),
                        parameters: Some(d.parameters),
                        strict: None,
                    },
                })
            })
            .collect();
        #[allow(deprecated)] // `max_tokens`: what compatible servers (Ollama, vLLM, DeepSeek) read.
        Ok(CreateChatCompletionRequest {
            messages,
            tools: (!tools.is_empty()).then_some(tools),
            model: request
                .model
                .clone()
                .unwrap_or_else(|| self.config.model.clone()),
            max_tokens: request.max_tokens.or(self.config.max_tokens),
            stream: Some(true),
            stream_options: self
                .config
                .include_usage
                .then_some(ChatCompletionStreamOptions {
                    include_usage: Some(true),
                    include_obfuscation: None,
                }),
            ..Default::default()
        })
    }
}

fn to_openai(message: &ChatMessage) -> ChatCompletionRequestMessage {
    let text = message.content.clone();
    match (message.role, &message.tool_call_id) {
        (Role::System, _) => ChatCompletionRequestSystemMessage::from(text).into(),
        (Role::Assistant, _) if !message.tool_calls.is_empty() => {
            let calls = message
                .tool_calls
                .iter()
                .map(|c| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: c.id.clone(),
                        function: FunctionCall {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        },
                    })
                })
                .collect();
            ChatCompletionRequestAssistantMessage {
                content: (!text.is_empty()).then(|| text.into()),
                tool_calls: Some(calls),
                ..Default::default()
            }
            .into()
        }
        (Role::Assistant, _) => ChatCompletionRequestAssistantMessage::from(text).into(),
        (Role::Tool, Some(id)) => ChatCompletionRequestToolMessage {
            content: text.into(),
            tool_call_id: id.clone(),
        }
        .into(),
        (Role::User | Role::Tool, _) => ChatCompletionRequestUserMessage::from(text).into(),
    }
}

type ChunkStream = BoxStream<'static, Result<Chunk, OpenAIError>>;

#[async_trait]
impl LlmBackend for OpenAiBackend {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        let body = self.chat_request(request, conversation)?;
        // The LLM call's span (OpenTelemetry gen_ai conventions): open until the answer's
        // stream is dropped; the HTTP request sends its context upstream (`traceparent`).
        let span = tracing::info_span!(
            "chat",
            otel.name = %format!("chat {}", body.model),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.system = "openai",
            gen_ai.request.model = %body.model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
        );
        let deadline = Instant::now() + self.config.timeout;
        let idle = self.config.idle_timeout;
        let chat = self.client.chat();
        let open = tracing::Instrument::instrument(
            chat.create_stream_byot::<_, Chunk>(body),
            span.clone(),
        );
        let chunks: ChunkStream = match timeout_at(deadline.min(Instant::now() + idle), open).await
        {
            Ok(Ok(chunks)) => chunks,
            Ok(Err(e)) => return Err(http::map_error(e)),
            Err(_) => return Err(Error::Timeout("LLM response headers")),
        };
        let reader = Reader {
            chunks: Some(chunks),
            decoder: Decoder::new(self.config.include_usage),
            ready: VecDeque::new(),
            deadline,
            idle,
            span,
        };
        Ok(futures::stream::unfold(reader, Reader::next).boxed())
    }
}

/// Reads chunks under the timeouts and hands out events one by one.
struct Reader {
    /// `None` once the answer is complete or failed: dropping it releases the connection.
    chunks: Option<ChunkStream>,
    decoder: Decoder,
    ready: VecDeque<Result<LlmEvent>>,
    deadline: Instant,
    idle: std::time::Duration,
    /// The LLM call's span, closed when the stream is dropped.
    span: tracing::Span,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<LlmEvent>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                match &event {
                    Ok(LlmEvent::Usage(u)) => {
                        self.span
                            .record("gen_ai.usage.input_tokens", u.prompt_tokens)
                            .record("gen_ai.usage.output_tokens", u.completion_tokens);
                    }
                    Ok(LlmEvent::Finish(f)) => {
                        self.span
                            .record("gen_ai.response.finish_reasons", f.as_str());
                    }
                    _ => {}
                }
                if event.is_err() {
                    self.chunks = None;
                    self.ready.clear();
                }
                return Some((event, self));
            }
            let chunks = self.chunks.as_mut()?;
            let wait = self.deadline.min(Instant::now() + self.idle);
            let done = match timeout_at(wait, chunks.next()).await {
                Ok(Some(Ok(chunk))) => self.decoder.chunk(chunk, &mut self.ready),
                Ok(Some(Err(e))) => {
                    self.decoder.fail(http::map_error(e), &mut self.ready);
                    true
                }
                Ok(None) => {
                    self.decoder.end(&mut self.ready);
                    true
                }
                Err(_) => {
                    let what = if Instant::now() >= self.deadline {
                        "LLM answer (total timeout)"
                    } else {
                        "LLM answer (no chunk within the idle timeout)"
                    };
                    self.decoder.fail(Error::Timeout(what), &mut self.ready);
                    true
                }
            };
            if done {
                self.chunks = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamKey;

    #[test]
    fn history_comes_first_and_request_settings_win() {
        let backend = OpenAiBackend::new(OpenAiConfig::default().with_max_tokens(100)).unwrap();
        let mut conversation = Conversation::empty("c");
        conversation.messages = vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
        ];
        let mut request = ChatRequest::new(StreamKey::new("s", "m"), "and now?");
        let body =
            serde_json::to_value(backend.chat_request(&request, &conversation).unwrap()).unwrap();
        let roles: Vec<_> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(body["messages"][3]["content"], "and now?");
        assert_eq!(body["model"], "deepseek-r1:8b");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);

        request.model = Some("llama3".into());
        request.max_tokens = Some(7);
        let body =
            serde_json::to_value(backend.chat_request(&request, &conversation).unwrap()).unwrap();
        assert_eq!(body["model"], "llama3");
        assert_eq!(body["max_tokens"], 7);
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn tools_tool_calls_and_tool_results_are_sent_in_openai_shape() {
        use crate::backend::ToolDefinition;
        use crate::{meta, ToolCall};

        let backend = OpenAiBackend::new(OpenAiConfig::default()).unwrap();
        let mut request = ChatRequest::new(StreamKey::new("s", "m"), "weather in Oslo?");
        let definition = ToolDefinition {
            name: "get_weather".into(),
            description: "Weather.".into(),
            parameters: serde_json::json!({"type": "object"}),
        };
        request.metadata.insert(
            meta::TOOLS.into(),
            serde_json::to_string(&[definition]).unwrap(),
        );
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        };
        request.messages.extend([
            ChatMessage::assistant_tool_calls("", vec![call]),
            ChatMessage::tool_result("call_1", "sunny"),
            ChatMessage::new(Role::Tool, "no id"),
        ]);
        let body = serde_json::to_value(
            backend
                .chat_request(&request, &Conversation::empty("c"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            body["tools"],
            serde_json::json!([{"type": "function", "function": {
                "name": "get_weather", "description": "Weather.", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            body["messages"][1],
            serde_json::json!({"role": "assistant", "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\":\"Oslo\"}"}}]})
        );
        assert_eq!(
            body["messages"][2],
            serde_json::json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"})
        );
        assert_eq!(body["messages"][3]["role"], "user");

        request
            .metadata
            .insert(meta::TOOLS.into(), "not json".into());
        assert!(backend
            .chat_request(&request, &Conversation::empty("c"))
            .is_err());
    }
}
