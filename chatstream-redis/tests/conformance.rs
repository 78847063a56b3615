//! The conformance suite on the Redis bus, queue and cancel channel, against a real Redis
//! (`CHATSTREAM_REDIS_URL`, default `redis://127.0.0.1:6379`; skipped when unreachable
//! unless `CHATSTREAM_REQUIRE_SERVICES=1`).

use chatstream_redis::testkit::RedisHarness;

chatstream_core::conformance_tests!(RedisHarness::connect());
