//! The Redis ceiling: plain `XADD` → `XREAD` of one stream, one entry per message, on the
//! same server, measured like the RabbitMQ one (`benches/amqp/raw.rs`).

use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;

use crate::procfs;
use crate::raw::RawRate;

/// `XADD`s sent per pipeline (the token sink pipelines a batch the same way).
const PIPELINE: usize = 256;

/// Appends `messages` entries of `size` bytes to a fresh stream in pipelines of
/// [`PIPELINE`] on one connection while another reads them with `XREAD BLOCK`; the time
/// from the first append to the last entry read.
pub(crate) async fn xadd_xread(url: &str, key: &str, messages: usize, size: usize) -> RawRate {
    match run(url, key, messages, size).await {
        Ok(rate) => rate,
        Err(e) => {
            eprintln!("raw XADD → XREAD failed: {e}");
            RawRate {
                messages: 0,
                elapsed: Duration::from_secs(1),
                cpu: (Duration::ZERO, None),
            }
        }
    }
}

async fn run(url: &str, key: &str, messages: usize, size: usize) -> redis::RedisResult<RawRate> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Duration::from_secs(30));
    let mut producer = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut consumer = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut producer)
        .await?;
    let body = vec![b'x'; size];
    let server = procfs::pid_named("redis-server");
    let own = || procfs::cpu(std::process::id()).unwrap_or_default();
    let broker = || server.and_then(procfs::cpu);
    let (own_before, broker_before) = (own(), broker());
    let started = Instant::now();
    let consume = async {
        let mut last = "0-0".to_owned();
        let mut read = 0;
        while read < messages {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(4096)
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(key)
                .arg(&last)
                .query_async(&mut consumer)
                .await?;
            let Some(reply) = reply else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::ResponseError,
                    "XREAD timed out",
                )));
            };
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                last = entry.id;
                read += 1;
            }
        }
        Ok::<_, redis::RedisError>(())
    };
    let produce = async {
        let mut sent = 0;
        while sent < messages {
            let n = PIPELINE.min(messages - sent);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("env")
                    .arg(&body)
                    .ignore();
            }
            let _: () = pipe.query_async(&mut producer).await?;
            sent += n;
        }
        Ok::<_, redis::RedisError>(())
    };
    let (consumed, produced) = tokio::join!(consume, produce);
    consumed?;
    produced?;
    let elapsed = started.elapsed();
    let cpu = (
        own().saturating_sub(own_before),
        broker()
            .zip(broker_before)
            .map(|(a, b)| a.saturating_sub(b)),
    );
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut producer)
        .await?;
    Ok(RawRate {
        messages,
        elapsed,
        cpu,
    })
}
