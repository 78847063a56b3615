use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{Fault, FinishReason};

// The document's four output examples, as Python's json.dumps writes them.
const STATUS: &str = r#"{"message": "Assistant is processing your request...", "timestamp": 1683042123.456, "status": "started", "type": "status", "final_message": false, "message_id": "unique-message-id", "thread_id": "thread_abc123"}"#;
const RESPONSE: &str = r#"{"message": "Response content...", "timestamp": 1683042124.789, "status": "in_progress", "type": "response", "final_message": false, "message_id": "unique-message-id", "thread_id": "thread_abc123"}"#;
const FINAL: &str = r#"{"message": "Complete response content...", "timestamp": 1683042125.123, "status": "completed", "type": "response", "final_message": true, "message_id": "unique-message-id", "thread_id": "thread_abc123"}"#;
const ERROR: &str = r#"{"message": "Error description", "timestamp": 1683042126.456, "status": "error", "type": "error", "error_details": "Detailed error information", "message_id": "unique-message-id", "thread_id": "thread_abc123"}"#;

const TIMES: [f64; 4] = [
    1683042123.456,
    1683042124.789,
    1683042125.123,
    1683042126.456,
];

fn ticking() -> Seed004Ws {
    let n = Arc::new(AtomicUsize::new(0));
    Seed004Ws::with_clock(Arc::new(move || {
        TIMES[n.fetch_add(1, Ordering::Relaxed) % TIMES.len()]
    }))
}

fn run(events: &[ClientEvent]) -> Vec<Frame> {
    let mut enc = ticking().encoder(&StreamKey::new("channel-1", "unique-message-id"));
    let mut out = Vec::new();
    events.iter().for_each(|e| enc.encode(e, &mut out));
    out
}

fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
    let key = StreamKey::new("channel-1", "unique-message-id");
    ClientEvent::Envelope(Arc::new(TokenEnvelope::new(key, 1, seq, event)))
}

fn started(thread: &str) -> StreamEvent {
    StreamEvent::Status {
        status: Status::Started,
        conversation_id: Some(thread.into()),
        detail: None,
    }
}

fn end() -> StreamEvent {
    StreamEvent::End {
        finish_reason: FinishReason::Stop,
        usage: None,
    }
}

#[test]
fn document_examples_parse_and_re_encode_byte_for_byte() {
    for doc in [STATUS, RESPONSE, FINAL, ERROR] {
        let m = parse_message(doc);
        assert_eq!(m.map(|m| m.to_json()).ok().as_deref(), Some(doc));
    }
}

