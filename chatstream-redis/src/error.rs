//! The crate's error type, and the one place where `redis` errors become core errors.

use chatstream_core::BoxError;

/// What can go wrong while setting up the Redis adapter.
///
/// Operations behind the core traits return [`chatstream_core::Error`]; this type is what
/// constructors and configuration return. It converts into the core error with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL: {reason}")]
    InvalidUrl {
        /// Why it was refused (the URL itself is not repeated: it may hold a password).
        reason: String,
    },
    /// The server could not be reached.
    #[error("Redis at {endpoint} unreachable: {source}")]
    Unreachable {
        /// `host:port` of the server.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A configuration value (environment variable) is malformed.
    #[error("invalid {name}: {reason}")]
    Config {
        /// The setting, e.g. `REDIS_THREAD_EXPIRY`.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<Error> for chatstream_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidUrl { .. } | Error::Config { .. } => {
                chatstream_core::Error::invalid("Redis configuration", e)
            }
            Error::Unreachable { .. } => chatstream_core::Error::unavailable("redis", e),
        }
    }
}

/// Converts a `redis` error: timeouts become [`chatstream_core::Error::Timeout`], everything
/// else (connection refused or dropped, I/O, a failing command) is
/// [`chatstream_core::Error::Unavailable`], which the core treats as retryable.
pub(crate) fn from_redis(e: redis::RedisError) -> chatstream_core::Error {
    if e.is_timeout() {
        chatstream_core::Error::Timeout("redis command")
    } else {
        chatstream_core::Error::unavailable("redis", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_convert_by_meaning() {
        let e: chatstream_core::Error = Error::Config {
            name: "REDIS_THREAD_EXPIRY",
            reason: "not a number".into(),
        }
        .into();
        assert!(matches!(e, chatstream_core::Error::Invalid { .. }));
        let e: chatstream_core::Error = Error::Unreachable {
            endpoint: "127.0.0.1:1".into(),
            source: "refused".into(),
        }
        .into();
        assert!(e.is_retryable());
        let io =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            from_redis(io),
            chatstream_core::Error::Unavailable { .. }
        ));
    }
}
