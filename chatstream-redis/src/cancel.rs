//! [`RedisCancelChannel`]: cancels over Redis pub/sub.

use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{CancelChannel, Error, Result, StreamKey};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::from_redis;
use crate::RedisClient;

/// Cancels as `PUBLISH Pcancel {"sessionId": …, "messageId": …}`; every listener gets
/// every cancel. Listeners reconnect by themselves (cancels published while a listener is
/// disconnected are missed: pub/sub keeps nothing).
#[derive(Debug, Clone)]
pub struct RedisCancelChannel {
    client: RedisClient,
    channel: String,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(rename = "sessionId", borrow)]
    session_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "messageId", borrow)]
    message_id: std::borrow::Cow<'a, str>,
}

/// Buffered cancels per listener before the oldest are dropped.
const BUFFER: usize = 1024;

impl RedisCancelChannel {
    /// The cancel channel of `client`'s prefix.
    pub fn new(client: RedisClient) -> Self {
        let channel = client.keys().cancel_channel();
        Self { client, channel }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub> {
        let mut pubsub = self
            .client
            .redis()
            .get_async_pubsub()
            .await
            .map_err(from_redis)?;
        pubsub.subscribe(&self.channel).await.map_err(from_redis)?;
        Ok(pubsub)
    }
}

fn decode(payload: &[u8]) -> Option<StreamKey> {
    let w: Wire<'_> = serde_json::from_slice(payload).ok()?;
    Some(StreamKey::new(w.session_id.as_ref(), w.message_id.as_ref()))
}

#[async_trait]
impl CancelChannel for RedisCancelChannel {
    async fn cancel(&self, key: &StreamKey) -> Result<()> {
        let payload = serde_json::to_string(&Wire {
            session_id: (&*key.session_id).into(),
            message_id: (&*key.message_id).into(),
        })
        .map_err(|e| Error::invalid("cancel", e))?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async::<i64>(&mut self.client.connection())
            .await
            .map(drop)
            .map_err(from_redis)
    }

    /// Subscribed when this returns, so a cancel published afterwards is seen.
    async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>> {
        let first = self.subscribe().await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let me = self.clone();
        tokio::spawn(async move {
            let mut pubsub = Some(first);
            let mut backoff = Duration::from_millis(100);
            loop {
                let ps = match pubsub.take() {
                    Some(ps) => ps,
                    None => match me.subscribe().await {
                        Ok(ps) => {
                            backoff = Duration::from_millis(100);
                            ps
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cancel channel: reconnecting");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = tx.closed() => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    },
                };
                let mut messages = ps.into_on_message();
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => {
                                let Some(key) = decode(msg.get_payload_bytes()) else {
                                    tracing::debug!("cancel channel: ignored a malformed message");
                                    continue;
                                };
                                if tx.try_send(key).is_err() && tx.is_closed() {
                                    return;
                                }
                            }
                            None => break, // connection lost: resubscribe
                        },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_messages_round_trip() {
        let w = Wire {
            session_id: "s:1".into(),
            message_id: "m\"2".into(),
        };
        let json = serde_json::to_vec(&w).expect("serializes");
        assert_eq!(decode(&json), Some(StreamKey::new("s:1", "m\"2")));
        assert_eq!(decode(b"nope"), None);
    }
}
