//! Envelopes out, in the configured topology.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chatstream_core::{
    meta, ChatRequest, Destination, Result, StreamKey, TokenEnvelope, TokenSink,
};
use lapin::types::AMQPValue;
use lapin::BasicProperties;

use crate::codec::{
    self, CONTENT_JSON, CONTENT_NDJSON, HEADER_ATTEMPT, HEADER_FINISH, HEADER_USAGE,
};
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, short};
use crate::{routing, AmqpConnection, TokenTopology};

const REPLY: &str = "reply:";
const QUEUE: &str = "queue:";
const TOPIC: &str = "topic";
/// A stream queue (the stream topology's log): `stream:<queue>`. Also what a gateway on the
/// stream topology puts in `reply_to`, so that workers of other topologies (seed 003's
/// per-request queues) answer it in its log.
pub(crate) const STREAM: &str = "stream:";

/// Response queues remembered as declared before the set is cleared (and re-declared).
const DECLARED_CAP: usize = 100_000;

/// Publishes envelopes (a [`TokenSink`]) with publisher confirms. Each call sends all its
/// messages back to back and then awaits their confirms together; overlapping calls reach
/// the broker in call order.
///
/// | topology | destination | broker messages per batch |
/// |---|---|---|
/// | reply-to | the gateway queue in `metadata["reply_to"]` (no reply-to: the topic exchange) | one, newline-delimited canonical envelopes of any streams |
/// | topic | the topic exchange, routing key per stream | one per stream in the batch ([`pack_runs`](crate::AmqpConfig::pack_runs)), else one per envelope |
/// | per-request queue | `response_{uid}` (declared with `x-expires` before the first publish); but a request whose `reply_to` names a gateway queue ([`reply_queue_prefix`](crate::AmqpConfig::reply_queue_prefix)) is answered there, as in reply-to | one per run of tokens plus one for an error and one for the end ([`pack_runs`](crate::AmqpConfig::pack_runs)), else one per envelope; statuses are not sent |
///
/// Envelopes for a gateway queue or a stream nobody is bound to are dropped by the broker
/// (these topologies are live); the publish still succeeds.
#[derive(Debug)]
pub struct AmqpTokenSink {
    publisher: Publisher,
    declared: Mutex<HashSet<String>>,
}

impl AmqpTokenSink {
    /// Declares the token exchange (used by the topic topology, and by the reply-to
    /// topology for requests that name no gateway), and on the stream topology the token
    /// stream.
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let publisher = Publisher::new(conn.clone());
        let config = conn.config().clone();
        publisher
            .with_channel(|ch| async move {
                topology::declare_token_exchange(&ch, &config).await?;
                if config.token_topology == TokenTopology::Stream {
                    topology::declare_token_stream(&ch, &config).await?;
                }
                Ok(())
            })
            .await?;
        Ok(Self {
            publisher,
            declared: Mutex::new(HashSet::new()),
        })
    }

    fn topic_messages(&self, batch: &[TokenEnvelope]) -> Result<Vec<Outgoing>> {
        let config = self.publisher.connection().config();
        let exchange = short(&config.token_exchange)?;
        let message = |key: &StreamKey, body: Vec<u8>, content_type: &str| -> Result<Outgoing> {
            Ok(Outgoing {
                exchange: exchange.clone(),
                routing_key: short(&routing::routing_key(key)?)?,
                body,
                properties: BasicProperties::default().with_content_type(content_type.into()),
            })
        };
        if !config.pack_runs {
            return batch
                .iter()
                .map(|env| {
                    let mut body = codec::encode_ndjson([env]);
                    body.pop();
                    message(&env.key, body, CONTENT_JSON)
                })
                .collect();
        }
        let mut order: Vec<&StreamKey> = Vec::new();
        let mut runs: HashMap<&StreamKey, Vec<&TokenEnvelope>> = HashMap::new();
        for env in batch {
            runs.entry(&env.key)
                .or_insert_with(|| {
                    order.push(&env.key);
                    Vec::new()
                })
                .push(env);
        }
        order
            .into_iter()
            .map(|key| {
                let envs = runs.remove(key).unwrap_or_default();
                message(key, codec::encode_ndjson(envs), CONTENT_NDJSON)
            })
            .collect()
    }

    fn is_declared(&self, queue: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(queue)
    }

    fn mark_declared(&self, queue: &str) {
        let mut set = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= DECLARED_CAP {
            set.clear();
        }
        set.insert(queue.to_owned());
    }

    fn unmark_declared(&self, queue: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
    }

    /// One message for the whole batch, appended to the log `stream` (declared before the
    /// first append, in the publisher's ordered section).
    async fn publish_to_stream(&self, stream: &str, batch: &[TokenEnvelope]) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let messages = [Outgoing {
            exchange: "".into(),
            routing_key: short(stream)?,
            body: codec::encode_ndjson(batch),
            properties: BasicProperties::default()
                .with_content_type(CONTENT_NDJSON.into())
                .with_timestamp(now),
        }];
        let key = format!("{STREAM}{stream}");
        if self.is_declared(&key) {
            return self.publisher.publish("token envelopes", &messages).await;
        }
        self.mark_declared(&key);
        let mut config = self.publisher.connection().config().clone();
        config.token_stream = stream.to_owned();
        let declare =
            |ch: lapin::Channel| async move { topology::declare_token_stream(&ch, &config).await };
        let published = self
            .publisher
            .publish_after("token envelopes", &messages, Some(declare))
            .await;
        if published.is_err() {
            self.unmark_declared(&key);
        }
        published
    }

    fn queue_messages(&self, queue: &str, batch: &[TokenEnvelope]) -> Result<Vec<Outgoing>> {
        let pack = self.publisher.connection().config().pack_runs;
        let routing_key = short(queue)?;
        Ok(codec::seed003_messages(batch, pack)
            .into_iter()
            .map(|m| {
                let mut headers =
                    codec::table([(HEADER_ATTEMPT, AMQPValue::LongLongInt(m.attempt.into()))]);
                if let Some(usage) = &m.usage {
                    if let Ok(json) = serde_json::to_string(usage) {
                        headers.insert(HEADER_USAGE.into(), codec::text(&json));
                    }
                }
                if let Some(finish) = &m.finish {
                    headers.insert(HEADER_FINISH.into(), codec::text(finish.as_str()));
                }
                let msg = m.msg;
                Outgoing {
                    exchange: "".into(),
                    routing_key: routing_key.clone(),
                    body: msg.body,
                    properties: BasicProperties::default()
                        .with_content_type(msg.content_type.into())
                        .with_type(msg.kind.as_str().into())
                        .with_headers(headers),
                }
            })
            .collect())
    }
}

