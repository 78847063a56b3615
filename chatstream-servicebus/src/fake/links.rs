//! Message links: clients publishing to a topic, and clients receiving from a subscription
//! (or its dead-letter queue) in peek-lock.

use std::sync::Arc;

use fe2o3_amqp::link::{Receiver, SendError, Sender};
use fe2o3_amqp::Delivery;
use fe2o3_amqp_types::definitions::{AmqpError, Error as AmqpErrorFrame};
use fe2o3_amqp_types::messaging::message::__private::Deserializable;
use fe2o3_amqp_types::messaging::{
    annotations::OwnedKey, Body, DeliveryAnnotations, Header, MessageAnnotations, Outcome,
};
use fe2o3_amqp_types::primitives::{Symbol, Timestamp, Uuid, Value};

use super::amqp::now_ms;
use super::broker::{AmqpMessage, Broker, QueueId, Settle, Stored};
use super::LOCK_DURATION_MS;

/// The message format of a Service Bus batch: each data section is an encoded message.
const BATCH_FORMAT: u32 = 0x8001_3700;

/// Stores what a client publishes to `topic`, accepting each delivery once stored.
pub(crate) async fn accept_published(mut receiver: Receiver, broker: Arc<Broker>, topic: String) {
    loop {
        let delivery: Delivery<Body<Value>> = match receiver.recv().await {
            Ok(d) => d,
            Err(_) => break,
        };
        tokio::time::sleep(super::SETTLE_DELAY).await;
        let batched = *delivery.message_format() == Some(BATCH_FORMAT);
        let result = unbatch(delivery.message(), batched)
            .and_then(|messages| broker.publish(&topic, messages));
        let settled = match result {
            Ok(()) => receiver.accept(&delivery).await,
            Err(reason) => {
                let error = AmqpErrorFrame::new(AmqpError::NotAllowed, Some(reason), None);
                receiver.reject(&delivery, error).await
            }
        };
        if settled.is_err() {
            break;
        }
    }
}

fn unbatch(message: &AmqpMessage, batched: bool) -> Result<Vec<AmqpMessage>, String> {
    if !batched {
        return Ok(vec![message.clone()]);
    }
    let Body::Data(sections) = &message.body else {
        return Err("a batch must consist of data sections".into());
    };
    sections
        .iter()
        .map(|data| {
            serde_amqp::from_slice::<Deserializable<AmqpMessage>>(&data.0)
                .map(|d| d.0)
                .map_err(|e| format!("malformed message in batch: {e}"))
        })
        .collect()
}

/// Delivers a queue's messages to one client receiver link.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) broker: Arc<Broker>,
    pub(crate) queue: QueueId,
    /// The session this link holds the lock of.
    pub(crate) session: Option<String>,
    pub(crate) link_id: u64,
    /// Receive-and-delete: deliveries are settled on sending.
    pub(crate) settled: bool,
}

impl Outgoing {
    pub(crate) async fn run(self, mut sender: Sender) {
        let notify = self.broker.notifier(&self.queue);
        'link: loop {
            let token = *uuid::Uuid::new_v4().as_bytes();
            let stored = loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(s) = self
                    .broker
                    .take(&self.queue, self.session.as_deref(), token)
                {
                    break s;
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = sender.on_detach() => break 'link,
                }
            };
            let message = delivery_message(&stored, token);
            // Waits for link credit. Never cancelled: a cancelled send may already have
            // handed the transfer to the session, and the message would go out twice.
            match sender.send_batchable(message).await {
                Ok(_) if self.settled => self.settle(token, Settle::Complete),
                Ok(outcome) => {
                    let (broker, queue) = (self.broker.clone(), self.queue.clone());
                    tokio::spawn(async move {
                        broker.settle(&queue, token, settlement(outcome.await));
                    });
                }
                Err(_) => {
                    self.settle(token, Settle::Withdraw);
                    break 'link;
                }
            }
        }
        if let Some(session) = &self.session {
            self.broker
                .unlock_session(&self.queue, session, self.link_id);
        }
        // Dropping the sender drops its unsettled deliveries: their futures resolve with an
        // error and the messages are redelivered.
        drop(sender);
    }

    fn settle(&self, token: [u8; 16], how: Settle) {
        self.broker.settle(&self.queue, token, how);
    }
}

/// What the receiver's outcome means for the message.
fn settlement(outcome: Result<Outcome, SendError>) -> Settle {
    match outcome {
        Ok(Outcome::Accepted(_)) => Settle::Complete,
        Ok(Outcome::Rejected(rejected)) => {
            let info = rejected.error.as_ref().and_then(|e| e.info.as_ref());
            let field = |key: &str| match info.and_then(|i| i.get(&Symbol::from(key))) {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            Settle::DeadLetter {
                reason: field("DeadLetterReason"),
                description: field("DeadLetterErrorDescription")
                    .or_else(|| rejected.error.as_ref().and_then(|e| e.description.clone())),
            }
        }
        // Abandon (modified), release, defer (modified, undeliverable here: the fake has no
        // deferral and treats it as abandon) and a link closed with the delivery unsettled.
        Ok(_) | Err(_) => Settle::Redeliver,
    }
}

/// The stored message as delivered: header delivery count, Service Bus annotations, and the
/// lock token as a delivery annotation (fe2o3 delivery tags are 4 bytes, not a UUID).
fn delivery_message(stored: &Stored, token: [u8; 16]) -> AmqpMessage {
    let mut message = stored.message.clone();
    let header = message.header.get_or_insert_with(Header::default);
    header.delivery_count = stored.delivery_count;
    let key = |k: &str| OwnedKey::Symbol(Symbol::from(k));
    let annotations = message
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations(Default::default()));
    annotations
        .0
        .insert(key("x-opt-sequence-number"), Value::Long(stored.seq));
    annotations.0.insert(
        key("x-opt-enqueued-time"),
        Value::Timestamp(Timestamp::from_milliseconds(stored.enqueued_ms)),
    );
    annotations.0.insert(
        key("x-opt-locked-until"),
        Value::Timestamp(Timestamp::from_milliseconds(now_ms() + LOCK_DURATION_MS)),
    );
    let delivery = message
        .delivery_annotations
        .get_or_insert_with(|| DeliveryAnnotations(Default::default()));
    delivery
        .0
        .insert(key("x-opt-lock-token"), Value::Uuid(Uuid::from(token)));
    message
}
