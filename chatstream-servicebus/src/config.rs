//! Where the namespace is, how to sign in, and the entity names.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use chatstream_core::{Error, Result};

/// How to reach and sign in to a Service Bus namespace.
#[derive(Clone)]
#[non_exhaustive]
pub enum ServiceBusCredential {
    /// Passwordless: `DefaultAzureCredential` (managed identity, then the Azure CLI) for the
    /// namespace `<name>.servicebus.windows.net` (seed 000's
    /// `SERVICEBUS_FULLY_QUALIFIED_NAMESPACE`). Needs the *Azure Service Bus Data Sender* and
    /// *Data Receiver* roles.
    Identity {
        /// `<name>.servicebus.windows.net`.
        fully_qualified_namespace: String,
    },
    /// Any `azure_core` token credential (workload identity, a service principal, …).
    TokenCredential {
        /// `<name>.servicebus.windows.net`.
        fully_qualified_namespace: String,
        /// The credential.
        credential: Arc<dyn TokenCredential>,
    },
    /// A connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`).
    /// azservicebus ignores a port in its endpoint.
    ConnectionString(String),
    /// A shared access key, over TLS to `endpoint` (`host` or `host:port`).
    NamedKey {
        /// The namespace host, optionally with a port.
        endpoint: String,
        /// The key's name.
        key_name: String,
        /// The key.
        key: String,
    },
    /// A shared access key over plain `amqp://` (feature `fake`): the in-process fake.
    #[cfg(feature = "fake")]
    Unsecured {
        /// `host:port`.
        endpoint: String,
        /// The key's name (the fake accepts any).
        key_name: String,
        /// The key (the fake accepts any).
        key: String,
    },
}

impl fmt::Debug for ServiceBusCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity {
                fully_qualified_namespace,
            } => write!(f, "Identity({fully_qualified_namespace})"),
            Self::TokenCredential {
                fully_qualified_namespace,
                ..
            } => write!(f, "TokenCredential({fully_qualified_namespace})"),
            Self::ConnectionString(_) => write!(f, "ConnectionString(***)"),
            Self::NamedKey {
                endpoint, key_name, ..
            } => write!(f, "NamedKey({key_name}@{endpoint})"),
            #[cfg(feature = "fake")]
            Self::Unsecured {
                endpoint, key_name, ..
            } => write!(f, "Unsecured({key_name}@{endpoint})"),
        }
    }
}

/// Everything the adapter needs to know. [`Default`] has the seeds' entity names and an empty
/// namespace; [`ServiceBusConfig::from_env`] reads the seeds' variables.
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    /// How to connect.
    pub credential: ServiceBusCredential,
    /// Topic requests are published to (`SERVICEBUS_USER_MESSAGES_TOPIC`, `user-messages`).
    pub user_messages_topic: String,
    /// The workers' subscription (`SERVICEBUS_USER_MESSAGES_SUBSCRIPTION`, `worker-service`).
    pub user_messages_subscription: String,
    /// Topic envelopes are published to (`SERVICEBUS_TOKEN_STREAMS_TOPIC`, `token-streams`).
    pub token_streams_topic: String,
    /// The gateways' session-enabled subscription (`SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION`,
    /// `sse-service`).
    pub token_streams_subscription: String,
    /// The longest one receive call waits. Settlements queue behind a receive that is
    /// waiting, so this also bounds their delay while a source is idle.
    pub receive_wait: Duration,
    /// How long a subscriber keeps trying to lock a session that another receiver holds.
    pub session_wait: Duration,
    /// Per-attempt timeout of azservicebus operations (`SERVICEBUS_TRY_TIMEOUT`, 60 s): a
    /// send whose acknowledgement does not come within it is sent again.
    pub try_timeout: Duration,
    /// How often held message and session locks are renewed (keep it under the entity's
    /// lock duration, 1 minute by default in Azure).
    pub lock_renewal: Duration,
}

impl Default for ServiceBusConfig {
    fn default() -> Self {
        Self {
            credential: ServiceBusCredential::Identity {
                fully_qualified_namespace: String::new(),
            },
            user_messages_topic: "user-messages".into(),
            user_messages_subscription: "worker-service".into(),
            token_streams_topic: "token-streams".into(),
            token_streams_subscription: "sse-service".into(),
            receive_wait: Duration::from_secs(1),
            session_wait: Duration::from_secs(30),
            try_timeout: Duration::from_secs(60),
            lock_renewal: Duration::from_secs(20),
        }
    }
}

