//! Settings of the RabbitMQ adapter: where to connect, which names to declare, which token
//! topology to use.

use std::time::Duration;

/// The URL used when neither `CHATSTREAM_AMQP_URL` nor `RABBITMQ_URL` is set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How token envelopes travel from workers to gateways (see the crate docs' table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TokenTopology {
    /// Each gateway instance owns an exclusive queue (its [`reply_address`]); the worker packs
    /// the envelopes of many streams bound for one gateway into one message per batch, and
    /// the gateway demultiplexes locally. The default: one broker message per batch.
    ///
    /// [`reply_address`]: chatstream_core::TokenSource::reply_address
    #[default]
    ReplyTo,
    /// Envelopes go to the topic exchange ([`AmqpConfig::token_exchange`]) with a routing key
    /// built from the stream key ([`routing_key`](crate::routing_key)); a gateway binds one
    /// exclusive auto-delete queue per stream it follows.
    Topic,
    /// Seed 003: each request's answer goes to its own queue `response_{uid}` (declared with
    /// `x-expires`), bodies are the raw text, the end is marked by the AMQP `type` property.
    PerRequestQueue,
    /// Durable and replayable: the worker packs the envelopes of many streams into one
    /// message per batch, as reply-to does, and appends it to one RabbitMQ stream queue
    /// ([`AmqpConfig::token_stream`], `x-queue-type: stream`) that keeps them for
    /// [`StreamRetention`]. Every gateway instance reads that log from its own offset and
    /// keeps a local index of where each stream starts, so any instance serves any stream
    /// from its start, from `after_seq`, or live, during and after generation, and after a
    /// broker restart. See the crate docs, "The stream topology".
    Stream,
}

/// How long the [`TokenTopology::Stream`] log keeps envelopes, which is how long a finished
/// answer stays resumable. RabbitMQ drops whole segments, oldest first, once they are past
/// `max_age` or the log is past `max_length_bytes`, so a stream may outlive these limits
/// by up to one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRetention {
    /// `x-max-age`: envelopes older than this go (default one hour). Whole seconds.
    pub max_age: Duration,
    /// `x-max-length-bytes`: the log's size cap on disk (default 1 GiB). This caps how far
    /// back a resume can reach under load: at 20,000 tokens/s of ~120-byte envelopes the
    /// log grows by about 2.4 MB/s, so 1 GiB holds about seven minutes.
    pub max_length_bytes: u64,
    /// `x-stream-max-segment-size-bytes`: retention's unit (default 16 MiB; RabbitMQ's own
    /// default, 500 MB, would make the size cap coarse).
    pub max_segment_bytes: u64,
}

impl Default for StreamRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(3600),
            max_length_bytes: 1 << 30,
            max_segment_bytes: 16 << 20,
        }
    }
}

/// The body format of submitted requests ([`AmqpRequestSink`](crate::AmqpRequestSink)).
/// Any of them is understood by [`AmqpRequestSource`](crate::AmqpRequestSource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RequestFormat {
    /// Seed 000's `{"text", "sessionId", "messageId"}` plus optional fields (messages,
    /// model, user, max_tokens, metadata): lossless.
    #[default]
    Canonical,
    /// Seed 003's `{"model", "messages", "stream", "username", "uid"}` (the stream key becomes
    /// `uid/uid`; metadata travels in AMQP properties only).
    Seed003,
    /// Seed 004's `{"channel", "message_id", "message"}` (last user message only).
    Seed004,
}

/// An exchange the request queue is bound to, as seed 004 declares it
/// (`cosmo_exchange` → `cosmo_queue` with routing key `cosmo_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestExchange {
    /// Exchange name.
    pub name: String,
    /// Exchange type: `direct`, `topic`, `fanout`.
    pub kind: String,
    /// Routing key requests are published with and the queue is bound with.
    pub routing_key: String,
}

