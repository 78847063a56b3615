//! The embedded defaults: an in-memory broker and an in-memory conversation store.
//!
//! They are the default for a single process, the reference the conformance suite is
//! written against, and the baseline of the benchmarks — not a stand-in for the adapters.

mod broker;
mod queue;
mod registry;
mod responses;
mod store;
mod streams;

pub use broker::{BrokerStats, DeadLetter, InMemoryBroker, InMemoryConfig, InMemorySource};
pub use registry::{InMemoryStreamRegistry, DEFAULT_REGISTRY_CAPACITY, DEFAULT_REGISTRY_TTL};
pub use responses::{InMemoryResponseStore, DEFAULT_RESPONSE_TTL};
pub use store::{Clock, InMemoryConversationStore};
