//! The adapter's error type. azservicebus's errors stay private: they are converted here into
//! [`ServiceBusError`], which public functions hand out inside [`chatstream_core::Error`].

use chatstream_core::{BoxError, Error};

/// What went wrong talking to Service Bus. Public functions return it inside
/// [`chatstream_core::Error`]: connection and broker failures as the retryable
/// [`Error::Unavailable`] (whose `source` is this type, so it can be downcast), refused input
/// as [`Error::Invalid`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceBusError {
    /// The connection to the namespace could not be opened (network, TLS, sign-in).
    #[error("cannot connect to Service Bus namespace {namespace}: {source}")]
    Connect {
        /// The namespace or endpoint.
        namespace: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// An operation failed on an open connection.
    #[error("Service Bus {op} failed: {source}")]
    Broker {
        /// What was being done (`send`, `receive`, `complete`, `accept session`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Another receiver held the session's lock for the whole wait.
    #[error("Service Bus session {session:?} stayed locked by another receiver for {waited:?}")]
    SessionLocked {
        /// The chat session id.
        session: String,
        /// How long the subscriber tried.
        waited: std::time::Duration,
    },
    /// The receiver or sender is closed.
    #[error("Service Bus link closed")]
    LinkClosed,
    /// Service Bus refuses the value (a session id longer than 128 characters, …).
    #[error("invalid for Service Bus: {0}")]
    Invalid(String),
}

impl ServiceBusError {
    pub(crate) fn broker(op: &'static str, e: impl Into<BoxError>) -> Self {
        ServiceBusError::Broker {
            op,
            source: e.into(),
        }
    }
}

impl From<ServiceBusError> for Error {
    fn from(e: ServiceBusError) -> Self {
        match e {
            ServiceBusError::Invalid(_) => Error::invalid("Service Bus message", e),
            other => Error::unavailable("Azure Service Bus", other),
        }
    }
}

/// Converts an azservicebus error met during `op` into the core error.
pub(crate) fn sb_err(op: &'static str) -> impl FnOnce(azure_core::Error) -> Error {
    move |e| ServiceBusError::broker(op, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_failures_are_retryable_and_bad_values_are_poison() {
        let e: Error = ServiceBusError::broker("send", "boom").into();
        assert!(e.is_retryable());
        let e: Error = ServiceBusError::Invalid("session id too long".into()).into();
        assert!(e.is_poison() && !e.is_retryable());
    }
}