/// Reconnect backoff: waits `initial`, doubling up to `max`, and gives up (the call fails
/// with a retryable [`Error::Unavailable`](chatstream_core::Error::Unavailable)) once
/// `give_up_after` has passed; the next call tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// How long one call keeps trying.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// Everything the adapter declares and how it behaves. Build with [`AmqpConfig::default`],
/// [`AmqpConfig::from_env`] or a seed preset, then change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpConfig {
    /// Broker URL. A bare trailing `/` (as the seeds' defaults have) means the vhost `/`.
    pub url: String,
    /// Connection name shown by `rabbitmqctl list_connections` (a uuid is appended).
    pub connection_name: String,
    /// Durable request queue (seed 003 `default-queue`).
    pub request_queue: String,
    /// Exchange the request queue is bound to (seed 004); `None`: the default exchange.
    pub request_exchange: Option<RequestExchange>,
    /// Body format of submitted requests.
    pub request_format: RequestFormat,
    /// Declare the request queue as a quorum queue (`x-queue-type=quorum`) with a broker-side
    /// delivery limit, for RabbitMQ clusters.
    pub quorum: bool,
    /// Deliveries of one request at most; a request delivered more often is dead-lettered
    /// ("delivery limit") instead of being handed to a worker again.
    pub max_deliveries: u32,
    /// Unacknowledged requests per consumer: set it to the worker's concurrency.
    pub prefetch: u16,
    /// `x-expires` of the request and dead-letter queues (`None`: they live until deleted;
    /// tests set it so their throw-away queues vanish).
    pub queue_expires: Option<Duration>,
    /// Fanout exchange dead-lettered requests are published to.
    pub dead_letter_exchange: String,
    /// Durable queue bound to the dead-letter exchange.
    pub dead_letter_queue: String,
    /// How envelopes reach gateways.
    pub token_topology: TokenTopology,
    /// Topic exchange of the [`TokenTopology::Topic`] topology.
    pub token_exchange: String,
    /// Stream queue (the log) of the [`TokenTopology::Stream`] topology.
    pub token_stream: String,
    /// Retention of the [`TokenTopology::Stream`] log. Every declarer (workers and gateways)
    /// must use the same values: RabbitMQ refuses a redeclaration with other arguments.
    pub stream_retention: StreamRetention,
    /// Unacknowledged log messages per stream-queue consumer (RabbitMQ needs a prefetch to
    /// consume a stream; acknowledgements are only credit there, nothing is removed).
    pub stream_prefetch: u16,
    /// Fanout exchange cancels are published to.
    pub control_exchange: String,
    /// Prefix of gateway reply queue names (a uuid follows).
    pub reply_queue_prefix: String,
    /// `x-expires` of seed 003 `response_{uid}` queues, so abandoned ones disappear.
    pub response_queue_expires: Duration,
    /// In the topic and per-request topologies, send consecutive envelopes of one stream in
    /// a batch as one message (newline-delimited JSON; concatenated text for seed 003)
    /// instead of one message each.
    pub pack_runs: bool,
    /// Envelopes a subscriber may fall behind before it is cut off with
    /// [`Error::SlowConsumer`](chatstream_core::Error::SlowConsumer).
    pub subscriber_buffer: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            connection_name: "chatstream".to_owned(),
            request_queue: "default-queue".to_owned(),
            request_exchange: None,
            request_format: RequestFormat::Canonical,
            quorum: false,
            max_deliveries: 5,
            prefetch: 64,
            queue_expires: None,
            dead_letter_exchange: "chatstream.dead-letter".to_owned(),
            dead_letter_queue: "chatstream.dead-letter".to_owned(),
            token_topology: TokenTopology::ReplyTo,
            token_exchange: "chatstream.tokens".to_owned(),
            token_stream: "chatstream.tokens.log".to_owned(),
            stream_retention: StreamRetention::default(),
            stream_prefetch: 1000,
            control_exchange: "chatstream.control".to_owned(),
            reply_queue_prefix: "chatstream.gateway.".to_owned(),
            response_queue_expires: Duration::from_secs(600),
            pack_runs: true,
            subscriber_buffer: 4096,
            backoff: Backoff::default(),
        }
    }
}

