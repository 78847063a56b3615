//! The body of `POST /v1/chat/completions`, as OpenAI clients send it, and how it becomes a
//! [`ChatRequest`]'s messages.
//!
//! Only what chatstream uses is read; every other field (`temperature`, `functions`, `seed`,
//! `response_format`, `metadata`, …) is accepted and ignored, since OpenAI clients send many.
//! Function `tools` are offered to the model (see [`CompletionRequest::tool_definitions`]).

use chatstream_core::backend::ToolDefinition;
use chatstream_core::{ChatMessage, Role, ToolCall};
use serde::Deserialize;
use serde_json::{json, Value};

use super::OpenAiError;

/// The fields of a chat completion request that chatstream reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CompletionRequest {
    /// The model asked for; the route's default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation so far; must not be empty.
    pub messages: Vec<RequestMessage>,
    /// `true`: answer with `chat.completion.chunk` SSE; otherwise one `chat.completion`.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds the usage chunk before `[DONE]`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Token limit (the older name).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Token limit (the newer name); wins over `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// The end user, passed on as [`ChatRequest::user`](chatstream_core::ChatRequest::user).
    #[serde(default)]
    pub user: Option<String>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// Tool choice: `"none"` (no tool is offered) and `"auto"` are accepted; a demand for a
    /// tool call (`"required"` or a named function) is refused, since the worker's model
    /// configuration cannot be made to honour it.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Function tools, `{"type": "function", "function": {"name", "description",
    /// "parameters"}}`: offered to the model; its calls come back as `tool_calls`.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with the token usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message of the request: a role and text content (a string, or an array of parts of
/// which only `text` parts are accepted). `content` may be `null` (an assistant message
/// that only called tools).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RequestMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool` or `function`.
    pub role: String,
    /// The content.
    #[serde(default)]
    pub content: Option<Content>,
    /// The tools an assistant message asked for.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// Message content: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": "…"}`, `image_url`, …).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`, `refusal`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl RequestMessage {
    /// The chatstream message. `developer` counts as `system`, `function` as `tool`; text
    /// parts are joined; any other part is refused, since the model would never see it.
    /// `index` names the message in the error.
    pub fn to_chat_message(&self, index: usize) -> Result<ChatMessage, OpenAiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            other => {
                return Err(OpenAiError::invalid_request(
                    format!("Invalid value for 'messages[{index}].role': {other:?}."),
                    Some(format!("messages[{index}].role")),
                ))
            }
        };
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("refusal", _) => {}
                        (kind, _) => {
                            return Err(OpenAiError::invalid_request(
                                format!(
                                    "Content parts of type {kind:?} are not supported here; \
                                     only text parts are."
                                ),
                                Some(format!("messages[{index}].content")),
                            ))
                        }
                    }
                }
                text
            }
        };
        let mut message = ChatMessage::new(role, content);
        if role == Role::Assistant {
            message.tool_calls = self.tool_calls.clone().unwrap_or_default();
        }
        if role == Role::Tool {
            message.tool_call_id = self.tool_call_id.clone();
        }
        Ok(message)
    }
}

/// Converts all messages, refusing an empty list.
pub fn chat_messages(messages: &[RequestMessage]) -> Result<Vec<ChatMessage>, OpenAiError> {
    if messages.is_empty() {
        return Err(OpenAiError::invalid_request(
            "'messages' must contain at least one message.",
            Some("messages".to_owned()),
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_chat_message(i))
        .collect()
}

impl CompletionRequest {
    /// Refuses what cannot be honoured: `n` other than 1, a demanded tool call.
    pub fn check_supported(&self) -> Result<(), OpenAiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(OpenAiError::invalid_request(
                format!("Only n=1 is supported, got n={n}."),
                Some("n".to_owned()),
            ));
        }
        match &self.tool_choice {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if s == "none" || s == "auto" => Ok(()),
            Some(_) => Err(OpenAiError::invalid_request(
                "The model cannot be made to call a tool here: 'tool_choice' may only be \"none\" or \"auto\".",
                Some("tool_choice".to_owned()),
            )),
        }?;
        self.tool_definitions().map(drop)
    }

    /// The function tools offered to the model, as the JSON of [`ToolDefinition`]s that
    /// [`meta::TOOLS`](chatstream_core::meta::TOOLS) carries to the worker; `None` without
    /// tools or with `tool_choice: "none"`. A tool that is not a function, or has no name,
    /// is a 400 naming it.
    pub fn tool_definitions(&self) -> Result<Option<String>, OpenAiError> {
        let invalid = |message: &str, param: String| {
            Err(OpenAiError::invalid_request(
                message.to_owned(),
                Some(param),
            ))
        };
        let mut out: Vec<ToolDefinition> = Vec::new();
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return invalid(
                    "Only function tools are supported.",
                    format!("tools[{i}].type"),
                );
            }
            let f = tool.get("function").unwrap_or(&Value::Null);
            let name = match f.get("name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => n,
                _ => {
                    return invalid(
                        "A function tool needs a name.",
                        format!("tools[{i}].function.name"),
                    )
                }
            };
            if out.iter().any(|d| d.name == name) {
                return invalid(
                    "Two tools have this name.",
                    format!("tools[{i}].function.name"),
                );
            }
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    let param = format!("tools[{i}].function.parameters");
                    return invalid("'parameters' must be a JSON Schema object.", param);
                }
            };
            out.push(ToolDefinition {
                name: name.to_owned(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                parameters,
            });
        }
        let none = matches!(&self.tool_choice, Some(Value::String(s)) if s == "none");
        if out.is_empty() || none {
            return Ok(None);
        }
        // A Vec of strings and JSON values always serializes.
        Ok(Some(serde_json::to_string(&out).unwrap_or_default()))
    }

    /// The token limit asked for (`max_completion_tokens` wins; 0 means none).
    pub fn token_limit(&self) -> Option<u32> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .filter(|&n| n > 0)
    }

    /// Whether the usage chunk was asked for.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> CompletionRequest {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn text_parts_roles_and_unknown_fields() {
        let r = parse(
            r#"{"model":"m","temperature":0.2,"tools":[],"messages":[
                {"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[]}]}"#,
        );
        let m = chat_messages(&r.messages).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m,
            vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("ab"),
                ChatMessage::assistant("")
            ]
        );
        assert!(r.check_supported().is_ok());
    }

    #[test]
    fn refusals() {
        let r = parse(r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
        let e = chat_messages(&r.messages).err();
        assert_eq!(e.map(|e| e.param), Some(Some("messages[0].content".into())));
        let r = parse(r#"{"messages":[{"role":"robot","content":"x"}]}"#);
        assert!(chat_messages(&r.messages).is_err());
        assert!(chat_messages(&[]).is_err());
        assert!(parse(r#"{"messages":[],"n":2}"#).check_supported().is_err());
        assert!(parse(r#"{"messages":[],"tool_choice":"required"}"#)
            .check_supported()
            .is_err());
        let r = parse(r#"{"messages":[],"max_tokens":5,"max_completion_tokens":7}"#);
        assert_eq!(r.token_limit(), Some(7));
    }
}
