//! Fault tests on the real brokers, with the `chaos_worker` example as the worker and
//! gateway processes: worker death mid-answer (SIGKILL), graceful shutdown (SIGTERM) of
//! workers and gateways, gateway death with `Last-Event-ID` resume, and hostile stream keys.
//! RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (`CHATSTREAM_AMQP_URL`,
//! `CHATSTREAM_REDIS_URL`); a test skips when its broker is unreachable unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`. RELIABILITY.md lists every test and its figures.
//!
//! `cargo test` builds the examples next to the test binaries; when a filter skipped that,
//! run `cargo build --example chaos_worker --features amqp,redis` first.
#![cfg(all(unix, feature = "amqp", feature = "redis", feature = "axum"))]
#![allow(unreachable_pub)]

mod common;
mod gateway_death;
mod hostile_keys;
mod shutdown;
#[path = "../support/mod.rs"]
mod support;
mod worker_death;
