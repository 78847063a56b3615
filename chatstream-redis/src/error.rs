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

/// Whether a `redis` error is passing trouble worth retrying: the connection was refused,
/// dropped or timed out (a restart, a network cut), or the server is not ready yet (loading
/// its data set after a restart). A command that failed this way may or may not have run,
/// so only idempotent work is retried on it.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::BusyLoadingError
                | redis::ErrorKind::TryAgain
                | redis::ErrorKind::MasterDown
                | redis::ErrorKind::ClusterDown
                | redis::ErrorKind::ClusterConnectionNotFound
        )
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
        assert!(is_transient(&io));
        assert!(matches!(
            from_redis(io),
            chatstream_core::Error::Unavailable { .. }
        ));
        let loading = redis::RedisError::from((
            redis::ErrorKind::BusyLoadingError,
            "LOADING Redis is loading the dataset in memory",
        ));
        assert!(is_transient(&loading), "a restarting server is retried");
        let wrong = redis::RedisError::from((redis::ErrorKind::TypeError, "WRONGTYPE"));
        assert!(!is_transient(&wrong));
    }
}
