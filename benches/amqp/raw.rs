//! The ceiling: plain lapin publish → consume on the same broker, one message per token.

use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

use crate::cpu::CpuSample;

/// Publisher confirms awaited at once, at most (the adapter sends up to `max_batch`
/// messages back to back and then awaits their confirms together).
const CONFIRM_WINDOW: usize = 1024;

/// What one raw run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRate {
    pub(crate) messages: usize,
    pub(crate) elapsed: Duration,
    /// CPU used meanwhile by this process and by the broker.
    pub(crate) cpu: (Duration, Option<Duration>),
}

impl RawRate {
    pub(crate) fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Publishes `messages` messages of `size` bytes to a fresh queue with publisher confirms
/// (up to [`CONFIRM_WINDOW`] unconfirmed) on one connection and consumes them (auto-ack) on
/// another; the time from the first publish to the last message consumed.
pub(crate) async fn publish_consume(url: &str, messages: usize, size: usize) -> RawRate {
    let publisher = Connection::connect(url, Default::default())
        .await
        .expect("raw publisher connection");
    let consumer_conn = Connection::connect(url, Default::default())
        .await
        .expect("raw consumer connection");
    let pch = publisher.create_channel().await.expect("channel");
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let cch = consumer_conn.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = cch
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .expect("queue.declare")
        .name()
        .clone();
    let mut consumer = cch
        .basic_consume(
            queue.clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let body = vec![b'x'; size];

    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let consume = async {
        for _ in 0..messages {
            consumer
                .next()
                .await
                .expect("raw consumer open")
                .expect("raw message");
        }
    };
    let publish = async {
        let mut confirms = FuturesUnordered::new();
        for _ in 0..messages {
            if confirms.len() >= CONFIRM_WINDOW {
                let confirm: lapin::Result<lapin::Confirmation> =
                    confirms.next().await.expect("a confirm");
                assert!(confirm.expect("confirm").is_ack(), "broker nacked");
            }
            let confirm = pch
                .basic_publish(
                    "".into(),
                    queue.clone(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        while let Some(confirm) = confirms.next().await {
            assert!(confirm.expect("confirm").is_ack(), "broker nacked");
        }
    };
    tokio::join!(consume, publish);
    let elapsed = started.elapsed();
    let cpu = CpuSample::now().since(&cpu_before);
    let _ = publisher.close(200, "bench done".into()).await;
    let _ = consumer_conn.close(200, "bench done".into()).await;
    RawRate {
        messages,
        elapsed,
        cpu,
    }
}
