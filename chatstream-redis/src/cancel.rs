//! Broadcasts of stream keys over Redis pub/sub: [`RedisCancelChannel`] (cancels) and
//! [`RedisSessionFeed`] (news of started streams).

use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::{CancelChannel, Error, Result, SessionFeed, StreamKey};
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
    keys: KeyBroadcast,
}

impl RedisCancelChannel {
    /// The cancel channel of `client`'s prefix.
    pub fn new(client: RedisClient) -> Self {
        let channel = client.keys().cancel_channel();
        Self {
            keys: KeyBroadcast::new(client, channel, "cancel channel"),
        }
    }
}

#[async_trait]
impl CancelChannel for RedisCancelChannel {
    async fn cancel(&self, key: &StreamKey) -> Result<()> {
        self.keys.publish(key).await
    }

    /// Subscribed when this returns, so a cancel published afterwards is seen.
    async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>> {
        self.keys.subscribe().await
    }
}

/// News of started streams as `PUBLISH Pstreams {"sessionId": …, "messageId": …}`, for
/// gateways whose WebSocket clients follow whole sessions (seed 004's channels) while the
/// workers run in other processes. Every gateway gets every announcement and keeps those of
/// the sessions it serves; one announcement per request, so the traffic is small. Listeners
/// reconnect by themselves; pub/sub keeps nothing, so news published while a listener is
/// away is missed.
#[derive(Debug, Clone)]
pub struct RedisSessionFeed {
    keys: KeyBroadcast,
}

impl RedisSessionFeed {
    /// The feed of `client`'s prefix.
    pub fn new(client: RedisClient) -> Self {
        let channel = client.keys().streams_channel();
        Self {
            keys: KeyBroadcast::new(client, channel, "session feed"),
        }
    }
}

#[async_trait]
impl SessionFeed for RedisSessionFeed {
    async fn announce(&self, key: &StreamKey) -> Result<()> {
        self.keys.publish(key).await
    }

    /// Subscribed when this returns, so news published afterwards is seen.
    async fn announcements(&self) -> Result<BoxStream<'static, StreamKey>> {
        self.keys.subscribe().await
    }
}

/// Stream keys broadcast on one pub/sub channel, as `{"sessionId", "messageId"}` JSON.
#[derive(Debug, Clone)]
struct KeyBroadcast {
    client: RedisClient,
    channel: String,
    /// What it is, for the logs.
    what: &'static str,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(rename = "sessionId", borrow)]
    session_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "messageId", borrow)]
    message_id: std::borrow::Cow<'a, str>,
}

/// Buffered keys per listener before the oldest are dropped.
const BUFFER: usize = 1024;

fn decode(payload: &[u8]) -> Option<StreamKey> {
    let w: Wire<'_> = serde_json::from_slice(payload).ok()?;
    Some(StreamKey::new(w.session_id.as_ref(), w.message_id.as_ref()))
}

impl KeyBroadcast {
    fn new(client: RedisClient, channel: String, what: &'static str) -> Self {
        Self {
            client,
            channel,
            what,
        }
    }

    async fn publish(&self, key: &StreamKey) -> Result<()> {
        let payload = serde_json::to_string(&Wire {
            session_id: (&*key.session_id).into(),
            message_id: (&*key.message_id).into(),
        })
        .map_err(|e| Error::invalid(self.what, e))?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async::<i64>(&mut self.client.shared())
            .await
            .map(drop)
            .map_err(from_redis)
    }

    async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        let mut pubsub = self.client.pubsub().await.map_err(from_redis)?;
        pubsub.subscribe(&self.channel).await.map_err(from_redis)?;
        Ok(pubsub)
    }

    /// The keys published from now on (subscribed when this returns), resubscribing after
    /// a lost connection, until the stream is dropped.
    async fn subscribe(&self) -> Result<BoxStream<'static, StreamKey>> {
        let first = self.pubsub().await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let me = self.clone();
        tokio::spawn(async move {
            let mut pubsub = Some(first);
            let mut backoff = Duration::from_millis(100);
            loop {
                let ps = match pubsub.take() {
                    Some(ps) => ps,
                    None => match me.pubsub().await {
                        Ok(ps) => {
                            backoff = Duration::from_millis(100);
                            ps
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "{}: reconnecting", me.what);
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = tx.closed() => return,
                            }
                            // At most a second: cancels published before the listener is
                            // back are missed.
                            backoff = (backoff * 2).min(Duration::from_secs(1));
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
                                    tracing::debug!("{}: ignored a malformed message", me.what);
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
