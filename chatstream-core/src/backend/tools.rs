//! Tool calling: the [`Tool`] trait, and [`ToolLoopLayer`], which runs the tools a model
//! asks for and asks the model again with their results.

#[cfg(feature = "openai")]
mod weather;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    meta, ChatMessage, ChatRequest, Conversation, Error, FinishReason, LlmBackend, LlmEvent,
    LlmLayer, LlmStream, Result, ToolCall, Usage,
};

#[cfg(feature = "openai")]
pub use weather::WeatherTool;

/// A function the model may call.
#[async_trait]
pub trait Tool: Send + Sync + Debug + 'static {
    /// The name the model calls it by (`a-z A-Z 0-9 _ -`, at most 64 characters).
    fn name(&self) -> &str;
    /// What it does, for the model to decide when to call it.
    fn description(&self) -> &str;
    /// The JSON Schema of its arguments (an object schema).
    fn parameters(&self) -> serde_json::Value;
    /// Runs it with the arguments the model produced (JSON text, which may be malformed);
    /// returns what the model is told.
    async fn call(&self, arguments: &str) -> Result<String>;

    /// Name, description and parameters together.
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
        }
    }
}

/// A tool as a trait object.
pub type DynTool = dyn Tool;

#[async_trait]
impl<T: Tool + ?Sized> Tool for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn parameters(&self) -> serde_json::Value {
        (**self).parameters()
    }
    async fn call(&self, arguments: &str) -> Result<String> {
        (**self).call(arguments).await
    }
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn parameters(&self) -> serde_json::Value {
        (**self).parameters()
    }
    async fn call(&self, arguments: &str) -> Result<String> {
        (**self).call(arguments).await
    }
}

/// What a model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

impl ToolDefinition {
    /// The definitions offered in `request` ([`meta::TOOLS`]); none when the entry is
    /// absent.
    pub fn from_request(request: &ChatRequest) -> Result<Vec<ToolDefinition>> {
        match request.metadata.get(meta::TOOLS) {
            None => Ok(Vec::new()),
            Some(json) => {
                serde_json::from_str(json).map_err(|e| Error::decode("tool definitions", e))
            }
        }
    }
}

/// Runs the tools the model asks for and asks again.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use chatstream_core::backend::{LlmBackendExt, Tool, ToolLoopLayer};
/// use chatstream_core::ScriptedBackend;
///
/// #[derive(Debug)]
/// struct Clock;
///
/// #[async_trait]
/// impl Tool for Clock {
///     fn name(&self) -> &str { "get_time" }
///     fn description(&self) -> &str { "The current time, UTC." }
///     fn parameters(&self) -> serde_json::Value { serde_json::json!({"type": "object", "properties": {}}) }
///     async fn call(&self, _arguments: &str) -> chatstream_core::Result<String> {
///         Ok("12:00".to_owned())
///     }
/// }
///
/// let backend = ScriptedBackend::default()
///     .layer(ToolLoopLayer::new([Arc::new(Clock) as _]))
///     .shared();
/// # let _ = backend;
/// ```
///
/// # The loop
///
/// [`ToolLoop`] offers the tools' [definitions](ToolDefinition) to the inner backend in the
/// request's [`meta::TOOLS`] entry (the OpenAI backend sends them as `tools`). Text passes
/// through as it comes. [`LlmEvent::ToolCall`]s pass through too (the worker shows
/// "processing" with the tool's name) and are collected; when the inner stream then finishes
/// (`tool_calls`, or `stop` as some servers say), the tools run — concurrently, each call's
/// result in order — and the inner backend is asked again with the request's messages plus
/// the assistant message asking for the calls and one [`Role::Tool`](crate::Role::Tool)
/// message per result. Usage is summed over the rounds and reported once, before the last
/// `Finish`.
///
/// A tool that fails, or a call of a tool nobody registered, answers the model with
/// `{"error": "…"}`, so the model can tell the user. A model that still asks for tools after
/// [`ToolLoopLayer::with_max_rounds`] rounds (default 5) ends the stream with
/// [`Error::Invalid`]. The tool messages are not part of what the worker saves: the history
/// keeps the user's message and the answer's text.
#[derive(Debug, Clone)]
pub struct ToolLoopLayer {
    tools: Arc<[Arc<DynTool>]>,
    max_rounds: usize,
}

impl ToolLoopLayer {
    /// Rounds of tool calls allowed by default.
    pub const DEFAULT_MAX_ROUNDS: usize = 5;

