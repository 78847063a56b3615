//! The bodies of chatstream's fuzz targets, one `pub fn` per target (each file in
//! `fuzz_targets/` calls one). They feed arbitrary bytes to every decoder of
//! `chatstream_core::wire` and to the serde types of every HTTP JSON body of
//! `chatstream-axum`; a panic, an abort or an out-of-memory is a finding. Where a decoder
//! accepts its input, the target also checks a property that a user would notice if it
//! broke (the re-encoded message decodes to the same thing, one SSE frame is one event).

use std::sync::Arc;

use chatstream_axum::aisdk::UiChatRequest;
use chatstream_axum::openai::{chat_messages, CompletionRequest};
use chatstream_axum::quickstart::SubmitRequest;
use chatstream_axum::seed002::{CreateThread, SendMessage};
use chatstream_axum::seed003::Seed003Request;
use chatstream_core::wire::{
    aisdk, decode_request, detect_request, openai, seed000, seed001, seed002, seed003, seed004, sse,
};
use chatstream_core::{
    ClientEvent, ClientTransport, Fault, FinishReason, Frame, Status, StreamEvent, StreamKey,
    TokenEnvelope, ToolCall,
};

/// Broker envelopes (seed 000 / canonical): whatever decodes re-encodes canonically and
/// decodes to the same envelope.
pub fn wire_envelope(data: &[u8]) {
    let Ok(decoded) = seed000::decode_envelope(data) else {
        return;
    };
    let env = decoded.into_envelope(0);
    for mode in [seed000::Mode::Canonical, seed000::Mode::Seed000] {
        if let Some(json) = seed000::encode_envelope(&env, mode) {
            let again = seed000::decode_envelope(json.as_bytes());
            assert!(again.is_ok(), "{json}");
            if mode == seed000::Mode::Canonical {
                assert_eq!(again.ok().map(|d| d.into_envelope(0)), Some(env.clone()));
            }
        }
    }
}

/// Request bodies of every dialect (seed 000, 003, 004, detected): whatever decodes can be
/// forwarded in the canonical form and decodes again to the same stream and text.
pub fn wire_request(data: &[u8]) {
    let _ = detect_request(data);
    let decoded = [
        decode_request(data),
        seed000::decode_request(data),
        seed003::decode_request(data),
        seed004::decode_request(data),
    ];
    for request in decoded.into_iter().flatten() {
        let json = seed000::encode_request(&request);
        let again = seed000::decode_request(json.as_bytes());
        let again = match again {
            Ok(r) => r,
            Err(e) => panic!("{e}: {json}"),
        };
        assert_eq!(again.key, request.key, "{json}");
        assert_eq!(again.last_user_text(), request.last_user_text(), "{json}");
        let _ = seed003::encode_request(&request);
        let _ = seed004::encode_request(&request);
    }
    let _ = seed004::decode_action(data);
}

/// What clients and backends parse: seed 001 data lines, seed 002 events, seed 003
/// response bodies, seed 004 WebSocket messages, OpenAI chunks, SSE bodies.
pub fn wire_client_frames(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = seed001::parse_data(&text);
    let _ = seed001::parse_line(&text);
    let _ = seed002::parse_event(&text);
    for kind in [
        None,
        Some("token"),
        Some("end"),
        Some("error"),
        Some("other"),
    ] {
        let _ = seed003::decode_response(kind, data);
    }
    let _ = seed004::parse_message(&text);
    let _ = openai::parse_data(&text);
    for event in sse::parse(&text) {
        assert!(!event.id.as_deref().unwrap_or_default().contains('\0'));
    }
}

/// How SSE normalises line breaks: each of `\r\n`, `\r`, `\n` becomes `\n`.
pub fn sse_normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// SSE rendering: any data (with any line breaks, `data:` or `id:` text inside) renders to
/// exactly one event carrying that data, so no token can inject an event.
pub fn sse_render(data: &[u8]) {
    let (id, rest) = match data.split_first_chunk::<8>() {
        Some((id, rest)) => (Some(u64::from_le_bytes(*id)), rest),
        None => (None, data),
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let mut frame = Frame::data(text.as_str());
    frame.id = id;
    let body = sse::render(&frame);
    let events = sse::parse(&body);
    assert_eq!(events.len(), 1, "{body:?}");
    assert_eq!(events[0].data, sse_normalized(&text), "{body:?}");
    assert_eq!(events[0].id, id.map(|i| i.to_string()));
}

fn transports() -> Vec<Box<dyn ClientTransport>> {
    vec![
        Box::new(seed001::Seed001Sse),
        Box::new(seed002::Seed002Sse::default()),
        Box::new(seed003::Seed003Sse),
        Box::new(seed004::Seed004Ws::default()),
        Box::new(openai::OpenAiChunks::default()),
        Box::new(aisdk::AiSdkUiStream),
    ]
}

/// Every client dialect, fed a stream whose ids, token, error and fault text are the
/// input: every frame is valid JSON (or a terminal marker) and renders as one SSE event.
pub fn client_transports(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut half = text.len() / 2;
    while !text.is_char_boundary(half) {
        half -= 1;
    }
    let (session, message) = text.split_at(half);
    let key = StreamKey::new(session, message);
    let events = [
        StreamEvent::Status {
            status: Status::Started,
            conversation_id: Some(text.clone()),
            detail: Some(text.clone()),
        },
        StreamEvent::token(text.as_str()),
        StreamEvent::ToolCall {
            call: ToolCall {
                id: text.clone(),
                name: text.clone(),
                arguments: text.clone(),
            },
        },
        StreamEvent::Error {
            message: text.clone(),
        },
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    ];
    for transport in transports() {
        let mut enc = transport.encoder(&key);
        let mut frames: Vec<Frame> = Vec::new();
        enc.open(&mut frames);
        enc.encode(&ClientEvent::Reset { attempt: 2 }, &mut frames);
        for (seq, event) in events.iter().enumerate() {
            let env = TokenEnvelope::new(key.clone(), 2, seq as u64, event.clone());
            enc.encode(&ClientEvent::Envelope(Arc::new(env)), &mut frames);
        }
        enc.encode(
            &ClientEvent::Fault(Fault::Unavailable(text.clone())),
            &mut frames,
        );
        let body: String = frames.iter().map(sse::render).collect();
        let parsed = sse::parse(&body);
        assert_eq!(parsed.len(), frames.len(), "{}: {body:?}", transport.name());
        for (frame, event) in frames.iter().zip(&parsed) {
            assert_eq!(
                event.data,
                sse_normalized(&frame.data),
                "{}",
                transport.name()
            );
            if !matches!(frame.data.as_str(), "[DONE]" | "__END__") {
                let json = serde_json::from_str::<serde_json::Value>(&frame.data);
                assert!(json.is_ok(), "{}: {:?}", transport.name(), frame.data);
            }
        }
    }
}

/// The JSON bodies of every HTTP route: the serde types the routes extract, and the
/// conversions the routes run on them.
pub fn http_bodies(data: &[u8]) {
    let _ = serde_json::from_slice::<SubmitRequest>(data);
    let _ = serde_json::from_slice::<CreateThread>(data);
    let _ = serde_json::from_slice::<SendMessage>(data);
    let _ = serde_json::from_slice::<Seed003Request>(data);
    if let Ok(request) = serde_json::from_slice::<CompletionRequest>(data) {
        let _ = chat_messages(&request.messages);
    }
    if let Ok(request) = serde_json::from_slice::<UiChatRequest>(data) {
        for message in &request.messages {
            let _ = message.text();
        }
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
}
