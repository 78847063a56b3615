//! Configuration of the OpenAI-compatible backend.

use std::fmt;
use std::time::Duration;

/// Where and how [`OpenAiBackend`](super::OpenAiBackend) talks to an OpenAI-compatible server
/// (OpenAI, Ollama, vLLM, DeepSeek, llama.cpp, …).
///
/// [`Default`] and [`OpenAiConfig::from_env`] use seed 003's defaults: a local Ollama at
/// `http://localhost:11434/v1`, key `dummy-token`, model `deepseek-r1:8b`.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`. Never printed by `Debug`.
    pub api_key: String,
    /// Model used when the request names none.
    pub model: String,
    /// Token limit used when the request sets none.
    pub max_tokens: Option<u32>,
    /// Longest a whole answer may take, from sending the request to the last chunk.
    pub timeout: Duration,
    /// Longest the server may stay silent: before the response headers, and between two
    /// chunks of the answer. A stalled server yields [`Error::Timeout`](crate::Error::Timeout).
    pub idle_timeout: Duration,
    /// Ask for token counts (`stream_options.include_usage`). Some older servers reject the
    /// option; turn it off for them.
    pub include_usage: bool,
}

impl OpenAiConfig {
    /// Seed 003's default base URL (a local Ollama).
    pub const DEFAULT_URL: &'static str = "http://localhost:11434/v1";
    /// Seed 003's default API key.
    pub const DEFAULT_API_KEY: &'static str = "dummy-token";
    /// Seed 003's default model.
    pub const DEFAULT_MODEL: &'static str = "deepseek-r1:8b";
    /// Default [`OpenAiConfig::timeout`]: reasoning models on a CPU take minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    /// Default [`OpenAiConfig::idle_timeout`]: long enough for a cold model load.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

    /// A configuration for `base_url` and `model`, everything else default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            ..Self::default()
        }
    }

    /// Reads `OPENAI_URL`, `OPENAI_API_KEY` and `OPENAI_MODEL` (seed 003); unset or empty
    /// variables take the defaults.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// True when `OPENAI_URL` or `OPENAI_API_KEY` is set (and not empty): the deployment
    /// means to use a real model rather than the scripted backend.
    pub fn is_configured_in_env() -> bool {
        Self::configured_in(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let defaults = Self::default();
        Self {
            base_url: get("OPENAI_URL").unwrap_or(defaults.base_url),
            api_key: get("OPENAI_API_KEY").unwrap_or(defaults.api_key),
            model: get("OPENAI_MODEL").unwrap_or(defaults.model),
            ..defaults
        }
    }

    fn configured_in(get: impl Fn(&str) -> Option<String>) -> bool {
        ["OPENAI_URL", "OPENAI_API_KEY"]
            .iter()
            .any(|name| get(name).is_some_and(|v| !v.trim().is_empty()))
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = api_key.into();
        self
    }
    /// Sets the default token limit.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
    /// Sets the total timeout of one answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the idle timeout (headers, and between chunks).
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }
    /// Asks for token counts or not.
    pub fn with_include_usage(mut self, include_usage: bool) -> Self {
        self.include_usage = include_usage;
        self
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: Self::DEFAULT_URL.to_owned(),
            api_key: Self::DEFAULT_API_KEY.to_owned(),
            model: Self::DEFAULT_MODEL.to_owned(),
            max_tokens: None,
            timeout: Self::DEFAULT_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            include_usage: true,
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("include_usage", &self.include_usage)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_defaults_are_seed_003s() {
        let c = OpenAiConfig::from_lookup(lookup(&[]));
        assert_eq!(c.base_url, "http://localhost:11434/v1");
        assert_eq!(c.api_key, "dummy-token");
        assert_eq!(c.model, "deepseek-r1:8b");
        assert!(c.include_usage);
        assert!(!OpenAiConfig::configured_in(lookup(&[(
            "OPENAI_MODEL",
            "llama2"
        )])));
    }

    #[test]
    fn env_overrides_and_empty_means_unset() {
        let vars = [
            ("OPENAI_URL", "https://api.openai.com/v1"),
            ("OPENAI_API_KEY", ""),
            ("OPENAI_MODEL", "gpt-4o"),
        ];
        let c = OpenAiConfig::from_lookup(lookup(&vars));
        assert_eq!(c.base_url, "https://api.openai.com/v1");
        assert_eq!(c.api_key, "dummy-token");
        assert_eq!(c.model, "gpt-4o");
        assert!(OpenAiConfig::configured_in(lookup(&vars)));
        assert!(OpenAiConfig::configured_in(lookup(&[(
            "OPENAI_API_KEY",
            "sk-1"
        )])));
        assert!(!OpenAiConfig::configured_in(lookup(&[("OPENAI_URL", " ")])));
    }

    #[test]
    fn debug_never_prints_the_key() {
        let c = OpenAiConfig::default().with_api_key("sk-secret");
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
