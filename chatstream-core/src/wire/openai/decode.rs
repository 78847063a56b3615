//! Decoding the `data:` payloads of an OpenAI-compatible stream.

use serde::Deserialize;
use serde_json::Value;

use super::DONE;
use crate::wire::from_json;
use crate::{Error, Result, Usage};

const WHAT: &str = "OpenAI chunk";

/// What one `data:` payload of an OpenAI-compatible stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenAiData {
    /// A `chat.completion.chunk`.
    Chunk(ChunkDelta),
    /// `[DONE]`.
    Done,
    /// `{"error": {…}}`.
    Error(ApiError),
}

/// The parts of a chunk chatstream uses (choice 0 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkDelta {
    /// The completion id.
    pub id: Option<String>,
    /// `delta.role`, on the first chunk.
    pub role: Option<String>,
    /// `delta.content`.
    pub content: Option<String>,
    /// `finish_reason` as sent (see [`finish_reason_from_str`](super::finish_reason_from_str)).
    pub finish_reason: Option<String>,
    /// `usage`, on the usage chunk (missing counts read as 0, a missing total as their sum).
    pub usage: Option<Usage>,
}

/// An error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `message`.
    pub message: String,
    /// `type`.
    pub kind: Option<String>,
    /// `code`, as text (servers send strings or numbers).
    pub code: Option<String>,
}

#[derive(Deserialize)]
struct ChunkIn {
    id: Option<String>,
    choices: Option<Vec<ChoiceIn>>,
    usage: Option<UsageIn>,
    error: Option<ErrorIn>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    index: u32,
    delta: Option<DeltaIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaIn {
    role: Option<String>,
    content: Option<String>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    total_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorIn {
    #[serde(default)]
    message: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<Value>,
}

/// Parses one `data:` payload: `[DONE]`, an error object, or a chunk (which must have
/// `choices`, possibly empty).
pub fn parse_data(data: &str) -> Result<OpenAiData> {
    if data.trim() == DONE {
        return Ok(OpenAiData::Done);
    }
    let c: ChunkIn = from_json(WHAT, data.as_bytes())?;
    if let Some(e) = c.error {
        let code = match e.code {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        return Ok(OpenAiData::Error(ApiError {
            message: e.message,
            kind: e.kind,
            code,
        }));
    }
    let choices = c
        .choices
        .ok_or_else(|| Error::decode(WHAT, "missing field `choices`"))?;
    let mut delta = ChunkDelta {
        id: c.id,
        usage: c.usage.map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or_else(|| u.prompt_tokens.saturating_add(u.completion_tokens)),
        }),
        ..ChunkDelta::default()
    };
    if let Some(choice) = choices.into_iter().find(|ch| ch.index == 0) {
        delta.finish_reason = choice.finish_reason;
        if let Some(d) = choice.delta {
            delta.role = d.role;
            delta.content = d.content;
        }
    }
    Ok(OpenAiData::Chunk(delta))
}
