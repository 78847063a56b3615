//! The conformance suite (`chatstream_core::testkit`, with replay) on brokers that keep no
//! history, each paired with a history log through `LoggedTokenSink` and
//! `FallbackTokenSource` (chatstream-core's `history` module):
//!
//! | primary | log | cancel channel |
//! |---|---|---|
//! | RabbitMQ, reply-to topology | Redis bus | RabbitMQ's |
//! | Service Bus (in-process fake) | Redis bus | Redis pub/sub |
//! | Service Bus (in-process fake) | in-memory broker | in-memory |
//!
//! The RabbitMQ and Redis ones need those servers (`CHATSTREAM_AMQP_URL`,
//! `CHATSTREAM_REDIS_URL`, defaults on 127.0.0.1) and skip with a line on stderr when one is
//! unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`.
#![cfg(all(feature = "amqp", feature = "redis", feature = "servicebus"))]

#[path = "history_log/amqp.rs"]
mod amqp;
#[path = "history_log/logged.rs"]
mod logged;
mod support;

use amqp::AmqpPrimary;
use chatstream_servicebus::testkit::FakeHarness as ServiceBusPrimary;
use logged::{Log, Logged};

mod rabbitmq_reply_to_with_redis_log {
    use super::*;
    chatstream_core::conformance_tests!(async {
        let primary = AmqpPrimary::reply_to().await?;
        Some(Logged::new(primary, Log::redis().await?).await)
    });
}

mod servicebus_with_redis_log {
    use super::*;
    chatstream_core::conformance_tests!(async {
        let log = Log::redis().await?;
        Some(Logged::new(ServiceBusPrimary::start().await, log).await)
    });
}

mod servicebus_with_memory_log {
    use super::*;
    chatstream_core::conformance_tests!(async {
        Some(Logged::new(ServiceBusPrimary::start().await, Log::memory()).await)
    });
}
