//! The body of `POST /v1/responses` and its input items.

use std::collections::BTreeMap;

use chatstream_core::backend::ToolDefinition;
use chatstream_core::{ChatMessage, Role, ToolCall};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::OpenAiError;

/// The body of `POST /v1/responses`. Fields not listed are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CreateResponse {
    /// The model.
    pub model: Option<String>,
    /// A string (one user message) or a list of input items.
    pub input: Option<Value>,
    /// A system message for this response only.
    pub instructions: Option<String>,
    /// The limit of generated tokens.
    pub max_output_tokens: Option<u32>,
    /// Echoed (see the module docs).
    pub temperature: Option<f64>,
    /// Echoed (see the module docs).
    pub top_p: Option<f64>,
    /// Up to 16 string pairs, echoed.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Keep the response for later reads (default true).
    pub store: Option<bool>,
    /// Function tools.
    pub tools: Option<Vec<Value>>,
    /// `auto` or `none`.
    pub tool_choice: Option<Value>,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// Stream the semantic events.
    pub stream: Option<bool>,
    /// Run in the background.
    pub background: Option<bool>,
    /// The end user.
    pub user: Option<String>,
    /// `{"format": {"type": "text"}}` only.
    pub text: Option<Value>,
    /// Refused: conversations are not kept as OpenAI's conversation objects.
    pub conversation: Option<Value>,
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> OpenAiError {
    OpenAiError::invalid_request(message, Some(param.into()))
}

impl CreateResponse {
    /// Refuses what this relay cannot do faithfully.
    pub(crate) fn check_supported(&self) -> Result<(), OpenAiError> {
        if self.conversation.is_some() {
            return Err(invalid(
                "conversation objects are not supported; use previous_response_id",
                "conversation",
            ));
        }
        if let Some(text) = &self.text {
            let kind = text.pointer("/format/type").and_then(Value::as_str);
            if !matches!(kind, None | Some("text")) {
                return Err(invalid(
                    "only text output is supported (text.format.type = \"text\")",
                    "text.format",
                ));
            }
        }
        match self.tool_choice.as_ref() {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "auto" || s == "none" => {}
            Some(_) => {
                return Err(invalid(
                    "tool_choice must be \"auto\" or \"none\"",
                    "tool_choice",
                ))
            }
        }
        self.tool_definitions()?;
        if self.metadata.as_ref().is_some_and(|m| m.len() > 16) {
            return Err(invalid("metadata holds at most 16 pairs", "metadata"));
        }
        if self.background == Some(true) && self.store == Some(false) {
            return Err(invalid("background mode requires store=true", "background"));
        }
        Ok(())
    }
}

impl CreateResponse {
    /// The function tools offered to the model, as the JSON of [`ToolDefinition`]s that
    /// [`meta::TOOLS`](chatstream_core::meta::TOOLS) carries to the worker; `None` without
    /// tools or with `tool_choice: "none"`. Each tool needs `type: "function"` and a
    /// `name`; `description` and `parameters` are optional; `strict` is not enforced.
    pub(crate) fn tool_definitions(&self) -> Result<Option<String>, OpenAiError> {
        let mut out = Vec::new();
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    "only function tools are supported",
                    format!("tools[{i}].type"),
                ));
            }
            let name = match tool.get("name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => n,
                _ => {
                    return Err(invalid(
                        "a function tool needs a name",
                        format!("tools[{i}].name"),
                    ))
                }
            };
            let description = match tool.get("description") {
                None | Some(Value::Null) => "",
                Some(Value::String(d)) => d,
                Some(_) => {
                    let param = format!("tools[{i}].description");
                    return Err(invalid("description must be a string", param));
                }
            };
            let parameters = match tool.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    let param = format!("tools[{i}].parameters");
                    return Err(invalid("parameters must be a JSON Schema object", param));
                }
            };
            if out.iter().any(|d: &ToolDefinition| d.name == name) {
                let param = format!("tools[{i}].name");
                return Err(invalid(format!("two tools are named {name:?}"), param));
            }
            out.push(ToolDefinition {
                name: name.to_owned(),
                description: description.to_owned(),
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
}

/// The messages of the input, and its items as `input_items` shows them.
pub(crate) fn read_input(
    input: Option<&Value>,
) -> Result<(Vec<ChatMessage>, Vec<Value>), OpenAiError> {
    match input {
        None | Some(Value::Null) => Err(invalid("Missing required parameter: 'input'.", "input")),
        Some(Value::String(text)) => Ok((
            vec![ChatMessage::user(text.as_str())],
            vec![message_item("user", text)],
        )),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut messages = Vec::with_capacity(items.len());
            let mut shown = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let (m, s) = read_item(item, i)?;
                messages.push(m);
                shown.push(s);
            }
            Ok((messages, shown))
        }
        Some(Value::Array(_)) => Err(invalid("input must not be empty", "input")),
        Some(_) => Err(invalid(
            "input must be a string or a list of items",
            "input",
        )),
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn message_item(role: &str, text: &str) -> Value {
    let part = if role == "assistant" {
        json!({"type": "output_text", "text": text, "annotations": []})
    } else {
        json!({"type": "input_text", "text": text})
    };
    json!({"id": new_id("msg"), "type": "message", "status": "completed", "role": role, "content": [part]})
}

fn str_field<'a>(item: &'a Value, field: &str, param: &str) -> Result<&'a str, OpenAiError> {
    item.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("Missing required parameter: '{param}'."), param))
}

