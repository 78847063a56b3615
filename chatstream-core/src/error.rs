//! The one error type of the core crate.

/// A boxed error from an underlying library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in chatstream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source, sink or subscription is closed and will yield nothing more.
    #[error("closed")]
    Closed,
    /// Input could not be decoded (malformed JSON, missing field, wrong type).
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded ("seed 000 request", "SSE frame", …).
        what: &'static str,
        /// Why it failed, fit for a dead-letter header or a 400 body.
        reason: String,
    },
    /// Input was well-formed but not acceptable (empty message, key with forbidden characters).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The replay asked for is older than what the broker still holds.
    #[error("history lost: the broker no longer holds the stream after seq {after_seq}")]
    HistoryLost {
        /// The position the subscriber asked to resume after.
        after_seq: u64,
    },
    /// This adapter cannot do what was asked (e.g. replay on a broker that keeps nothing).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A server (broker, LLM) could not be reached or answered with a failure.
    #[error("{what} unavailable: {source}")]
    Unavailable {
        /// Which server.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The LLM backend refused or failed (HTTP status, API error).
    #[error("backend error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Backend {
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// The message.
        message: String,
    },
    /// Something took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The stream was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A client read too slowly and was cut off.
    #[error("client too slow: more than {0} frames buffered")]
    SlowConsumer(usize),
}

impl Error {
    /// A decode error.
    pub fn decode(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }

    /// An invalid-input error.
    pub fn invalid(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Invalid {
            what,
            reason: reason.to_string(),
        }
    }

    /// An unavailable-server error.
    pub fn unavailable(what: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            what,
            source: source.into(),
        }
    }

    /// Whether trying the same operation again may succeed: the single place where
    /// retryable and fatal are told apart.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout(_) => true,
            Error::Backend { status, .. } => {
                matches!(status, None | Some(408 | 409 | 429) | Some(500..=599))
            }
            Error::Closed
            | Error::Decode { .. }
            | Error::Invalid { .. }
            | Error::HistoryLost { .. }
            | Error::Unsupported(_)
            | Error::Cancelled
            | Error::SlowConsumer(_) => false,
        }
    }

    /// True for errors caused by the input itself: such a request is dead-lettered, not retried.
    pub fn is_poison(&self) -> bool {
        matches!(self, Error::Decode { .. } | Error::Invalid { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_poison_are_decided_in_one_place() {
        assert!(Error::Timeout("x").is_retryable());
        assert!(Error::Backend {
            status: Some(429),
            message: "slow down".into()
        }
        .is_retryable());
        assert!(!Error::Backend {
            status: Some(401),
            message: "bad key".into()
        }
        .is_retryable());
        assert!(Error::decode("x", "y").is_poison());
        assert!(!Error::decode("x", "y").is_retryable());
        assert_eq!(
            Error::Backend {
                status: Some(500),
                message: "boom".into()
            }
            .to_string(),
            "backend error (HTTP 500): boom"
        );
    }
}
