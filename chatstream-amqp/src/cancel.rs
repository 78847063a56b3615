//! The control channel: cancels on a fanout exchange.

use async_trait::async_trait;
use chatstream_core::{CancelChannel, Result, StreamKey};
use futures::stream::BoxStream;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use serde_json::json;
use tokio::sync::mpsc;

use crate::codec::CONTENT_JSON;
use crate::error::lapin_err;
use crate::publisher::{Outgoing, Publisher};
use crate::topology::{self, short};
use crate::AmqpConnection;

/// Cancels between gateways and workers (a [`CancelChannel`]): a cancel is a JSON message
/// `{"sessionId": …, "messageId": …}` on the fanout [`control_exchange`]; every listener has
/// an exclusive auto-delete queue bound to it, re-declared after a reconnect (cancels sent
/// while a listener is disconnected are missed, as on any live channel).
///
/// [`control_exchange`]: crate::AmqpConfig::control_exchange
#[derive(Debug)]
pub struct AmqpCancelChannel {
    publisher: Publisher,
}

impl AmqpCancelChannel {
    /// Declares the control exchange.
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let publisher = Publisher::new(conn.clone());
        let config = conn.config().clone();
        publisher
            .with_channel(
                |ch| async move { topology::declare_control_exchange(&ch, &config).await },
            )
            .await?;
        Ok(Self { publisher })
    }
}

#[derive(serde::Deserialize)]
struct CancelMsg {
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(rename = "messageId")]
    message_id: String,
}

async fn listen(conn: &AmqpConnection) -> Result<(Channel, Consumer)> {
    let config = conn.config();
    let ch = conn.channel().await?;
    topology::declare_control_exchange(&ch, config).await?;
    let queue = topology::declare_private_queue(&ch, "").await?;
    ch.queue_bind(
        queue.clone(),
        short(&config.control_exchange)?,
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err("queue.bind (cancels)"))?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = ch
        .basic_consume(queue, "".into(), options, FieldTable::default())
        .await
        .map_err(lapin_err("basic.consume (cancels)"))?;
    Ok((ch, consumer))
}

async fn forward(
    conn: AmqpConnection,
    first: (Channel, Consumer),
    tx: mpsc::UnboundedSender<StreamKey>,
) {
    let (mut _ch, mut consumer) = first;
    loop {
        loop {
            let item = tokio::select! {
                item = consumer.next() => item,
                _ = tx.closed() => return,
            };
            match item {
                Some(Ok(d)) => match serde_json::from_slice::<CancelMsg>(&d.data) {
                    Ok(m) => {
                        if tx.send(StreamKey::new(m.session_id, m.message_id)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping an undecodable cancel"),
                },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cancel listener failed; listening again");
                    break;
                }
                None => break,
            }
        }
        loop {
            if tx.is_closed() {
                return;
            }
            conn.pause().await;
            match listen(&conn).await {
                Ok((ch, c)) => {
                    (_ch, consumer) = (ch, c);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cancel listener not back yet"),
            }
        }
    }
}

#[async_trait]
impl CancelChannel for AmqpCancelChannel {
    async fn cancel(&self, key: &StreamKey) -> Result<()> {
        let body = json!({"sessionId": &*key.session_id, "messageId": &*key.message_id});
        let out = Outgoing {
            exchange: short(&self.publisher.connection().config().control_exchange)?,
            routing_key: "cancel".into(),
            body: body.to_string().into_bytes(),
            properties: BasicProperties::default().with_content_type(CONTENT_JSON.into()),
        };
        self.publisher.publish("cancel", &[out]).await
    }

    async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>> {
        let conn = self.publisher.connection().clone();
        let first = listen(&conn).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward(conn, first, tx));
        Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
    }
}
