//! What the adapter declares on the broker. Every declaration is idempotent, so each
//! component declares what it uses when it starts and again after a reconnect.

use chatstream_core::Result;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::codec::table;
use crate::error::{lapin_err, AmqpError};
use crate::AmqpConfig;

/// A checked AMQP short string (queue, exchange, routing key): never panics on long input.
pub(crate) fn short(name: &str) -> Result<ShortString> {
    ShortString::try_new(name)
        .map_err(|_| AmqpError::invalid_name(name, "longer than 255 bytes").into())
}

fn millis(d: std::time::Duration) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(short(name)?, kind, options, FieldTable::default())
        .await
        .map_err(lapin_err("exchange.declare"))
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// The request queue's arguments: none for a plain classic queue (so the declaration
/// matches one made by the seeds' own workers), quorum type + delivery limit + dead-letter
/// exchange for quorum queues, `x-expires` when configured.
pub(crate) fn request_queue_args(config: &AmqpConfig) -> FieldTable {
    let mut args = Vec::new();
    if config.quorum {
        args.push((
            "x-queue-type",
            AMQPValue::LongString(LongString::from("quorum")),
        ));
        args.push((
            "x-delivery-limit",
            AMQPValue::LongLongInt(i64::from(config.max_deliveries)),
        ));
        args.push((
            "x-dead-letter-exchange",
            AMQPValue::LongString(LongString::from(config.dead_letter_exchange.as_str())),
        ));
    }
    if let Some(expires) = config.queue_expires {
        args.push(("x-expires", millis(expires)));
    }
    table(args)
}

/// Request queue (+ seed 004 exchange and binding) and the dead-letter exchange and queue.
pub(crate) async fn declare_requests(ch: &Channel, config: &AmqpConfig) -> Result<()> {
    exchange(ch, &config.dead_letter_exchange, ExchangeKind::Fanout).await?;
    let mut dlq_args = Vec::new();
    if let Some(expires) = config.queue_expires {
        dlq_args.push(("x-expires", millis(expires)));
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(short(&config.dead_letter_queue)?, durable, table(dlq_args))
        .await
        .map_err(lapin_err("queue.declare (dead letters)"))?;
    ch.queue_bind(
        short(&config.dead_letter_queue)?,
        short(&config.dead_letter_exchange)?,
        ShortString::from(""),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err("queue.bind (dead letters)"))?;
    ch.queue_declare(
        short(&config.request_queue)?,
        durable,
        request_queue_args(config),
    )
    .await
    .map_err(lapin_err("queue.declare (requests)"))?;
    if let Some(ex) = &config.request_exchange {
        exchange(ch, &ex.name, exchange_kind(&ex.kind)).await?;
        ch.queue_bind(
            short(&config.request_queue)?,
            short(&ex.name)?,
            short(&ex.routing_key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err("queue.bind (requests)"))?;
    }
    Ok(())
}

/// The topic exchange of the topic topology.
pub(crate) async fn declare_token_exchange(ch: &Channel, config: &AmqpConfig) -> Result<()> {
    exchange(ch, &config.token_exchange, ExchangeKind::Topic).await
}

/// The stream queue (log) of the stream topology: durable, `x-queue-type: stream`, with
/// the configured retention.
pub(crate) async fn declare_token_stream(ch: &Channel, config: &AmqpConfig) -> Result<()> {
    ch.queue_declare(
        short(&config.token_stream)?,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        stream_args(config),
    )
    .await
    .map_err(lapin_err("queue.declare (token stream)"))?;
    Ok(())
}

/// The arguments of the token stream: type and retention.
pub(crate) fn stream_args(config: &AmqpConfig) -> FieldTable {
    let r = config.stream_retention;
    let long = |n: u64| AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX));
    table([
        (
            "x-queue-type",
            AMQPValue::LongString(LongString::from("stream")),
        ),
        (
            "x-max-age",
            AMQPValue::LongString(LongString::from(format!("{}s", r.max_age.as_secs().max(1)))),
        ),
        ("x-max-length-bytes", long(r.max_length_bytes)),
        ("x-stream-max-segment-size-bytes", long(r.max_segment_bytes)),
    ])
}

/// The fanout exchange of the cancel channel.
pub(crate) async fn declare_control_exchange(ch: &Channel, config: &AmqpConfig) -> Result<()> {
    exchange(ch, &config.control_exchange, ExchangeKind::Fanout).await
}

/// A seed 003 `response_{uid}` queue: non-durable, shared, vanishing after
/// [`AmqpConfig::response_queue_expires`] unused.
pub(crate) async fn declare_response_queue(
    ch: &Channel,
    config: &AmqpConfig,
    name: &str,
) -> Result<()> {
    let args = table([("x-expires", millis(config.response_queue_expires))]);
    ch.queue_declare(short(name)?, QueueDeclareOptions::default(), args)
        .await
        .map_err(lapin_err("queue.declare (response queue)"))?;
    Ok(())
}

/// An exclusive, auto-deleted queue (`name` empty: the server names it); returns its name.
pub(crate) async fn declare_private_queue(ch: &Channel, name: &str) -> Result<ShortString> {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(short(name)?, options, FieldTable::default())
        .await
        .map_err(lapin_err("queue.declare (private)"))?;
    Ok(q.name().clone())
}