#[async_trait]
impl TokenSink for AmqpTokenSink {
    fn destination(&self, request: &ChatRequest) -> Destination {
        let config = self.publisher.connection().config();
        if let Some(stream) = request
            .metadata
            .get(meta::REPLY_TO)
            .and_then(|q| q.strip_prefix(STREAM))
            .filter(|q| !q.is_empty())
        {
            // A gateway on the stream topology asked for its log, whatever ours is.
            return Destination(format!("{STREAM}{stream}").into());
        }
        let name = match config.token_topology {
            TokenTopology::Stream => format!("{STREAM}{}", config.token_stream),
            TokenTopology::ReplyTo => match request.metadata.get(meta::REPLY_TO) {
                Some(q) if !q.is_empty() => format!("{REPLY}{q}"),
                _ => TOPIC.to_owned(),
            },
            TokenTopology::PerRequestQueue => match request.metadata.get(meta::REPLY_TO) {
                // Submitted by a gateway on the reply-to topology: its queue, one message
                // per batch. Other `reply_to` values are a client's own business.
                Some(q)
                    if !config.reply_queue_prefix.is_empty()
                        && q.starts_with(&config.reply_queue_prefix) =>
                {
                    format!("{REPLY}{q}")
                }
                _ => match routing::response_queue(&request.key) {
                    Ok(q) => format!("{QUEUE}{q}"),
                    Err(_) => TOPIC.to_owned(),
                },
            },
            TokenTopology::Topic => TOPIC.to_owned(),
        };
        Destination(name.into())
    }

    async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let dest: &str = &destination.0;
        if let Some(queue) = dest.strip_prefix(QUEUE) {
            let messages = self.queue_messages(queue, batch)?;
            if messages.is_empty() {
                return Ok(()); // statuses only: nothing for seed 003 queues
            }
            if self.is_declared(queue) {
                return self.publisher.publish("token envelopes", &messages).await;
            }
            // Declared in the publisher's ordered section, so a later batch of this stream
            // cannot overtake this one while the declaration is under way. Marked before
            // that section is entered (no await in between), so the batches already in
            // flight behind this one do not declare again: they enter the section after it.
            self.mark_declared(queue);
            let config = self.publisher.connection().config().clone();
            let declare = |ch: lapin::Channel| async move {
                topology::declare_response_queue(&ch, &config, queue).await
            };
            let published = self
                .publisher
                .publish_after("token envelopes", &messages, Some(declare))
                .await;
            if published.is_err() {
                self.unmark_declared(queue);
            }
            return published;
        }
        if let Some(stream) = dest.strip_prefix(STREAM) {
            return self.publish_to_stream(stream, batch).await;
        }
        let messages = if let Some(queue) = dest.strip_prefix(REPLY) {
            vec![Outgoing {
                exchange: "".into(),
                routing_key: short(queue)?,
                body: codec::encode_ndjson(batch),
                properties: BasicProperties::default().with_content_type(CONTENT_NDJSON.into()),
            }]
        } else {
            self.topic_messages(batch)?
        };
        self.publisher.publish("token envelopes", &messages).await
    }
}