#[test]
fn encoder_reproduces_the_document() {
    let frames = run(&[
        ev(0, started("thread_abc123")),
        ev(1, StreamEvent::token("Response content...")),
        ev(2, started("thread_other")),
    ]);
    assert_eq!(frames[0], Frame::data(STATUS).with_id(0));
    assert_eq!(frames[1], Frame::data(RESPONSE).with_id(1));
    // The thread id is the first one seen.
    assert!(frames[2].data.ends_with(r#""thread_id": "thread_abc123"}"#));

    let frames = run(&[
        ev(0, started("thread_abc123")),
        ev(1, StreamEvent::token("Complete response content...")),
        ev(2, end()),
        ev(3, StreamEvent::token("late")),
    ]);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[2], Frame::data(FINAL).with_id(2));

    // The final message carries the whole answer, however it was cut.
    let frames = run(&[
        ev(0, StreamEvent::token("Complete ")),
        ev(1, StreamEvent::token("text")),
        ev(2, end()),
    ]);
    let last = frames.last().and_then(|f| parse_message(&f.data).ok());
    assert_eq!(
        last.map(|m| (m.message, m.final_message)),
        Some(("Complete text".into(), Some(true)))
    );
}

#[test]
fn statuses_errors_resets_and_faults() {
    let processing = StreamEvent::Status {
        status: Status::Processing,
        conversation_id: None,
        detail: Some("Checking the weather...".into()),
    };
    let frames = run(&[
        ev(0, processing),
        ev(1, StreamEvent::status(Status::Responding)),
        ev(2, StreamEvent::token("é")),
        ClientEvent::Reset { attempt: 2 },
        ev(
            3,
            StreamEvent::Error {
                message: "boom".into(),
            },
        ),
        ev(
            4,
            StreamEvent::End {
                finish_reason: FinishReason::Error,
                usage: None,
            },
        ),
    ]);
    let msgs: Vec<WsMessage> = frames
        .iter()
        .filter_map(|f| parse_message(&f.data).ok())
        .collect();
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0].message, "Checking the weather...");
    assert_eq!(msgs[0].thread_id, "channel-1");
    assert_eq!(msgs[1].message, "Assistant is generating a response...");
    assert_eq!(
        (msgs[1].status.as_str(), msgs[1].kind.as_str()),
        ("responding", "status")
    );
    assert!(frames[2].data.starts_with(r#"{"message": "\u00e9", "#));
    assert_eq!(
        (msgs[3].status.as_str(), msgs[3].kind.as_str()),
        ("reset", "status")
    );
    assert_eq!(frames[3].id, None);
    assert_eq!(msgs[4].error_details.as_deref(), Some("boom"));
    assert_eq!(msgs[4].final_message, None);

    let frames = run(&[ClientEvent::Fault(Fault::HistoryLost), ev(0, end())]);
    assert_eq!(frames.len(), 1);
    let m = parse_message(&frames[0].data).ok();
    assert_eq!(m.and_then(|m| m.error_details), Some("history_lost".into()));
}

#[test]
fn requests_from_the_document() {
    for (doc, channel) in [
        (
            r#"{"channel": "550e8400-e29b-41d4-a716-446655440000", "message_id": "msg-123456789", "message": "What is the capital of France?"}"#,
            "550e8400-e29b-41d4-a716-446655440000",
        ),
        (
            r#"{"channel": "convex_id_12345", "message_id": "msg-123456789", "message": "What is the capital of France?"}"#,
            "convex_id_12345",
        ),
        (
            r#"{"channel": "user_session_abc123", "message_id": "msg-123456789", "message": "What is the capital of France?"}"#,
            "user_session_abc123",
        ),
    ] {
        let req = decode_request(doc.as_bytes()).ok();
        let want = ChatRequest::new(
            StreamKey::new(channel, "msg-123456789"),
            "What is the capital of France?",
        );
        assert_eq!(req.as_ref(), Some(&want));
        assert_eq!(encode_request(&want), doc);
    }
    for bad in [
        &b"{}"[..],
        br#"{"channel": "c", "message_id": "m"}"#,
        br#"{"channel": 1, "message_id": "m", "message": "x"}"#,
        b"\xc3\x28",
    ] {
        assert!(matches!(decode_request(bad), Err(Error::Decode { .. })));
    }
}

#[test]
fn client_actions() {
    assert_eq!(
        decode_action(br#"{"action": "subscribe", "channel": "convex_id_12345"}"#).ok(),
        Some(ClientAction::Subscribe {
            channel: "convex_id_12345".into()
        })
    );
    assert_eq!(
        decode_action(br#"{"action":"ping"}"#).ok(),
        Some(ClientAction::Ping)
    );
    assert_eq!(
        decode_action(br#"{"action":"message","channel":"c","message_id":"m","message":"hi"}"#)
            .ok(),
        Some(ClientAction::Message(ChatRequest::new(
            StreamKey::new("c", "m"),
            "hi"
        )))
    );
    assert_eq!(
        decode_action(br#"{"action":"cancel","message_id":"m"}"#).ok(),
        Some(ClientAction::Cancel {
            channel: None,
            message_id: "m".into()
        })
    );
    assert_eq!(
        decode_action(br#"{"action":"cancel","channel":"c","message_id":"m"}"#).ok(),
        Some(ClientAction::Cancel {
            channel: Some("c".into()),
            message_id: "m".into()
        })
    );
    for bad in [
        &br#"{"action": "dance"}"#[..],
        br#"{"action": "cancel", "channel": "c"}"#,
        br#"{"action": "subscribe"}"#,
        br#"{"action": "message", "channel": "c", "message": "hi"}"#,
        br#"{"channel": "c"}"#,
        br#"{"action": 7}"#,
        b"ping",
    ] {
        assert!(
            matches!(
                decode_action(bad),
                Err(Error::Decode {
                    what: WHAT_ACTION,
                    ..
                })
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
