//! From `chat.completion.chunk` objects to [`LlmEvent`]s.
//!
//! The chunk types are our own and lenient (every field optional, unknown finish reasons
//! accepted) because OpenAI-compatible servers differ in details that async-openai's strict
//! types reject: TGI's `eos_token` finish reason, a missing `object` or `created`, an `error`
//! object sent in the middle of a stream.

use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;

use crate::{Error, FinishReason, LlmEvent, Result, ToolCall, Usage};

/// One streamed chunk, as much of it as we use.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Some servers report a failure inside a `200` stream.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
}

/// Maps a finish reason, OpenAI's or a compatible server's, to ours.
pub(super) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" | "max_tokens" | "model_length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        // "stop", and what other servers call it: "eos", "eos_token", "stop_sequence", "end_turn".
        _ => FinishReason::Stop,
    }
}

/// The text of an error object (`{"message": …}`) or string.
pub(super) fn error_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Object(map) => map
            .get("message")
            .or_else(|| map.get("error"))
            .or_else(|| map.get("detail"))
            .and_then(error_text),
        _ => None,
    }
}

/// Turns chunks into events, holding back `Finish` until the usage chunk (when asked for)
/// has arrived, so that `Usage` precedes `Finish` as with every other backend.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    include_usage: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    tools: BTreeMap<u32, ToolCall>,
}

impl Decoder {
    pub(super) fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            ..Self::default()
        }
    }

    /// Feeds one chunk. Returns true when the answer is complete (or failed) and nothing
    /// more needs reading.
    pub(super) fn chunk(&mut self, chunk: Chunk, out: &mut VecDeque<Result<LlmEvent>>) -> bool {
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            let message = error_text(&error).unwrap_or_else(|| error.to_string());
            out.push_back(Err(Error::Backend {
                status: None,
                message,
            }));
            return true;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u
                    .total_tokens
                    .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
            });
        }
        // Only the first choice: chatstream never asks for `n > 1`.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            for text in [delta.content, delta.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    out.push_back(Ok(LlmEvent::TextDelta(text)));
                }
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let entry = self.tools.entry(call.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = call.id {
                    entry.id.push_str(&id);
                }
                if let Some(function) = call.function {
                    entry.name.push_str(function.name.as_deref().unwrap_or(""));
                    entry
                        .arguments
                        .push_str(function.arguments.as_deref().unwrap_or(""));
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if self.finish.is_some() && (self.usage.is_some() || !self.include_usage) {
            self.complete(out);
            return true;
        }
        false
    }

    /// The chunk stream ended (after `[DONE]`, or because the connection closed: async-openai
    /// does not tell the two apart). Without a finish reason the answer was cut short.
    pub(super) fn end(&mut self, out: &mut VecDeque<Result<LlmEvent>>) {
        if self.finish.is_some() {
            self.complete(out);
        } else {
            out.push_back(Err(Error::Backend {
                status: None,
                message: "the answer stream ended before the model finished (connection closed \
                          without a finish_reason)"
                    .to_owned(),
            }));
        }
    }

    /// Reading failed with `error`. After the finish reason only the usage chunk or
    /// `[DONE]` was missing: the answer is whole, so it finishes normally.
    pub(super) fn fail(&mut self, error: Error, out: &mut VecDeque<Result<LlmEvent>>) {
        if self.finish.is_some() {
            tracing::debug!(%error, "LLM stream failed after its finish reason; answer kept");
            self.complete(out);
        } else {
            out.push_back(Err(error));
        }
    }

    fn complete(&mut self, out: &mut VecDeque<Result<LlmEvent>>) {
        for (_, call) in std::mem::take(&mut self.tools) {
            out.push_back(Ok(LlmEvent::ToolCall(call)));
        }
        if let Some(usage) = self.usage.take() {
            out.push_back(Ok(LlmEvent::Usage(usage)));
        }
        if let Some(reason) = self.finish.take() {
            out.push_back(Ok(LlmEvent::Finish(reason)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> Chunk {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn events(include_usage: bool, chunks: &[&str]) -> (Vec<Result<LlmEvent>>, bool) {
        let mut d = Decoder::new(include_usage);
        let mut out = VecDeque::new();
        let mut complete = false;
        for c in chunks {
            complete = d.chunk(chunk(c), &mut out);
        }
        if !complete {
            d.end(&mut out);
        }
        (out.into_iter().collect(), complete)
    }

    #[test]
    fn text_then_usage_then_finish_even_when_usage_comes_last() {
        let (ev, complete) = events(
            true,
            &[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            ],
        );
        assert!(complete);
        let ev: Vec<_> = ev.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            ev,
            vec![
                LlmEvent::TextDelta("Hi".into()),
                LlmEvent::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1,
                    total_tokens: 4
                }),
                LlmEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn tool_call_deltas_are_joined_and_emitted_at_the_finish() {
        let (ev, _) = events(
            false,
            &[
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            ],
        );
        let ev: Vec<_> = ev.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            ev,
            vec![
                LlmEvent::ToolCall(ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                }),
                LlmEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn ending_without_a_finish_reason_is_an_error() {
        let (ev, _) = events(
            true,
            &[r#"{"choices":[{"index":0,"delta":{"content":"Hal"}}]}"#],
        );
        assert!(matches!(&ev[0], Ok(LlmEvent::TextDelta(t)) if t == "Hal"));
        assert!(matches!(&ev[1], Err(Error::Backend { status: None, .. })));
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn an_error_object_inside_the_stream_is_an_error() {
        let (ev, complete) = events(
            true,
            &[r#"{"error":{"message":"model crashed","type":"api_error"}}"#],
        );
        assert!(complete);
        assert!(
            matches!(&ev[0], Err(Error::Backend { message, .. }) if message == "model crashed")
        );
    }

    #[test]
    fn failure_after_the_finish_reason_keeps_the_answer() {
        let mut d = Decoder::new(true);
        let mut out = VecDeque::new();
        assert!(!d.chunk(
            chunk(r#"{"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"length"}]}"#),
            &mut out
        ));
        d.fail(Error::Timeout("idle"), &mut out);
        let ev: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            ev,
            vec![
                LlmEvent::TextDelta("ok".into()),
                LlmEvent::Finish(FinishReason::Length)
            ]
        );
    }

    #[test]
    fn other_servers_finish_reasons_are_understood() {
        assert_eq!(finish_reason("eos_token"), FinishReason::Stop);
        assert_eq!(finish_reason("length"), FinishReason::Length);
        assert_eq!(finish_reason("function_call"), FinishReason::ToolCalls);
        assert_eq!(finish_reason("content_filter"), FinishReason::ContentFilter);
    }
}
