//! Pipelined publishing with confirms, in call order.

use std::task::Poll;

use chatstream_core::Result;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;

use crate::error::{lapin_err, AmqpError};
use crate::AmqpConnection;

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: BasicProperties,
}

/// A confirm-mode channel that sends the messages of each call back to back and then awaits
/// their confirms together: one round trip per call, however many messages it holds.
///
/// Calls that overlap reach the broker in call order: the messages of a call are handed to
/// the connection (all of them) before the next call starts handing over its own; only the
/// waiting for confirms overlaps.
#[derive(Debug)]
pub(crate) struct Publisher {
    conn: AmqpConnection,
    channel: Mutex<Option<Channel>>,
}

enum Pending<F> {
    Sent(lapin::PublisherConfirm),
    Sending(std::pin::Pin<Box<F>>),
}

impl Publisher {
    pub(crate) fn new(conn: AmqpConnection) -> Self {
        Self {
            conn,
            channel: Mutex::new(None),
        }
    }

    pub(crate) fn connection(&self) -> &AmqpConnection {
        &self.conn
    }

    /// The current channel, opened (reconnecting when needed) if there is none or it closed.
    async fn current(&self, slot: &mut Option<Channel>) -> Result<Channel> {
        if let Some(ch) = slot.as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        *slot = None;
        let ch = self.conn.confirm_channel().await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Forgets `ch` when it is still the current channel (it failed).
    async fn discard(&self, ch: &Channel) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|c| c.id() == ch.id()) {
            *slot = None;
        }
    }

    /// Runs `f` on the current channel (declarations before publishing); a failure discards
    /// the channel, since a refused declaration closes it.
    pub(crate) async fn with_channel<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let ch = {
            let mut slot = self.channel.lock().await;
            self.current(&mut slot).await?
        };
        let result = f(ch.clone()).await;
        if result.is_err() {
            self.discard(&ch).await;
        }
        result
    }

    /// Publishes `messages` in order and returns once the broker confirmed every one.
    pub(crate) async fn publish(&self, what: &'static str, messages: &[Outgoing]) -> Result<()> {
        self.publish_after(
            what,
            messages,
            None::<fn(Channel) -> std::future::Ready<Result<()>>>,
        )
        .await
    }

    /// Like [`Publisher::publish`], running `prepare` (a declaration) on the channel first,
    /// in the same ordered section, so that a call that declares cannot be overtaken by a
    /// later call. A failed `prepare` is logged and the channel replaced (the broker closes a
    /// channel whose declaration it refuses); the messages are sent all the same.
    pub(crate) async fn publish_after<P, Fut>(
        &self,
        what: &'static str,
        messages: &[Outgoing],
        prepare: Option<P>,
    ) -> Result<()>
    where
        P: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if messages.is_empty() {
            return Ok(());
        }
        let mut slot = self.channel.lock().await;
        let mut ch = self.current(&mut slot).await?;
        if let Some(prepare) = prepare {
            if let Err(e) = prepare(ch.clone()).await {
                tracing::warn!(error = %e, "declaration before publishing refused");
                *slot = None;
                ch = self.current(&mut slot).await?;
            }
        }
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let mut send = Box::pin(ch.basic_publish(
                m.exchange.clone(),
                m.routing_key.clone(),
                BasicPublishOptions::default(),
                &m.body,
                m.properties.clone(),
            ));
            // The first poll hands the frames to the connection; order is fixed from here.
            match futures::poll!(send.as_mut()) {
                Poll::Ready(Ok(confirm)) => pending.push(Pending::Sent(confirm)),
                Poll::Ready(Err(e)) => {
                    *slot = None;
                    return Err(lapin_err("basic.publish")(e));
                }
                Poll::Pending => pending.push(Pending::Sending(send)),
            }
        }
        drop(slot);
        let mut failure = None;
        for p in pending {
            let confirm = match p {
                Pending::Sent(c) => Ok(c),
                Pending::Sending(send) => send.await,
            };
            let outcome = match confirm {
                Ok(c) => c.await.map_err(lapin_err("publisher confirm")),
                Err(e) => Err(lapin_err("basic.publish")(e)),
            };
            match outcome {
                Ok(Confirmation::Nack(_)) => {
                    failure.get_or_insert_with(|| AmqpError::Nacked { op: what }.into());
                }
                Ok(_) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(e) => {
                self.discard(&ch).await;
                Err(e)
            }
        }
    }
}