    /// A layer offering `tools`. With no tools the layer passes everything through.
    pub fn new(tools: impl IntoIterator<Item = Arc<DynTool>>) -> Self {
        Self {
            tools: tools.into_iter().collect(),
            max_rounds: Self::DEFAULT_MAX_ROUNDS,
        }
    }

    /// Sets how many rounds of tool calls one answer may take (at least 1).
    pub fn with_max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    /// The tools' names.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }
}

impl<B: LlmBackend> LlmLayer<B> for ToolLoopLayer {
    type Backend = ToolLoop<B>;
    fn layer(&self, inner: B) -> ToolLoop<B> {
        let definitions: Vec<ToolDefinition> = self.tools.iter().map(|t| t.definition()).collect();
        ToolLoop {
            inner: Arc::new(inner),
            tools: self.tools.clone(),
            max_rounds: self.max_rounds,
            // A Vec of plain structs and JSON values always serializes.
            definitions: serde_json::to_string(&definitions).unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// The backend made by [`ToolLoopLayer`].
#[derive(Debug, Clone)]
pub struct ToolLoop<B> {
    inner: Arc<B>,
    tools: Arc<[Arc<DynTool>]>,
    max_rounds: usize,
    definitions: String,
}

#[async_trait]
impl<B: LlmBackend> LlmBackend for ToolLoop<B> {
    async fn stream(
        &self,
        request: &ChatRequest,
        conversation: &Conversation,
    ) -> Result<LlmStream> {
        if self.tools.is_empty() {
            return self.inner.stream(request, conversation).await;
        }
        let client = ToolDefinition::from_request(request)?;
        if let Some(clash) = client
            .iter()
            .find(|c| self.tools.iter().any(|t| t.name() == c.name))
        {
            return Err(Error::invalid(
                "tools",
                format!(
                    "the client's tool {:?} has the name of a tool the worker runs",
                    clash.name
                ),
            ));
        }
        let definitions = if client.is_empty() {
            self.definitions.clone()
        } else {
            let mut all: Vec<ToolDefinition> = self.tools.iter().map(|t| t.definition()).collect();
            all.extend(client.iter().cloned());
            // A Vec of plain structs and JSON values always serializes.
            serde_json::to_string(&all).unwrap_or_else(|_| "[]".into())
        };
        let mut request = request.clone();
        request.metadata.insert(meta::TOOLS.to_owned(), definitions);
        let events = self.inner.stream(&request, conversation).await?;
        let rounds = Rounds {
            inner: self.inner.clone(),
            tools: self.tools.clone(),
            client_tools: client.into_iter().map(|t| t.name).collect(),
            request,
            conversation: conversation.clone(),
            events: Some(events),
            ready: VecDeque::new(),
            text: String::new(),
            calls: Vec::new(),
            usage: None,
            round: 0,
            max_rounds: self.max_rounds,
        };
        Ok(futures::stream::unfold(rounds, Rounds::next).boxed())
    }
}

/// The state of one answer across its rounds.
struct Rounds<B> {
    inner: Arc<B>,
    tools: Arc<[Arc<DynTool>]>,
    /// The names of the tools the client offered: a round that calls one of them ends the
    /// answer, for the client to run it.
    client_tools: Vec<String>,
    /// The request, growing by the tool messages of each round.
    request: ChatRequest,
    conversation: Conversation,
    /// The current round's events; `None` once the answer is over.
    events: Option<LlmStream>,
    ready: VecDeque<Result<LlmEvent>>,
    /// Text of the current round (said before its tool calls).
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    round: usize,
    max_rounds: usize,
}

impl<B: LlmBackend> Rounds<B> {
    async fn next(mut self) -> Option<(Result<LlmEvent>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((event, self));
            }
            let event = self.events.as_mut()?.next().await;
            match event {
                Some(Ok(LlmEvent::TextDelta(text))) => {
                    self.text.push_str(&text);
                    return Some((Ok(LlmEvent::TextDelta(text)), self));
                }
                Some(Ok(LlmEvent::ToolCall(call))) => {
                    self.calls.push(call.clone());
                    return Some((Ok(LlmEvent::ToolCall(call)), self));
                }
                Some(Ok(LlmEvent::Usage(u))) => self.add_usage(u),
                Some(Ok(LlmEvent::Finish(FinishReason::ToolCalls | FinishReason::Stop)))
                    if !self.calls.is_empty() && !self.calls_client_tool() =>
                {
                    self.events = None;
                    if let Err(e) = self.next_round().await {
                        return Some((Err(e), self));
                    }
                }
                Some(Ok(LlmEvent::Finish(reason))) => {
                    let reason = match reason {
                        FinishReason::Stop if self.calls_client_tool() => FinishReason::ToolCalls,
                        other => other,
                    };
                    self.events = None;
                    self.ready
                        .extend(self.usage.take().map(|u| Ok(LlmEvent::Usage(u))));
                    self.ready.push_back(Ok(LlmEvent::Finish(reason)));
                }
                Some(Err(e)) => {
                    self.events = None;
                    return Some((Err(e), self));
                }
                None => {
                    // Ended without a finish: pass that on as it is.
                    self.events = None;
                    self.ready
                        .extend(self.usage.take().map(|u| Ok(LlmEvent::Usage(u))));
                }
            }
        }
    }

    /// True when the round called a tool of the client's: the answer then ends with
    /// `tool_calls` instead of running the worker's tools of the same round.
    fn calls_client_tool(&self) -> bool {
        self.calls
            .iter()
            .any(|c| self.client_tools.contains(&c.name))
    }

    fn add_usage(&mut self, u: Usage) {
        let sum = self.usage.get_or_insert_with(Usage::default);
        sum.prompt_tokens = sum.prompt_tokens.saturating_add(u.prompt_tokens);
        sum.completion_tokens = sum.completion_tokens.saturating_add(u.completion_tokens);
        sum.total_tokens = sum.total_tokens.saturating_add(u.total_tokens);
    }

    /// Runs the collected calls and starts the next round with their results.
    async fn next_round(&mut self) -> Result<()> {
        if self.round >= self.max_rounds {
            return Err(Error::invalid(
                "tool calls",
                format!(
                    "the model still asks for tools after {} rounds",
                    self.max_rounds
                ),
            ));
        }
        self.round += 1;
        let calls = std::mem::take(&mut self.calls);
        let results =
            futures::future::join_all(calls.iter().map(|call| run(&self.tools, call))).await;
        let said = std::mem::take(&mut self.text);
        let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
        self.request
            .messages
            .push(ChatMessage::assistant_tool_calls(said, calls));
        for (id, result) in ids.into_iter().zip(results) {
            self.request
                .messages
                .push(ChatMessage::tool_result(id, result));
        }
        self.events = Some(self.inner.stream(&self.request, &self.conversation).await?);
        Ok(())
    }
}

/// Runs one call; failures become `{"error": …}` for the model.
async fn run(tools: &[Arc<DynTool>], call: &ToolCall) -> String {
    let Some(tool) = tools.iter().find(|t| t.name() == call.name) else {
        tracing::warn!(tool = %call.name, "the model called a tool that is not registered");
        return serde_json::json!({"error": format!("there is no tool named {:?}", call.name)})
            .to_string();
    };
    match tool.call(&call.arguments).await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(tool = %call.name, error = %e, "tool call failed");
            serde_json::json!({"error": e.to_string()}).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::LlmBackendExt;
    use crate::{Role, StreamKey};

    fn _obj_safe(_: Box<DynTool>) {}

    /// Answers round `n` with the `n`-th script; remembers every request.
    #[derive(Debug, Default)]
    struct Scripted {
        rounds: Vec<Vec<LlmEvent>>,
        seen: Mutex<Vec<ChatRequest>>,
    }

    #[async_trait]
    impl LlmBackend for Scripted {
        async fn stream(&self, request: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.len();
            seen.push(request.clone());
            let events = self.rounds.get(n).cloned().unwrap_or_default();
            Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed())
        }
    }

