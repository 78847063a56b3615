//! The adapter's error type. lapin's errors stay private: they are converted here into
//! [`AmqpError`], which every public function hands out as a [`chatstream_core::Error`].

use chatstream_core::{BoxError, Error};

/// What went wrong talking to RabbitMQ. Public functions return it inside
/// [`chatstream_core::Error`]: broker failures as the retryable
/// [`Error::Unavailable`] (whose `source` is this type, so it can be downcast), bad names as
/// [`Error::Invalid`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The connection could not be opened.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// An operation failed on an open connection (channel closed, connection lost, server
    /// refused a declaration).
    #[error("RabbitMQ {op} failed: {source}")]
    Broker {
        /// What was being done (`basic.publish`, `queue.declare`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The broker negatively acknowledged a published message.
    #[error("RabbitMQ refused a published message ({op})")]
    Nacked {
        /// What was being published.
        op: &'static str,
    },
    /// The connection stayed down for the whole reconnect window.
    #[error("RabbitMQ unreachable: gave up reconnecting after {0:?}")]
    GaveUp(std::time::Duration),
    /// A name (queue, routing key) is not acceptable to AMQP, e.g. longer than 255 bytes.
    #[error("invalid AMQP name {name:?}: {reason}")]
    InvalidName {
        /// The offending name (cut to 64 characters).
        name: String,
        /// Why.
        reason: &'static str,
    },
}

impl AmqpError {
    pub(crate) fn broker(op: &'static str, e: lapin::Error) -> Self {
        AmqpError::Broker {
            op,
            source: Box::new(e),
        }
    }

    pub(crate) fn connect(url: &str, e: lapin::Error) -> Self {
        AmqpError::Connect {
            url: redact(url),
            source: Box::new(e),
        }
    }

    pub(crate) fn invalid_name(name: &str, reason: &'static str) -> Self {
        AmqpError::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        }
    }
}

impl From<AmqpError> for Error {
    fn from(e: AmqpError) -> Self {
        match e {
            AmqpError::InvalidName { .. } => Error::invalid("AMQP name", e),
            other => Error::unavailable("RabbitMQ", other),
        }
    }
}

/// Converts a lapin error met during `op` into the core error.
pub(crate) fn lapin_err(op: &'static str) -> impl FnOnce(lapin::Error) -> Error {
    move |e| AmqpError::broker(op, e).into()
}

/// The URL without the password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_failures_are_retryable_and_bad_names_are_not() {
        let e: Error = AmqpError::GaveUp(std::time::Duration::from_secs(1)).into();
        assert!(e.is_retryable());
        let e: Error = AmqpError::invalid_name("x", "too long").into();
        assert!(!e.is_retryable());
        assert!(e.is_poison());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
    }
}