impl ServiceBusConfig {
    /// Reads the environment: `SERVICEBUS_CONNECTION_STRING`, else `SERVICEBUS_ENDPOINT` with
    /// `SERVICEBUS_SHARED_ACCESS_KEY_NAME`/`SERVICEBUS_SHARED_ACCESS_KEY` (plain AMQP when
    /// `SERVICEBUS_UNSECURED=1`, feature `fake` only), else
    /// `SERVICEBUS_FULLY_QUALIFIED_NAMESPACE` (passwordless); the four entity names; and
    /// `SERVICEBUS_TRY_TIMEOUT`, the per-attempt timeout in seconds.
    /// Fails with [`Error::Invalid`] when no way to connect is configured.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Like [`ServiceBusConfig::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let credential = if let Some(cs) = var("SERVICEBUS_CONNECTION_STRING") {
            ServiceBusCredential::ConnectionString(cs)
        } else if let Some(endpoint) = var("SERVICEBUS_ENDPOINT") {
            let missing = |what| {
                Error::invalid(
                    "Service Bus configuration",
                    format!("SERVICEBUS_ENDPOINT is set but {what} is not"),
                )
            };
            let key_name = var("SERVICEBUS_SHARED_ACCESS_KEY_NAME")
                .ok_or_else(|| missing("SERVICEBUS_SHARED_ACCESS_KEY_NAME"))?;
            let key = var("SERVICEBUS_SHARED_ACCESS_KEY")
                .ok_or_else(|| missing("SERVICEBUS_SHARED_ACCESS_KEY"))?;
            let unsecured = var("SERVICEBUS_UNSECURED")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            named_key(endpoint, key_name, key, unsecured)?
        } else if let Some(ns) = var("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE") {
            ServiceBusCredential::Identity {
                fully_qualified_namespace: ns,
            }
        } else {
            return Err(Error::invalid(
                "Service Bus configuration",
                "set SERVICEBUS_FULLY_QUALIFIED_NAMESPACE, SERVICEBUS_CONNECTION_STRING or SERVICEBUS_ENDPOINT",
            ));
        };
        let mut config = Self {
            credential,
            ..Self::default()
        };
        let set = |field: &mut String, name: &str| {
            if let Some(v) = var(name) {
                *field = v;
            }
        };
        set(
            &mut config.user_messages_topic,
            "SERVICEBUS_USER_MESSAGES_TOPIC",
        );
        set(
            &mut config.user_messages_subscription,
            "SERVICEBUS_USER_MESSAGES_SUBSCRIPTION",
        );
        set(
            &mut config.token_streams_topic,
            "SERVICEBUS_TOKEN_STREAMS_TOPIC",
        );
        set(
            &mut config.token_streams_subscription,
            "SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION",
        );
        if let Some(secs) = var("SERVICEBUS_TRY_TIMEOUT") {
            let invalid = || {
                Error::invalid(
                    "Service Bus configuration",
                    format!(
                        "SERVICEBUS_TRY_TIMEOUT must be a positive number of seconds, got {secs:?}"
                    ),
                )
            };
            let secs: f64 = secs.trim().parse().map_err(|_| invalid())?;
            config.try_timeout = Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(invalid)?;
        }
        Ok(config)
    }
}

fn named_key(
    endpoint: String,
    key_name: String,
    key: String,
    unsecured: bool,
) -> Result<ServiceBusCredential> {
    if !unsecured {
        return Ok(ServiceBusCredential::NamedKey {
            endpoint,
            key_name,
            key,
        });
    }
    #[cfg(feature = "fake")]
    return Ok(ServiceBusCredential::Unsecured {
        endpoint,
        key_name,
        key,
    });
    #[cfg(not(feature = "fake"))]
    Err(Error::invalid(
        "Service Bus configuration",
        "SERVICEBUS_UNSECURED needs chatstream-servicebus's `fake` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn seed_variables_and_defaults() {
        let c = ServiceBusConfig::from_vars(vars(&[
            (
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
                "ns.servicebus.windows.net",
            ),
            ("SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION", "sse-1"),
        ]))
        .expect("config");
        assert!(
            matches!(&c.credential, ServiceBusCredential::Identity { fully_qualified_namespace } if fully_qualified_namespace == "ns.servicebus.windows.net")
        );
        assert_eq!(c.user_messages_topic, "user-messages");
        assert_eq!(c.user_messages_subscription, "worker-service");
        assert_eq!(c.token_streams_topic, "token-streams");
        assert_eq!(c.token_streams_subscription, "sse-1");
    }

    #[test]
    fn connection_string_wins_and_is_not_printed() {
        let c = ServiceBusConfig::from_vars(vars(&[
            ("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "ns"),
            (
                "SERVICEBUS_CONNECTION_STRING",
                "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=secret",
            ),
        ]))
        .expect("config");
        assert!(matches!(
            c.credential,
            ServiceBusCredential::ConnectionString(_)
        ));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[cfg(feature = "fake")]
    #[test]
    fn endpoint_and_key_reach_the_fake_unsecured() {
        let c = ServiceBusConfig::from_vars(vars(&[
            ("SERVICEBUS_ENDPOINT", "127.0.0.1:5671"),
            ("SERVICEBUS_SHARED_ACCESS_KEY_NAME", "k"),
            ("SERVICEBUS_SHARED_ACCESS_KEY", "v"),
            ("SERVICEBUS_UNSECURED", "1"),
        ]))
        .expect("config");
        assert!(
            matches!(c.credential, ServiceBusCredential::Unsecured { ref endpoint, .. } if endpoint == "127.0.0.1:5671")
        );
    }

    #[test]
    fn try_timeout_is_read_in_seconds_and_checked() {
        let ns = ("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", "ns");
        let c = ServiceBusConfig::from_vars(vars(&[ns, ("SERVICEBUS_TRY_TIMEOUT", "2.5")]))
            .expect("config");
        assert_eq!(c.try_timeout, Duration::from_millis(2500));
        for bad in ["0", "-1", "soon"] {
            let e = ServiceBusConfig::from_vars(vars(&[ns, ("SERVICEBUS_TRY_TIMEOUT", bad)]))
                .expect_err(bad);
            assert!(e.to_string().contains("SERVICEBUS_TRY_TIMEOUT"), "{e}");
        }
    }

    #[test]
    fn nothing_configured_is_invalid() {
        let e = ServiceBusConfig::from_vars(|_| None).expect_err("no namespace");
        assert!(e.is_poison(), "{e}");
    }
}