    #[derive(Debug)]
    struct Upper;

    #[async_trait]
    impl Tool for Upper {
        fn name(&self) -> &str {
            "upper"
        }
        fn description(&self) -> &str {
            "Upper-cases a word."
        }
        fn parameters(&self) -> serde_json::Value {
            serde_json::json!({"type": "object", "properties": {"word": {"type": "string"}}})
        }
        async fn call(&self, arguments: &str) -> Result<String> {
            let v: serde_json::Value =
                serde_json::from_str(arguments).map_err(|e| Error::invalid("arguments", e))?;
            Ok(v["word"].as_str().unwrap_or("").to_uppercase())
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> LlmEvent {
        LlmEvent::ToolCall(ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    fn usage(n: u32) -> LlmEvent {
        LlmEvent::Usage(Usage {
            prompt_tokens: n,
            completion_tokens: n,
            total_tokens: 2 * n,
        })
    }

    async fn collect(backend: &impl LlmBackend) -> Vec<Result<LlmEvent>> {
        let request = ChatRequest::new(StreamKey::new("s", "m"), "shout hi");
        backend
            .stream(&request, &Conversation::empty("c"))
            .await
            .unwrap()
            .collect()
            .await
    }

    #[tokio::test]
    async fn runs_the_tools_and_asks_again_with_their_results() {
        let inner = Arc::new(Scripted {
            rounds: vec![
                vec![
                    LlmEvent::TextDelta("Let me see. ".into()),
                    call("c1", "upper", r#"{"word":"hi"}"#),
                    call("c2", "nope", "{}"),
                    call("c3", "upper", "not json"),
                    usage(1),
                    LlmEvent::Finish(FinishReason::ToolCalls),
                ],
                vec![
                    LlmEvent::TextDelta("HI".into()),
                    usage(2),
                    LlmEvent::Finish(FinishReason::Stop),
                ],
            ],
            ..Scripted::default()
        });
        let backend = inner
            .clone()
            .layer(ToolLoopLayer::new([Arc::new(Upper) as _]));
        let events: Vec<LlmEvent> = collect(&backend)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            events,
            vec![
                LlmEvent::TextDelta("Let me see. ".into()),
                call("c1", "upper", r#"{"word":"hi"}"#),
                call("c2", "nope", "{}"),
                call("c3", "upper", "not json"),
                LlmEvent::TextDelta("HI".into()),
                usage(3),
                LlmEvent::Finish(FinishReason::Stop),
            ]
        );

        let seen = inner.seen.lock().unwrap();
        let offered = ToolDefinition::from_request(&seen[0]).unwrap();
        assert_eq!(offered, vec![Upper.definition()]);
        let second = &seen[1].messages;
        assert_eq!(second[0], ChatMessage::user("shout hi"));
        assert_eq!(second[1].role, Role::Assistant);
        assert_eq!(second[1].content, "Let me see. ");
        assert_eq!(second[1].tool_calls.len(), 3);
        assert_eq!(second[2], ChatMessage::tool_result("c1", "HI"));
        assert_eq!(second[3].tool_call_id.as_deref(), Some("c2"));
        assert!(second[3].content.contains("no tool named"), "{second:?}");
        assert!(second[4]
            .content
            .starts_with(r#"{"error":"invalid arguments"#));
        assert_eq!(second.len(), 5);
    }

    #[tokio::test]
    async fn a_model_that_never_stops_calling_tools_is_cut_off() {
        let round = vec![
            call("c", "upper", r#"{"word":"a"}"#),
            LlmEvent::Finish(FinishReason::ToolCalls),
        ];
        let inner = Arc::new(Scripted {
            rounds: vec![round; 10],
            ..Scripted::default()
        });
        let backend = inner
            .clone()
            .layer(ToolLoopLayer::new([Arc::new(Upper) as _]).with_max_rounds(2));
        let events = collect(&backend).await;
        assert!(matches!(events.last(), Some(Err(Error::Invalid { .. }))));
        assert_eq!(inner.seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn without_tools_or_tool_calls_everything_passes_through() {
        let answer = vec![
            LlmEvent::TextDelta("plain".into()),
            LlmEvent::Finish(FinishReason::Stop),
        ];
        let inner = Arc::new(Scripted {
            rounds: vec![answer.clone(), answer.clone()],
            ..Scripted::default()
        });
        let none = inner.clone().layer(ToolLoopLayer::new([]));
        let got: Vec<_> = collect(&none)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, answer);
        let some = inner
            .clone()
            .layer(ToolLoopLayer::new([Arc::new(Upper) as _]));
        let got: Vec<_> = collect(&some)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, answer);
        let seen = inner.seen.lock().unwrap();
        assert!(!seen[0].metadata.contains_key(meta::TOOLS));
        assert!(seen[1].metadata.contains_key(meta::TOOLS));
    }

    #[test]
    fn tool_messages_serialize_in_openai_shape_and_plain_ones_as_before() {
        let plain = serde_json::to_string(&ChatMessage::user("hi")).unwrap();
        assert_eq!(plain, r#"{"role":"user","content":"hi"}"#);
        let asks = ChatMessage::assistant_tool_calls(
            "",
            vec![ToolCall {
                id: "c1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            }],
        );
        let json = serde_json::to_value(&asks).unwrap();
        assert_eq!(
            json["tool_calls"][0],
            serde_json::json!({"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
        );
        let back: ChatMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, asks);
        let result = serde_json::to_string(&ChatMessage::tool_result("c1", "sunny")).unwrap();
        assert_eq!(
            result,
            r#"{"role":"tool","content":"sunny","tool_call_id":"c1"}"#
        );
    }
}
