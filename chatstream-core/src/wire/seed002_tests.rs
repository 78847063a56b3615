use std::time::Duration;

use serde_json::json;

use super::*;
use crate::{Error, Fault, Status};

const TS: &str = "2024-05-01T12:00:00.000Z";

fn at(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn fixed() -> Seed002Sse {
    Seed002Sse::with_clock(Arc::new(|| at(1_714_564_800_000)))
}

/// A line of the seed document with its `"..."` timestamp replaced by [`TS`].
fn doc(line: &str) -> String {
    line.strip_prefix("data: ")
        .unwrap_or(line)
        .replace(r#""timestamp": "...""#, &format!(r#""timestamp": "{TS}""#))
}

fn run(events: &[ClientEvent]) -> Vec<Frame> {
    let mut enc = fixed().encoder(&StreamKey::new("thread-1", "m"));
    let mut out = Vec::new();
    events.iter().for_each(|e| enc.encode(e, &mut out));
    out
}

fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
    ClientEvent::Envelope(Arc::new(TokenEnvelope::new(
        StreamKey::new("thread-1", "m"),
        1,
        seq,
        event,
    )))
}

#[test]
fn iso_timestamps_match_to_iso_string() {
    // node -e 'console.log(new Date(ms).toISOString())'
    for (ms, iso) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_714_564_800_000, TS),
        (951_782_400_123, "2000-02-29T00:00:00.123Z"),
        (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        (1_709_208_000_000, "2024-02-29T12:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
        (253_402_300_800_000, "+010000-01-01T00:00:00.000Z"),
    ] {
        assert_eq!(iso_timestamp(at(ms)), iso, "{ms}");
    }
}

#[test]
fn route_frames_match_the_seed_document() {
    let now = at(1_714_564_800_000);
    let connected = event_frame(EventKind::Connected, &json!({"threadId": "..."}), now);
    assert_eq!(
        connected.data,
        doc(r#"data: {"type": "connected", "data": {"threadId": "..."}, "timestamp": "..."}"#)
    );
    let saved = event_frame(
        EventKind::MessageSaved,
        &json!({"message": {"id": "1"}}),
        now,
    );
    assert_eq!(
        saved.data,
        doc(
            r#"data: {"type": "message_saved", "data": {"message": {"id": "1"}}, "timestamp": "..."}"#
        )
    );
}

#[test]
fn stream_frames_match_the_seed_document() {
    let end = StreamEvent::End {
        finish_reason: FinishReason::Stop,
        usage: None,
    };
    let frames = run(&[
        ev(0, StreamEvent::token("Hello")),
        ev(1, StreamEvent::token(" world!")),
        ev(2, end),
        ev(3, StreamEvent::token("late")),
    ]);
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(
        data,
        vec![
            doc(
                r#"data: {"type": "ai_response", "data": {"content": "Hello", "isComplete": false}, "timestamp": "..."}"#
            ),
            doc(
                r#"data: {"type": "ai_response", "data": {"content": " world!", "isComplete": false}, "timestamp": "..."}"#
            ),
            doc(
                r#"data: {"type": "ai_response", "data": {"content": "", "isComplete": true, "accumulated": "Hello world!"}, "timestamp": "..."}"#
            ),
            doc(r#"data: {"type": "done", "data": {"success": true}, "timestamp": "..."}"#),
        ]
    );
    let ids: Vec<_> = frames.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![Some(0), Some(1), Some(2), Some(2)]);
}

#[test]
fn status_error_reset_and_fault() {
    let status = StreamEvent::Status {
        status: Status::Started,
        conversation_id: Some("t1".into()),
        detail: None,
    };
    let frames = run(&[
        ev(0, status),
        ev(1, StreamEvent::token("é")),
        ClientEvent::Reset { attempt: 2 },
        ev(TokenEnvelope::seq_base(2), StreamEvent::token("b")),
        ev(
            TokenEnvelope::seq_base(2) + 1,
            StreamEvent::Error {
                message: "oops".into(),
            },
        ),
        ClientEvent::Fault(Fault::TimedOut),
        ClientEvent::Fault(Fault::TimedOut),
    ]);
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    let t = format!(r#", "timestamp": "{TS}"}}"#);
    assert_eq!(
        data,
        vec![
            format!(
                r#"{{"type": "workflow_status", "data": {{"status": "started", "threadId": "t1"}}{t}"#
            ),
            format!(
                r#"{{"type": "ai_response", "data": {{"content": "é", "isComplete": false}}{t}"#
            ),
            format!(
                r#"{{"type": "workflow_status", "data": {{"status": "reset", "attempt": 2}}{t}"#
            ),
            format!(
                r#"{{"type": "ai_response", "data": {{"content": "b", "isComplete": false}}{t}"#
            ),
            format!(r#"{{"type": "error", "data": {{"error": "oops"}}{t}"#),
            format!(
                r#"{{"type": "error", "data": {{"error": "stream exceeded the server's time limit", "code": "timeout"}}{t}"#
            ),
            format!(r#"{{"type": "done", "data": {{"success": false}}{t}"#),
        ]
    );
    assert_eq!(frames[2].id, None);
    assert_eq!(frames[3].id, Some(TokenEnvelope::seq_base(2)));
    assert_eq!(frames[6].id, None);
}

#[test]
fn events_parse_and_garbage_is_rejected() {
    let e = parse_event(&doc(
        r#"{"type": "done", "data": {"success": true}, "timestamp": "..."}"#,
    ));
    assert_eq!(
        e.ok(),
        Some(Seed002Event {
            kind: EventKind::Done,
            data: json!({"success": true}),
            timestamp: TS.into()
        })
    );
    for bad in [
        "",
        "{}",
        r#"{"type": "nope", "data": {}, "timestamp": ""}"#,
        r#"{"type": "done", "data": {}}"#,
        "[]",
    ] {
        assert!(
            matches!(parse_event(bad), Err(Error::Decode { .. })),
            "{bad}"
        );
    }
}
