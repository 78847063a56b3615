//! The connection manager: one lapin connection, reopened with backoff when it drops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{Error, HealthCheck, Result};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::{lapin_err, AmqpError};
use crate::AmqpConfig;

/// A shared connection to RabbitMQ. Cheap to clone; every adapter type takes one and opens
/// its own channels on it. When the connection drops (server restart, network, an operator
/// closing it), the next operation reconnects with the configured [`Backoff`](crate::Backoff);
/// consumers re-declare their topology and consume again.
#[derive(Clone)]
pub struct AmqpConnection {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    name: String,
    current: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for AmqpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConnection")
            .field("name", &self.inner.name)
            .field("url", &crate::error::redact(&self.inner.config.url))
            .finish_non_exhaustive()
    }
}

impl AmqpConnection {
    /// Connects once (no retry, so a missing broker is reported at once as a retryable
    /// [`Error::Unavailable`](chatstream_core::Error::Unavailable)).
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let name = format!(
            "{}-{}",
            config.connection_name,
            uuid::Uuid::new_v4().simple()
        );
        let conn = open(&config, &name).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                name,
                current: Mutex::new(Some(Arc::new(conn))),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// The connection's name as the broker lists it (`rabbitmqctl list_connections name`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the connection is open now.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .current
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// Closes the connection; the next operation opens a new one.
    pub async fn close(&self) {
        if let Some(conn) = self.inner.current.lock().await.take() {
            let _ = conn.close(200, "closed by chatstream".into()).await;
        }
    }

    /// The live connection, reconnecting with backoff when it is down.
    async fn live(&self) -> Result<Arc<Connection>> {
        let mut current = self.inner.current.lock().await;
        if let Some(conn) = current.as_ref() {
            if conn.status().connected() {
                return Ok(conn.clone());
            }
            tracing::warn!(connection = %self.inner.name, "RabbitMQ connection lost; reconnecting");
        }
        *current = None;
        let backoff = self.inner.config.backoff;
        let started = Instant::now();
        let mut wait = backoff.initial;
        loop {
            match open(&self.inner.config, &self.inner.name).await {
                Ok(conn) => {
                    tracing::info!(connection = %self.inner.name, "RabbitMQ connection open");
                    let conn = Arc::new(conn);
                    *current = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) if started.elapsed() + wait > backoff.give_up_after => {
                    tracing::warn!(error = %e, "RabbitMQ still unreachable; giving up for now");
                    return Err(AmqpError::GaveUp(started.elapsed()).into());
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?wait, "RabbitMQ unreachable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(backoff.max);
                }
            }
        }
    }

    /// A new channel on the live connection.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let conn = self.live().await?;
        match conn.create_channel().await {
            Ok(ch) => Ok(ch),
            Err(e) if conn.status().connected() => Err(lapin_err("channel.open")(e)),
            Err(_) => {
                // The connection died between the check and the open: one more round.
                let conn = self.live().await?;
                conn.create_channel()
                    .await
                    .map_err(lapin_err("channel.open"))
            }
        }
    }

    /// A new channel in publisher-confirm mode.
    pub(crate) async fn confirm_channel(&self) -> Result<Channel> {
        let ch = self.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(lapin_err("confirm.select"))?;
        Ok(ch)
    }

    /// Sleeps before a consumer retries after its channel failed (first step of the backoff).
    pub(crate) async fn pause(&self) {
        tokio::time::sleep(
            self.inner
                .config
                .backoff
                .initial
                .min(Duration::from_secs(1)),
        )
        .await;
    }
}

/// How long a readiness probe waits for a connection that is being reopened.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// Ready while the connection is open. A probe of a dropped connection reopens it (within
/// 1.5 s, so that readiness comes back with the broker even in a process whose
/// consumers are idle); while another task is reopening it, or the broker still refuses,
/// the check fails. A silently black-holed connection is noticed by the AMQP heartbeat
/// (negotiated with the server, 60 s by default), not by this check.
#[async_trait]
impl HealthCheck for AmqpConnection {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    async fn check(&self) -> Result<()> {
        match tokio::time::timeout(PROBE_WAIT, self.live()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::unavailable(
                "rabbitmq",
                "the connection is down and being reopened",
            )),
        }
    }
}

/// Longest a single connection attempt may take (a black-holed host never refuses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn open(config: &AmqpConfig, name: &str) -> Result<Connection> {
    let url = config.normalized_url();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, props)).await {
        Ok(result) => result.map_err(|e| AmqpError::connect(&url, e).into()),
        Err(_) => Err(AmqpError::GaveUp(CONNECT_TIMEOUT).into()),
    }
}
