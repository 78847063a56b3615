//! Topic senders: envelopes to the token topic, requests to the requests topic.

use async_trait::async_trait;
use azservicebus::amqp::error::TryAddMessageError;
use azservicebus::{
    CreateMessageBatchOptions, ServiceBusMessage, ServiceBusMessageBatch, ServiceBusSender,
    ServiceBusSenderOptions,
};
use chatstream_core::{ChatRequest, Destination, RequestSink, Result, TokenEnvelope, TokenSink};
use tokio::sync::Mutex;

use crate::connection::ServiceBusConnection;
use crate::error::{sb_err, ServiceBusError};
use crate::message::{envelope_message, request_message};

/// One topic sender. Calls take its lock in turn (tokio's mutex is fair), so overlapping
/// sends reach Service Bus in call order.
#[derive(Debug)]
struct TopicSender {
    topic: String,
    /// `None` only once dropped.
    sender: Mutex<Option<ServiceBusSender>>,
}

impl Drop for TopicSender {
    /// An azservicebus link must be disposed, not dropped: a dropped link detaches without
    /// waiting for the answer, and fe2o3 then ends the whole AMQP session (every other sender
    /// and receiver of the connection) on the broker's detach for a handle it forgot.
    fn drop(&mut self) {
        if let Some(sender) = self.sender.get_mut().take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = sender.dispose().await;
                });
            }
        }
    }
}

impl TopicSender {
    async fn open(conn: &ServiceBusConnection, topic: &str) -> Result<Self> {
        let sender = conn
            .client
            .lock()
            .await
            .create_sender(topic, ServiceBusSenderOptions::default())
            .await
            .map_err(sb_err("open sender"))?;
        Ok(Self {
            topic: topic.to_owned(),
            sender: Mutex::new(Some(sender)),
        })
    }

    /// Sends `messages` in order, in as few Service Bus batches as the size limit allows (one
    /// transfer each), each accepted before the next goes.
    async fn send(&self, messages: Vec<ServiceBusMessage>) -> Result<()> {
        let too_large = || {
            ServiceBusError::Invalid(format!(
                "a message is larger than {}'s message size limit",
                self.topic
            ))
        };
        let mut guard = self.sender.lock().await;
        let sender = guard.as_mut().ok_or(ServiceBusError::LinkClosed)?;
        let mut batch = new_batch(sender)?;
        for message in messages {
            let message = match batch.try_add_message(message) {
                Ok(()) => continue,
                Err(TryAddMessageError::BatchFull(m)) if !batch.is_empty() => m,
                Err(TryAddMessageError::BatchFull(_)) => return Err(too_large().into()),
                Err(e) => return Err(ServiceBusError::Invalid(e.to_string()).into()),
            };
            let full = std::mem::replace(&mut batch, new_batch(sender)?);
            sender
                .send_message_batch(full)
                .await
                .map_err(sb_err("send"))?;
            batch.try_add_message(message).map_err(|_| too_large())?;
        }
        if !batch.is_empty() {
            sender
                .send_message_batch(batch)
                .await
                .map_err(sb_err("send"))?;
        }
        Ok(())
    }
}

fn new_batch(sender: &ServiceBusSender) -> Result<ServiceBusMessageBatch> {
    sender
        .create_message_batch(CreateMessageBatchOptions::default())
        .map_err(|e| ServiceBusError::broker("create batch", e.to_string()).into())
}

/// A [`TokenSink`] on the token topic (`token-streams` by default). Every message has
/// `SessionId` = the chat session id (so the session receiver of that chat gets it), the
/// canonical envelope JSON as body, and `sessionId`/`messageId` application properties. A batch
/// goes out as one Service Bus batch (split only at the size limit), in order.
#[derive(Debug)]
pub struct ServiceBusTokenSink {
    inner: TopicSender,
}

impl ServiceBusTokenSink {
    pub(crate) async fn new(conn: &ServiceBusConnection) -> Result<Self> {
        Ok(Self {
            inner: TopicSender::open(conn, &conn.config.token_streams_topic).await?,
        })
    }
}

#[async_trait]
impl TokenSink for ServiceBusTokenSink {
    async fn publish(&self, _destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        let messages = batch
            .iter()
            .map(envelope_message)
            .collect::<Result<Vec<_>>>()?;
        self.inner.send(messages).await
    }
}

/// A [`RequestSink`] on the requests topic (`user-messages` by default): seed 000's request
/// JSON as body, `sessionId`/`messageId` application properties.
#[derive(Debug)]
pub struct ServiceBusRequestSink {
    inner: TopicSender,
}

impl ServiceBusRequestSink {
    pub(crate) async fn new(conn: &ServiceBusConnection) -> Result<Self> {
        Ok(Self {
            inner: TopicSender::open(conn, &conn.config.user_messages_topic).await?,
        })
    }

    /// Publishes raw bytes as a request body, as an outside client would.
    pub async fn submit_raw(&self, body: &[u8]) -> Result<()> {
        self.inner
            .send(vec![ServiceBusMessage::new(body.to_vec())])
            .await
    }
}

#[async_trait]
impl RequestSink for ServiceBusRequestSink {
    async fn submit(&self, request: &ChatRequest) -> Result<()> {
        self.inner.send(vec![request_message(request)]).await
    }
}
