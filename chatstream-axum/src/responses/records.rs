//! Keeping a stored response's record up to date from its token stream.
//!
//! The record is written when the response is created and once more when it reaches a final
//! state. That second write comes from whoever sees the stream's `End` first: the relay of a
//! streamed response ([`observe`]), the follower of a background or waited-for response
//! ([`follow`]), or any instance that reads a record with no outcome while the token source
//! says the stream ended ([`refresh`]: it reads the stream again from its start). The first
//! final state wins ([`ResponseStore::finish`]); all of them read the same envelopes, so they
//! agree.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_core::wire::responses::OutcomeCollector;
use chatstream_core::{
    ClientEvent, ClientStream, DynResponseStore, Gateway, ResponseOutcome, ResponseRecord,
    ResponseStatus, StreamStatus,
};
use futures::StreamExt;

/// How long a read of an ended stream (or a wait for the end after a cancel) may take.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Writes the outcome of `id`, logging a failure (the next read repairs it: see
/// [`refresh`]).
pub(crate) async fn finish(store: &DynResponseStore, id: &str, outcome: &ResponseOutcome) {
    if let Err(e) = store.finish(id, outcome).await {
        tracing::warn!(error = %e, response = id, "could not store the response's outcome");
    }
}

/// `events`, storing the outcome of `id` when its `End` passes (if it is stored at all).
pub(crate) fn observe(
    events: ClientStream,
    store: Option<Arc<DynResponseStore>>,
    id: String,
) -> ClientStream {
    let Some(store) = store else {
        return events;
    };
    let collector = Mutex::new(OutcomeCollector::default());
    events.observed(move |event| {
        let outcome = collector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        if let Some(outcome) = outcome {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move { finish(&*store, &id, &outcome).await });
        }
    })
}

/// Reads `events` to the end: the outcome, or `None` when the stream ended without one
/// (a fault) or took longer than `limit`.
pub(crate) async fn collect(
    mut events: ClientStream,
    limit: Duration,
) -> Result<ResponseOutcome, Option<chatstream_core::Fault>> {
    let read = async {
        let mut collector = OutcomeCollector::default();
        while let Some(event) = events.next().await {
            if let ClientEvent::Fault(fault) = &event {
                return Err(Some(fault.clone()));
            }
            if let Some(outcome) = collector.push(&event) {
                return Ok(outcome);
            }
        }
        Err(None)
    };
    tokio::time::timeout(limit, read).await.unwrap_or(Err(None))
}

/// Follows a background response to its end in a task, and stores its outcome.
pub(crate) fn follow(events: ClientStream, store: Arc<DynResponseStore>, id: String) {
    tokio::spawn(async move {
        // No limit of its own: the gateway's idle and stream timeouts end the stream.
        if let Ok(outcome) = collect(events, Duration::MAX / 4).await {
            finish(&*store, &id, &outcome).await;
        }
    });
}

/// The record of a response with its outcome, when its stream ended and no instance
/// stored that yet; and the state to show when it did not end: `in_progress` once the
/// stream started, else the record's own.
pub(crate) async fn refresh(
    gateway: &Gateway,
    store: &DynResponseStore,
    mut record: ResponseRecord,
) -> (ResponseRecord, ResponseStatus) {
    if record.outcome.is_some() {
        let status = record.status();
        return (record, status);
    }
    let key = record.header.stream_key();
    match gateway.status(&key).await {
        Ok(StreamStatus::Ended { .. }) => {
            let read = match gateway.subscribe(&key, None).await {
                Ok(events) => collect(events, SETTLE_LIMIT).await.ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read an ended response's stream");
                    None
                }
            };
            if let Some(outcome) = read {
                finish(store, &record.header.id, &outcome).await;
                record.outcome = Some(outcome);
            }
        }
        Ok(StreamStatus::Open) => return (record, ResponseStatus::InProgress),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not ask for a response's stream status"),
    }
    let status = record.status();
    (record, status)
}