fn read_item(item: &Value, i: usize) -> Result<(ChatMessage, Value), OpenAiError> {
    let kind = match item.get("type") {
        None if item.get("role").is_some() => "message",
        None => return Err(invalid("an input item needs a type", format!("input[{i}]"))),
        Some(v) => v
            .as_str()
            .ok_or_else(|| invalid("type must be a string", format!("input[{i}].type")))?,
    };
    match kind {
        "message" => read_message(item, i),
        "function_call_output" => {
            let call_id = str_field(item, "call_id", &format!("input[{i}].call_id"))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => return Err(invalid("Missing required parameter: 'output'.", format!("input[{i}].output"))),
            };
            let shown = json!({"id": new_id("fco"), "type": "function_call_output", "status": "completed", "call_id": call_id, "output": output});
            Ok((ChatMessage::tool_result(call_id, output), shown))
        }
        "function_call" => {
            let call = ToolCall {
                id: str_field(item, "call_id", &format!("input[{i}].call_id"))?.to_owned(),
                name: str_field(item, "name", &format!("input[{i}].name"))?.to_owned(),
                arguments: str_field(item, "arguments", &format!("input[{i}].arguments"))?
                    .to_owned(),
            };
            let shown = json!({"id": item.get("id").cloned().unwrap_or_else(|| Value::String(new_id("fc"))), "type": "function_call", "status": "completed", "call_id": call.id, "name": call.name, "arguments": call.arguments});
            Ok((ChatMessage::assistant_tool_calls("", vec![call]), shown))
        }
        other => Err(invalid(
            format!("Invalid value: '{other}'. Supported input item types are 'message', 'function_call' and 'function_call_output'."),
            format!("input[{i}].type"),
        )),
    }
}

fn read_message(item: &Value, i: usize) -> Result<(ChatMessage, Value), OpenAiError> {
    let role_name = str_field(item, "role", &format!("input[{i}].role"))?;
    let role = match role_name {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(invalid(
                format!("Invalid value: '{other}'. Supported values are: 'system', 'developer', 'user' and 'assistant'."),
                format!("input[{i}].role"),
            ))
        }
    };
    let text = match item.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let param = format!("input[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(str_field(part, "text", &format!("{param}.text"))?)
                    }
                    Some(other) => {
                        return Err(invalid(
                            format!(
                                "content parts of type '{other}' are not supported; only text is"
                            ),
                            format!("{param}.type"),
                        ))
                    }
                    None => return Err(invalid("a content part needs a type", param)),
                }
            }
            text
        }
        _ => {
            return Err(invalid(
                "Missing required parameter: 'content'.",
                format!("input[{i}].content"),
            ))
        }
    };
    let shown = message_item(role_name, &text);
    Ok((ChatMessage::new(role, text), shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_one_user_message() {
        let (m, shown) = read_input(Some(&json!("hi"))).expect("input");
        assert_eq!(m, vec![ChatMessage::user("hi")]);
        assert_eq!(
            shown[0]["content"][0],
            json!({"type": "input_text", "text": "hi"})
        );
        assert!(shown[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_")));
    }

    #[test]
    fn items_keep_roles_parts_and_tool_results() {
        let input = json!([
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"}
        ]);
        let (m, shown) = read_input(Some(&input)).expect("input");
        assert_eq!(m[0], ChatMessage::system("be brief"));
        assert_eq!(m[1], ChatMessage::user("ab"));
        assert_eq!(m[2].tool_calls[0].name, "f");
        assert_eq!(m[3], ChatMessage::tool_result("c1", "42"));
        assert_eq!(shown[3]["type"], "function_call_output");
    }

    #[test]
    fn unknown_item_types_roles_and_parts_are_400_naming_the_param() {
        for (input, param) in [
            (
                json!([{"type": "item_reference", "id": "x"}]),
                "input[0].type",
            ),
            (json!([{"role": "tool", "content": "x"}]), "input[0].role"),
            (
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]),
                "input[0].content[0].type",
            ),
            (json!(42), "input"),
            (json!([]), "input"),
        ] {
            let e = read_input(Some(&input)).expect_err("refused");
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some(param), "{input}");
        }
        assert!(read_input(None).is_err());
    }
}
