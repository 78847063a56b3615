//! The conformance suite on the in-memory broker.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chatstream_core::testkit::InMemoryHarness;

chatstream_core::conformance_tests!(async { Some(InMemoryHarness::new()) });
