//! One AMQP connection to a namespace, shared by the senders and receivers made from it.

use std::sync::Arc;

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};
use chatstream_core::{Error, Result};
use tokio::sync::Mutex;

use crate::config::{ServiceBusConfig, ServiceBusCredential};
use crate::error::ServiceBusError;
use crate::{
    ServiceBusRequestSink, ServiceBusRequestSource, ServiceBusTokenSink, ServiceBusTokenSource,
};

pub(crate) type Client = ServiceBusClient<BasicRetryPolicy>;

/// A connection to a Service Bus namespace (one AMQP connection and session). Cheap to clone;
/// every sender and receiver made from it shares it, and it stays open while any of them
/// lives.
#[derive(Clone)]
pub struct ServiceBusConnection {
    pub(crate) client: Arc<Mutex<Client>>,
    pub(crate) config: Arc<ServiceBusConfig>,
}

impl std::fmt::Debug for ServiceBusConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusConnection")
            .field("credential", &self.config.credential)
            .finish_non_exhaustive()
    }
}

impl ServiceBusConnection {
    /// Connects and signs in. Fails with [`Error::Unavailable`] when the namespace cannot be
    /// reached or refuses the credential, [`Error::Invalid`] when the configuration is
    /// incomplete.
    pub async fn connect(config: ServiceBusConfig) -> Result<Self> {
        let options = ServiceBusClientOptions {
            retry_options: ServiceBusRetryOptions {
                try_timeout: config.try_timeout,
                ..ServiceBusRetryOptions::default()
            },
            ..ServiceBusClientOptions::default()
        };
        let connect_err = |namespace: &str| {
            let namespace = namespace.to_owned();
            move |e: azure_core::Error| -> Error {
                ServiceBusError::Connect {
                    namespace,
                    source: Box::new(e),
                }
                .into()
            }
        };
        let client = match &config.credential {
            ServiceBusCredential::Identity {
                fully_qualified_namespace: ns,
            } => {
                if ns.trim().is_empty() {
                    return Err(Error::invalid(
                        "Service Bus configuration",
                        "the fully qualified namespace is empty",
                    ));
                }
                let credential =
                    azure_identity::DefaultAzureCredential::new().map_err(connect_err(ns))?;
                Client::new_from_token_credential(ns.as_str(), credential, options)
                    .await
                    .map_err(connect_err(ns))?
            }
            ServiceBusCredential::TokenCredential {
                fully_qualified_namespace: ns,
                credential,
            } => Client::new_from_token_credential(ns.as_str(), credential.clone(), options)
                .await
                .map_err(connect_err(ns))?,
            ServiceBusCredential::ConnectionString(cs) => {
                Client::new_from_connection_string(cs.as_str(), options)
                    .await
                    .map_err(connect_err("from the connection string"))?
            }
            ServiceBusCredential::NamedKey {
                endpoint,
                key_name,
                key,
            } => Client::new_from_named_key_credential(
                endpoint.as_str(),
                AzureNamedKeyCredential::new(key_name, key),
                options,
            )
            .await
            .map_err(connect_err(endpoint))?,
            #[cfg(feature = "fake")]
            ServiceBusCredential::Unsecured {
                endpoint,
                key_name,
                key,
            } => Client::unsecured()
                .new_from_named_key_credential(
                    endpoint.as_str(),
                    AzureNamedKeyCredential::new(key_name, key),
                    options,
                )
                .await
                .map_err(connect_err(endpoint))?,
        };
        Ok(Self {
            client: Arc::new(Mutex::new(client)),
            config: Arc::new(config),
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &ServiceBusConfig {
        &self.config
    }

    /// A new receiver on the workers' subscription (one per worker process).
    pub async fn request_source(&self) -> Result<ServiceBusRequestSource> {
        ServiceBusRequestSource::new(self).await
    }

    /// A sender to the requests topic.
    pub async fn request_sink(&self) -> Result<ServiceBusRequestSink> {
        ServiceBusRequestSink::new(self).await
    }

    /// A sender to the token topic.
    pub async fn token_sink(&self) -> Result<ServiceBusTokenSink> {
        ServiceBusTokenSink::new(self).await
    }

    /// Session receivers on the gateways' token subscription, opened per stream.
    pub fn token_source(&self) -> ServiceBusTokenSource {
        ServiceBusTokenSource::new(self)
    }
}
