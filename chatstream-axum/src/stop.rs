//! Explicit stop: the answer every dialect's stop route gives.
//!
//! A stop publishes a cancel at once on the broker's cancel channel, whichever gateway
//! instance relays the stream and whichever worker generates it
//! ([`Gateway::stop`](chatstream_core::Gateway::stop)); the worker stops within one token
//! and ends the stream with `End { finish_reason: cancelled, usage }`, which every reader
//! sees. The route decides who may stop (the same rule as who may read).
//!
//! | the stream | status | body |
//! |---|---|---|
//! | being generated, or queued (recorded in the [`StreamRegistry`](chatstream_core::StreamRegistry) and not started) | `202 Accepted` | `{"status": "stopping"}` |
//! | already ended (a stop is idempotent: a second stop says `cancelled`) | `200 OK` | `{"status": "ended", "finish_reason": "stop"}` |
//! | unknown (never submitted, or its retention expired) | `404` | the JSON error |
//!
//! Where the token source keeps no record of streams (RabbitMQ reply-to and topic
//! topologies, seed 003's response queues, Service Bus without a history log), an ended
//! stream cannot be told from a running one, and the answer is `202` whenever the registry
//! or this gateway knows the stream.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatstream_core::{StopOutcome, StreamKey};
use serde::Serialize;

use crate::{ApiError, ChatstreamState};

/// The body of a stop route's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopBody {
    /// `stopping` or `ended`.
    pub status: &'static str,
    /// How the stream ended, with `ended`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
}

/// What a stop did, ready to answer with: `202` stopping, `200` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped(pub StopBody);

impl Stopped {
    /// True when the cancel was published (the stream was running or queued).
    pub fn stopping(&self) -> bool {
        self.0.status == "stopping"
    }
}

impl IntoResponse for Stopped {
    fn into_response(self) -> Response {
        let status = if self.stopping() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        (status, Json(self.0)).into_response()
    }
}

/// Stops `key` (the caller has checked the client may): see the [module docs](self).
pub async fn stop_stream(state: &ChatstreamState, key: &StreamKey) -> Result<Stopped, ApiError> {
    let stopping = Stopped(StopBody {
        status: "stopping",
        finish_reason: None,
    });
    match state.gateway().stop(key).await? {
        StopOutcome::Ended { finish_reason } => Ok(Stopped(StopBody {
            status: "ended",
            finish_reason: Some(finish_reason.as_str()),
        })),
        StopOutcome::Unknown => {
            // Submitted and still queued: no envelope yet, but the registry knows it.
            if state.stream_registry().lookup(key).await?.is_some() {
                state.gateway().cancel(key).await?;
                tracing::info!(stream = %key, "queued stream stopped");
                Ok(stopping)
            } else {
                Err(ApiError::Missing("stream"))
            }
        }
        _ => {
            tracing::info!(stream = %key, "stream stopped");
            Ok(stopping)
        }
    }
}
