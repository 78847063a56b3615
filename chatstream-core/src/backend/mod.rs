//! LLM backends and the layers that wrap them.
//!
//! | backend | what it is |
//! |---|---|
//! | [`ScriptedBackend`] | a fixed answer, token by token, no model needed |
//! | `OpenAiBackend` (feature `openai`) | any OpenAI-compatible chat completions server |
//!
//! Layers ([`SystemPromptLayer`], [`MaxTokensLayer`], [`SentenceLimitLayer`],
//! [`ToolLoopLayer`]) wrap any backend, tower-style; [`LlmBackendExt::layer`] stacks them.
//! [`Tool`] is what the tool loop calls; `WeatherTool` (feature `openai`) is seed 004's
//! `get_weather`.

mod ext;
mod layers;
#[cfg(feature = "openai")]
mod openai;
mod scripted;
mod tools;

pub use ext::LlmBackendExt;
pub use layers::{
    MaxTokens, MaxTokensLayer, SentenceLimit, SentenceLimitLayer, SystemPrompt, SystemPromptLayer,
};
#[cfg(feature = "openai")]
pub use openai::{OpenAiBackend, OpenAiConfig};
pub use scripted::{ScriptedBackend, Tokenize};
#[cfg(feature = "openai")]
pub use tools::WeatherTool;
pub use tools::{DynTool, Tool, ToolDefinition, ToolLoop, ToolLoopLayer};