impl AmqpConfig {
    /// Defaults, with the URL from `CHATSTREAM_AMQP_URL` or `RABBITMQ_URL`, the request
    /// queue from `RABBITMQ_QUEUE`, and the stream topology's log and retention from
    /// `RABBITMQ_TOKEN_STREAM`, `RABBITMQ_STREAM_MAX_AGE` (seconds) and
    /// `RABBITMQ_STREAM_MAX_BYTES` when set. A retention value that is not a number is
    /// ignored with a warning.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        if let Some(url) = env("CHATSTREAM_AMQP_URL").or_else(|| env("RABBITMQ_URL")) {
            config.url = url;
        }
        if let Some(queue) = env("RABBITMQ_QUEUE") {
            config.request_queue = queue;
        }
        if let Some(stream) = env("RABBITMQ_TOKEN_STREAM") {
            config.token_stream = stream;
        }
        if let Some(secs) = number("RABBITMQ_STREAM_MAX_AGE") {
            config.stream_retention.max_age = Duration::from_secs(secs.max(1));
        }
        if let Some(bytes) = number("RABBITMQ_STREAM_MAX_BYTES") {
            config.stream_retention.max_length_bytes = bytes;
        }
        config
    }

    /// Seed 003's deployment: queue `default-queue` (or `RABBITMQ_QUEUE`), seed 003 request
    /// bodies, answers in `response_{uid}` queues.
    pub fn seed003() -> Self {
        Self {
            request_format: RequestFormat::Seed003,
            token_topology: TokenTopology::PerRequestQueue,
            ..Self::from_env()
        }
    }

    /// Seed 004's request side: exchange `EXCHANGE_NAME` (default `cosmo_exchange`, direct)
    /// bound to queue `QUEUE_NAME` (`cosmo_queue`) with `ROUTING_KEY` (`cosmo_key`), seed 004
    /// request bodies.
    pub fn seed004() -> Self {
        let or = |name: &str, default: &str| env(name).unwrap_or_else(|| default.to_owned());
        Self {
            request_queue: or("QUEUE_NAME", "cosmo_queue"),
            request_exchange: Some(RequestExchange {
                name: or("EXCHANGE_NAME", "cosmo_exchange"),
                kind: "direct".to_owned(),
                routing_key: or("ROUTING_KEY", "cosmo_key"),
            }),
            request_format: RequestFormat::Seed004,
            ..Self::from_env()
        }
    }

    /// The URL as lapin reads it: a bare trailing `/` becomes `/%2f` (the vhost `/`), as
    /// pika and Go's amqp client read the seeds' `amqp://guest:guest@localhost:5672/`.
    pub fn normalized_url(&self) -> String {
        normalize_url(&self.url)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str) -> Option<u64> {
    let v = env(name)?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::warn!(variable = name, value = %v, "not a whole number; ignored");
            None
        }
    }
}

fn normalize_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let (path_and_query, authority_len) = match rest.find('/') {
        Some(i) => (&rest[i..], i),
        None => return url.to_owned(),
    };
    let (path, query) = match path_and_query.find('?') {
        Some(q) => path_and_query.split_at(q),
        None => (path_and_query, ""),
    };
    if path == "/" {
        format!(
            "{}{}/%2f{query}",
            &url[..scheme_end + 3],
            &rest[..authority_len]
        )
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_trailing_slash_means_the_default_vhost() {
        assert_eq!(
            normalize_url("amqp://guest:guest@localhost:5672/"),
            "amqp://guest:guest@localhost:5672/%2f"
        );
        assert_eq!(
            normalize_url("amqp://h:5672/?heartbeat=10"),
            "amqp://h:5672/%2f?heartbeat=10"
        );
        assert_eq!(normalize_url(DEFAULT_URL), DEFAULT_URL);
        assert_eq!(normalize_url("amqp://h:5672/prod"), "amqp://h:5672/prod");
        assert_eq!(normalize_url("amqp://h:5672"), "amqp://h:5672");
    }

    #[test]
    fn seed_presets_use_the_seeds_names() {
        let s3 = AmqpConfig::seed003();
        assert_eq!(s3.token_topology, TokenTopology::PerRequestQueue);
        assert_eq!(s3.request_format, RequestFormat::Seed003);
        let s4 = AmqpConfig::seed004();
        if std::env::var("QUEUE_NAME").is_err() {
            assert_eq!(s4.request_queue, "cosmo_queue");
        }
        assert!(s4.request_exchange.is_some());
    }
}
