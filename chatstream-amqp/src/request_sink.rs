//! Requests out: persistent, confirmed publishes to the request queue.

use async_trait::async_trait;
use chatstream_core::{meta, ChatRequest, RequestSink, Result};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::codec::{self, CONTENT_JSON};
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, short};
use crate::{AmqpConnection, RequestFormat};

/// Submits requests to the request queue (a [`RequestSink`]): persistent messages, publisher
/// confirms, body in [`AmqpConfig::request_format`](crate::AmqpConfig::request_format), and
/// `metadata["reply_to"]` also in the AMQP `reply_to` property (so dialects without room for
/// metadata keep it). Published to the seed 004 exchange when one is configured. The
/// submit time goes in the `timestamp` property and, in milliseconds, in the
/// `timestamp_in_ms` header, for the worker's queue wait metric; the W3C trace context
/// (`metadata["traceparent"]`, `["tracestate"]`) also in headers of those names.
#[derive(Debug)]
pub struct AmqpRequestSink {
    publisher: Publisher,
}

impl AmqpRequestSink {
    /// Declares the request topology (so nothing submitted before a worker starts is lost).
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let publisher = Publisher::new(conn.clone());
        let config = conn.config().clone();
        publisher
            .with_channel(|ch| async move { topology::declare_requests(&ch, &config).await })
            .await?;
        Ok(Self { publisher })
    }

    fn route(&self) -> Result<(lapin::types::ShortString, lapin::types::ShortString)> {
        let config = self.publisher.connection().config();
        match &config.request_exchange {
            Some(ex) => Ok((short(&ex.name)?, short(&ex.routing_key)?)),
            None => Ok(("".into(), short(&config.request_queue)?)),
        }
    }

    /// Publishes raw bytes as a request, as an outside client would (tests, bridges).
    pub async fn submit_raw(&self, body: &[u8], properties: Option<BasicProperties>) -> Result<()> {
        let (exchange, routing_key) = self.route()?;
        let properties = properties.unwrap_or_else(|| {
            BasicProperties::default()
                .with_content_type(CONTENT_JSON.into())
                .with_delivery_mode(2)
        });
        let out = Outgoing {
            exchange,
            routing_key,
            body: body.to_vec(),
            properties,
        };
        self.publisher.publish("request", &[out]).await
    }
}

#[async_trait]
impl RequestSink for AmqpRequestSink {
    async fn submit(&self, request: &ChatRequest) -> Result<()> {
        let format = self.publisher.connection().config().request_format;
        let body = codec::encode_request(request, format);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut headers = FieldTable::default();
        headers.insert(
            codec::HEADER_TIMESTAMP_MS.into(),
            AMQPValue::LongLongInt(i64::try_from(now_ms).unwrap_or(i64::MAX)),
        );
        // The trace context in headers too: seed 003 and 004 bodies have no metadata.
        for name in [meta::TRACEPARENT, meta::TRACESTATE] {
            if let Some(value) = request.metadata.get(name) {
                headers.insert(name.into(), codec::text(value));
            }
        }
        // And the client's tools (the OpenAI and Responses APIs' `tools`), which the
        // canonical body already carries in its metadata.
        if format != RequestFormat::Canonical {
            if let Some(value) = request.metadata.get(meta::TOOLS) {
                headers.insert(codec::HEADER_TOOLS.into(), codec::text(value));
            }
        }
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_JSON.into())
            .with_delivery_mode(2)
            .with_timestamp(now_ms / 1000)
            .with_headers(headers);
        if let Some(rt) = request.metadata.get(meta::REPLY_TO) {
            properties = properties.with_reply_to(short(rt)?);
        }
        self.submit_raw(body.as_bytes(), Some(properties)).await
    }
}
