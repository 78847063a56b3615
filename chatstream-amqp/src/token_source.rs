//! Envelopes in, for gateways, in the configured topology.

use async_trait::async_trait;
use chatstream_core::{
    EnvelopeStream, Error, Result, StreamKey, StreamStatus, TokenEnvelope, TokenSource,
};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::sync::Arc;
use tokio::task::AbortHandle;

use crate::codec::{self, HEADER_ATTEMPT};
use crate::demux::{end_after_end, Demux};
use crate::error::lapin_err;
use crate::stream_log::StreamLog;
use crate::token_sink::STREAM;
use crate::topology::{self, short};
use crate::{routing, AmqpConnection, TokenTopology};

const NO_REPLAY: &str = "replay: RabbitMQ queues and exchanges keep no history of a stream \
     (subscribe with after_seq = None, or use a store that keeps it)";

/// Reads envelopes for a gateway (a [`TokenSource`]).
///
/// - **reply-to**: one exclusive auto-delete queue per instance, named
///   [`reply_address`](TokenSource::reply_address); one consumer demultiplexes to the
///   subscribers of each stream (any number per stream). After a reconnect the queue is
///   declared again under the same name; subscribers of streams in flight get an
///   [`Error::Unavailable`], since envelopes published meanwhile are gone.
/// - **topic**: one exclusive auto-delete queue per subscription, bound with the stream's
///   escaped routing key.
/// - **per-request queue**: consumes `response_{uid}` (declared if missing) as its
///   exclusive consumer: a second subscription of the same stream, here or on another
///   instance, fails with a clear [`Error::Unavailable`] instead of sharing the queue's
///   messages round-robin (each reader would get every other token as if it were the
///   whole answer). A gateway's hub keeps one subscription per stream.
/// - **stream**: one consumer per instance tails the token stream (a RabbitMQ stream
///   queue) and indexes where each stream starts; a subscription replays from the log and
///   then follows live, from the start or after `after_seq`, during and after generation.
///
/// Envelopes without a `seq` (seed 000 producers, seed 003 bodies) are numbered by arrival
/// (seed 003: `seq_base(attempt)` + arrival within the attempt). Only the stream topology
/// keeps history; on the others `subscribe(key, Some(n))` fails with
/// [`Error::Unsupported`].
#[derive(Debug)]
pub struct AmqpTokenSource {
    conn: AmqpConnection,
    reply: Option<ReplyConsumer>,
    log: Option<StreamLog>,
}

#[derive(Debug)]
struct ReplyConsumer {
    queue: String,
    demux: Arc<Demux>,
    task: AbortHandle,
}

impl Drop for ReplyConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AmqpTokenSource {
    /// Prepares the configured topology: for reply-to, declares this instance's queue and
    /// starts its consumer, so [`reply_address`](TokenSource::reply_address) is live.
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let config = conn.config();
        let log = match config.token_topology {
            TokenTopology::Stream => Some(StreamLog::start(conn).await?),
            _ => None,
        };
        let reply = match config.token_topology {
            TokenTopology::ReplyTo => {
                let queue = format!(
                    "{}{}",
                    config.reply_queue_prefix,
                    uuid::Uuid::new_v4().simple()
                );
                let demux = Demux::new(config.subscriber_buffer);
                let first = consume_reply_queue(conn, &queue).await?;
                let task =
                    tokio::spawn(run_reply(conn.clone(), queue.clone(), demux.clone(), first));
                Some(ReplyConsumer {
                    queue,
                    demux,
                    task: task.abort_handle(),
                })
            }
            TokenTopology::Topic => {
                let ch = conn.channel().await?;
                topology::declare_token_exchange(&ch, config).await?;
                None
            }
            TokenTopology::PerRequestQueue | TokenTopology::Stream => None,
        };
        Ok(Self {
            conn: conn.clone(),
            reply,
            log,
        })
    }

    async fn subscribe_topic(&self, key: &StreamKey) -> Result<EnvelopeStream> {
        let config = self.conn.config();
        let routing_key = short(&routing::routing_key(key)?)?;
        let ch = self.conn.channel().await?;
        let queue = topology::declare_private_queue(&ch, "").await?;
        ch.queue_bind(
            queue.clone(),
            short(&config.token_exchange)?,
            routing_key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err("queue.bind (stream)"))?;
        let consumer = consume(&ch, &queue).await?;
        let key = key.clone();
        let mut next_seq = 0u64;
        Ok(envelopes(ch, consumer, move |d| {
            codec::decode_envelopes(&d.data)
                .into_iter()
                .filter_map(|r| match r {
                    Ok(dec) if dec.key == key => {
                        let env = dec.into_envelope(next_seq);
                        next_seq = env.seq + 1;
                        Some(env)
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an undecodable token message");
                        None
                    }
                })
                .collect()
        }))
    }

    async fn subscribe_queue(&self, key: &StreamKey) -> Result<EnvelopeStream> {
        let name = routing::response_queue(key)?;
        let ch = self.conn.channel().await?;
        topology::declare_response_queue(&ch, self.conn.config(), &name).await?;
        // Exclusive: two consumers of one queue would each get every other message, and
        // each would hand its client a garbled answer as if it were whole.
        let options = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..Default::default()
        };
        let consumer = match ch
            .basic_consume(short(&name)?, "".into(), options, FieldTable::default())
            .await
        {
            Ok(c) => c,
            Err(e) if e.to_string().contains("ACCESS_REFUSED") => {
                return Err(Error::unavailable(
                    "RabbitMQ",
                    format!(
                        "{name} is already read by another consumer (another gateway \
                         instance?): a per-request queue hands each message to one reader, so \
                         this stream can be read in one place only; the stream topology \
                         serves it on every instance"
                    ),
                ))
            }
            Err(e) => return Err(lapin_err("basic.consume")(e)),
        };
        let key = key.clone();
        let (mut attempt, mut n) = (0u32, 0u64);
        Ok(envelopes(ch, consumer, move |d| {
            let headers = d.properties.headers().as_ref();
            let this = codec::header_u64(headers, HEADER_ATTEMPT)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(1)
                .max(1);
            let kind = d.properties.kind().as_ref().map(|k| k.as_str());
            match codec::decode_seed003(kind, headers, &d.data) {
                Ok(event) => {
                    if this != attempt {
                        (attempt, n) = (this, 0);
                    }
                    let seq = TokenEnvelope::seq_base(attempt) + n;
                    n += 1;
                    vec![TokenEnvelope::new(key.clone(), attempt, seq, event)]
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an undecodable response message");
                    Vec::new()
                }
            }
        }))
    }
}

