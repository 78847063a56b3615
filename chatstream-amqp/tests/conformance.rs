//! The conformance suite of `chatstream_core::testkit` against the real RabbitMQ, once per
//! token topology (and once with a quorum request queue). Skips when RabbitMQ is
//! unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`.

mod common;

use chatstream_amqp::TokenTopology;
use common::{test_config, AmqpHarness};

mod reply_to {
    use super::*;
    chatstream_core::conformance_tests!(async {
        AmqpHarness::new(test_config(TokenTopology::ReplyTo)).await
    });
}

mod topic {
    use super::*;
    chatstream_core::conformance_tests!(async {
        AmqpHarness::new(test_config(TokenTopology::Topic)).await
    });
}

mod per_request_queue {
    use super::*;
    chatstream_core::conformance_tests!(async {
        AmqpHarness::new(test_config(TokenTopology::PerRequestQueue)).await
    });
}

mod stream {
    use super::*;
    chatstream_core::conformance_tests!(async {
        AmqpHarness::new(test_config(TokenTopology::Stream)).await
    });
}

mod quorum {
    use super::*;
    chatstream_core::conformance_tests!(async {
        let mut config = test_config(TokenTopology::ReplyTo);
        config.quorum = true;
        AmqpHarness::new(config).await
    });
}
