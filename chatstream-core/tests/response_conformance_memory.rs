//! The response-store conformance suite on the in-memory store.

chatstream_core::response_store_conformance_tests!(async {
    Some(chatstream_core::testkit::response_checks::InMemoryResponseStoreHarness)
});
