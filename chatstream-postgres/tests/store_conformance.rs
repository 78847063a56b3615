//! The conversation-store conformance suite on the real PostgreSQL (skipped when
//! unreachable, unless `CHATSTREAM_REQUIRE_SERVICES=1`).

chatstream_core::store_conformance_tests!(
    chatstream_postgres::testkit::PgStoreHarness::connect_or_skip()
);
