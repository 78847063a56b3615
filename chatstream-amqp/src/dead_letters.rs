//! Reading the dead-letter queue (operators, tests).

use chatstream_core::Result;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use tokio::sync::Mutex;

use crate::codec::{self, HEADER_ATTEMPT, HEADER_QUEUE, HEADER_REASON};
use crate::error::lapin_err;
use crate::topology::{self, short};
use crate::AmqpConnection;

/// A request that was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The request body as it was delivered.
    pub body: Vec<u8>,
    /// Why: the `x-chatstream-reason` header, or the broker's own reason (`x-death`) for
    /// messages RabbitMQ dead-lettered itself (quorum delivery limit).
    pub reason: String,
    /// The queue it came from, when known.
    pub queue: Option<String>,
    /// Its delivery attempt, when known.
    pub attempt: Option<u32>,
}

/// Takes messages off the dead-letter queue ([`AmqpConfig::dead_letter_queue`]).
///
/// [`AmqpConfig::dead_letter_queue`]: crate::AmqpConfig::dead_letter_queue
#[derive(Debug)]
pub struct DeadLetterQueue {
    conn: AmqpConnection,
    channel: Mutex<Option<lapin::Channel>>,
}

impl DeadLetterQueue {
    /// Declares the request topology (dead-letter exchange and queue included).
    pub async fn new(conn: &AmqpConnection) -> Result<Self> {
        let ch = conn.channel().await?;
        topology::declare_requests(&ch, conn.config()).await?;
        Ok(Self {
            conn: conn.clone(),
            channel: Mutex::new(Some(ch)),
        })
    }

    /// Removes and returns up to `max` dead letters, oldest first.
    pub async fn take(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let mut slot = self.channel.lock().await;
        let ch = match slot.as_ref() {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => slot.insert(self.conn.channel().await?).clone(),
        };
        let queue = short(&self.conn.config().dead_letter_queue)?;
        let mut out = Vec::new();
        while out.len() < max {
            let got = ch
                .basic_get(queue.clone(), BasicGetOptions::default())
                .await
                .map_err(lapin_err("basic.get (dead letters)"))?;
            let Some(msg) = got else { break };
            let d = msg.delivery;
            let headers = d.properties.headers().as_ref();
            out.push(DeadLetter {
                reason: codec::header_text(headers, HEADER_REASON)
                    .or_else(|| codec::death_reason(headers))
                    .unwrap_or_default(),
                queue: codec::header_text(headers, HEADER_QUEUE),
                attempt: codec::header_u64(headers, HEADER_ATTEMPT)
                    .and_then(|a| u32::try_from(a).ok()),
                body: d.data.clone(),
            });
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(lapin_err("basic.ack (dead letters)"))?;
        }
        Ok(out)
    }
}
