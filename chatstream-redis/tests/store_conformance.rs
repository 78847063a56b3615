//! The conversation-store conformance suite on a real Redis (skipped when unreachable,
//! unless `CHATSTREAM_REQUIRE_SERVICES=1`). Redis-specific behaviour (key layout, TTLs,
//! scripts reloaded after a flush) stays in `store.rs`.

chatstream_core::store_conformance_tests!(
    chatstream_redis::testkit::RedisStoreHarness::connect_or_skip()
);
