//! The conformance suite every broker adapter runs, and test helpers.
//!
//! An adapter implements [`Harness`] for its broker (fresh, isolated names per call) and
//! expands [`conformance_tests!`](crate::conformance_tests) in a test file; the in-memory
//! broker runs the same suite in `chatstream-core/tests/conformance_memory.rs`.
//!
//! Each check is a `pub async fn` taking the harness; it panics (fails the test) with a
//! message saying what a user would notice.

pub mod backends;
mod checks;
pub mod fake_openai;
mod harness;
pub mod response_checks;
pub mod store_checks;

pub use checks::*;
pub use harness::{services_required, skip_or_fail, Capabilities, Harness, InMemoryHarness};

/// Expands to one `#[tokio::test]` per conformance check.
///
/// `$make` is an async expression yielding `Option<H>` where `H: Harness`; `None` means the
/// server is unreachable and the test is skipped (see [`skip_or_fail`]).
///
/// ```ignore
/// chatstream_core::conformance_tests!(async { Some(chatstream_core::testkit::InMemoryHarness::new()) });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            ordering_and_end,
            replay_after_seq,
            ack_only_after_end,
            redelivery_after_dropped_consumer,
            malformed_input_dead_lettered,
            cancel_reaches_worker,
            explicit_stop_from_another_gateway,
            concurrent_streams_do_not_mix,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(harness) = $make.await {
                    $crate::testkit::$check(&harness).await;
                }
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per conversation-store check
/// ([`store_checks`]).
///
/// `$make` is an async expression yielding `Option<H>` where
/// `H:`[`StoreHarness`](store_checks::StoreHarness); `None` skips (see [`skip_or_fail`]).
///
/// ```ignore
/// chatstream_core::store_conformance_tests!(async {
///     Some(chatstream_core::testkit::store_checks::InMemoryStoreHarness)
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            store_keeps_order_and_metadata,
            store_expiry_slides,
            store_scopes_users_and_orgs,
            store_concurrent_appends,
            store_stats,
            store_cleanup,
            store_bad_ids_and_hostile_text,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(harness) = $make.await {
                    $crate::testkit::store_checks::$check(&harness).await;
                }
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per response-store check
/// ([`response_checks`]).
///
/// `$make` is an async expression yielding `Option<H>` where
/// `H:`[`ResponseStoreHarness`](response_checks::ResponseStoreHarness); `None` skips (see
/// [`skip_or_fail`]).
///
/// ```ignore
/// chatstream_core::response_store_conformance_tests!(async {
///     Some(chatstream_core::testkit::response_checks::InMemoryResponseStoreHarness)
/// });
/// ```
#[macro_export]
macro_rules! response_store_conformance_tests {
    ($make:expr) => {
        $crate::response_store_conformance_tests!(@each $make;
            responses_shared_between_instances,
            responses_create_replaces,
            responses_keep_owners_and_ids_apart,
            responses_hostile_text_and_bad_ids,
            responses_concurrent_finish,
            responses_expire,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(harness) = $make.await {
                    $crate::testkit::response_checks::$check(&harness).await;
                }
            }
        )*
    };
}
