//! The conversation-store conformance suite on the in-memory store.

chatstream_core::store_conformance_tests!(async {
    Some(chatstream_core::testkit::store_checks::InMemoryStoreHarness)
});