#[async_trait]
impl TokenSource for AmqpTokenSource {
    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        if let Some(log) = &self.log {
            return log.subscribe(key, after_seq).await;
        }
        if after_seq.is_some() {
            return Err(Error::Unsupported(NO_REPLAY));
        }
        match (&self.reply, self.conn.config().token_topology) {
            (Some(reply), _) => Ok(reply.demux.subscribe(key)),
            (None, TokenTopology::PerRequestQueue) => self.subscribe_queue(key).await,
            (None, _) => self.subscribe_topic(key).await,
        }
    }

    fn reply_address(&self) -> Option<String> {
        if self.log.is_some() {
            // Workers of any topology answer a request naming a log in that log.
            return Some(format!("{STREAM}{}", self.conn.config().token_stream));
        }
        self.reply.as_ref().map(|r| r.queue.clone())
    }

    async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        match &self.log {
            Some(log) => log.status(key).await,
            None => Ok(StreamStatus::Untracked),
        }
    }
}

async fn consume(ch: &Channel, queue: &lapin::types::ShortString) -> Result<Consumer> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    ch.basic_consume(queue.clone(), "".into(), options, FieldTable::default())
        .await
        .map_err(lapin_err("basic.consume"))
}

/// The envelopes of a consumer's messages, decoded by `decode`; ends after `End`, with an
/// error when the consumer fails or is cancelled before it. Keeps the channel open.
fn envelopes<F>(ch: Channel, consumer: Consumer, mut decode: F) -> EnvelopeStream
where
    F: FnMut(&lapin::message::Delivery) -> Vec<TokenEnvelope> + Send + 'static,
{
    let stream = consumer
        .map(move |item| {
            let _keep_open = &ch;
            match item {
                Ok(d) => decode(&d).into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(lapin_err("consume")(e))],
            }
        })
        .flat_map(futures::stream::iter)
        .chain(futures::stream::once(async {
            Err(Error::unavailable(
                "RabbitMQ",
                "the subscription was cancelled before the stream ended",
            ))
        }));
    end_after_end(stream.boxed())
}

async fn consume_reply_queue(conn: &AmqpConnection, queue: &str) -> Result<(Channel, Consumer)> {
    let ch = conn.channel().await?;
    let name = topology::declare_private_queue(&ch, queue).await?;
    let consumer = consume(&ch, &name).await?;
    Ok((ch, consumer))
}

/// The reply queue's consumer: routes every envelope to its subscribers; after a failure
/// fails the subscribers in flight and consumes again under the same queue name.
async fn run_reply(
    conn: AmqpConnection,
    queue: String,
    demux: Arc<Demux>,
    first: (Channel, Consumer),
) {
    let (mut _ch, mut consumer) = first;
    loop {
        while let Some(item) = consumer.next().await {
            match item {
                Ok(d) => {
                    for dec in codec::decode_envelopes(&d.data) {
                        match dec {
                            Ok(dec) => {
                                let seq = dec.seq;
                                demux.route(&dec.into_envelope(0), seq);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping an undecodable envelope")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue, "reply queue consumer failed");
                    break;
                }
            }
        }
        demux.fail_all("the connection to RabbitMQ was lost; envelopes may be missing");
        loop {
            conn.pause().await;
            match consume_reply_queue(&conn, &queue).await {
                Ok((ch, c)) => {
                    (_ch, consumer) = (ch, c);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, queue, "reply queue not back yet"),
            }
        }
    }
}
