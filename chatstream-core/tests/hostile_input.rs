//! Bad input, as property tests (proptest, run by `cargo test`): no decoder panics on any
//! bytes; what is encoded decodes back unchanged, whatever the text and the stream ids hold;
//! a token cannot inject an SSE event; deeply nested and invalid UTF-8 JSON is refused.
//!
//! The cargo-fuzz targets in `fuzz/` check the same things for longer; see RELIABILITY.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use chatstream_core::wire::{
    aisdk, decode_request, openai, seed000, seed001, seed002, seed003, seed004, sse,
};
use chatstream_core::{
    ChatMessage, ChatRequest, ClientEvent, ClientTransport, Fault, FinishReason, Frame, Role,
    Status, StreamEvent, StreamKey, TokenEnvelope, Usage,
};
use proptest::prelude::*;

/// Text that stresses escaping: quotes, backslashes, every kind of line break, controls,
/// SSE field names, path and routing-key characters, non-BMP characters.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\n\ndata: evil\n\n".to_owned()),
        Just("\r\nid: 99\r\n".to_owned()),
        Just("event: x\r".to_owned()),
        Just("__END__".to_owned()),
        Just("[DONE]".to_owned()),
        Just("../..".to_owned()),
        Just("/".to_owned()),
        Just("*.#".to_owned()),
        Just("%2F%00".to_owned()),
        Just("{\"token\": \"x\"}".to_owned()),
        Just("\\u0000\"\\".to_owned()),
        Just("\u{0}\u{1f}\u{7f}\u{2028}\u{2029}\u{feff}".to_owned()),
        Just("😀é€\u{10ffff}".to_owned()),
        any::<String>(),
        "[a-z ]{0,8}",
    ];
    prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
}

fn key() -> impl Strategy<Value = StreamKey> {
    (hostile_text(), hostile_text()).prop_map(|(s, m)| StreamKey::new(s, m))
}

fn finish() -> impl Strategy<Value = FinishReason> {
    prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::ToolCalls),
        Just(FinishReason::ContentFilter),
        Just(FinishReason::Cancelled),
        Just(FinishReason::Error),
    ]
}

fn event() -> impl Strategy<Value = StreamEvent> {
    let usage = prop::option::of((any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(p, c, t)| Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t,
        },
    ));
    prop_oneof![
        hostile_text().prop_map(StreamEvent::token),
        hostile_text().prop_map(|message| StreamEvent::Error { message }),
        (finish(), usage).prop_map(|(finish_reason, usage)| StreamEvent::End {
            finish_reason,
            usage
        }),
        prop::option::of(hostile_text()).prop_map(|conversation_id| StreamEvent::Status {
            status: Status::Started,
            conversation_id,
            detail: None,
        }),
    ]
}

fn envelope() -> impl Strategy<Value = TokenEnvelope> {
    (key(), 1..u32::MAX, any::<u64>(), event())
        .prop_map(|(key, attempt, seq, event)| TokenEnvelope::new(key, attempt, seq, event))
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::System),
        Just(Role::User),
        Just(Role::Assistant),
        Just(Role::Tool)
    ]
}

fn request() -> impl Strategy<Value = ChatRequest> {
    let messages = prop::collection::vec(
        (role(), hostile_text()).prop_map(|(r, c)| ChatMessage::new(r, c)),
        1..4,
    );
    let metadata = prop::collection::btree_map(hostile_text(), hostile_text(), 0..3);
    (
        key(),
        messages,
        prop::option::of(hostile_text()),
        prop::option::of(hostile_text()),
        prop::option::of(any::<u32>()),
        metadata,
    )
        .prop_map(
            |(key, messages, model, user, max_tokens, metadata)| ChatRequest {
                key,
                messages,
                model,
                user,
                max_tokens,
                metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
            },
        )
}

/// Every decoder of `wire`, fed the same input; none may panic.
fn decode_everything(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = seed000::decode_envelope(bytes);
    let _ = seed000::decode_request(bytes);
    let _ = decode_request(bytes);
    let _ = seed001::parse_data(&text);
    let _ = seed001::parse_line(&text);
    let _ = seed002::parse_event(&text);
    let _ = seed003::decode_request(bytes);
    for kind in [None, Some("token"), Some("end"), Some("error"), Some("x")] {
        let _ = seed003::decode_response(kind, bytes);
    }
    let _ = seed004::decode_request(bytes);
    let _ = seed004::decode_action(bytes);
    let _ = seed004::parse_message(&text);
    let _ = openai::parse_data(&text);
    let _ = sse::parse(&text);
}

/// JSON-looking input: valid documents of every dialect, cut and mutated.
fn json_like() -> impl Strategy<Value = Vec<u8>> {
    const SEEDS: &[&str] = &[
        r#"{"sessionId": "s", "messageId": "m", "token": "H", "seq": 3, "type": "token"}"#,
        r#"{"sessionId": "s", "messageId": "m", "end_of_stream": true, "usage": {"prompt_tokens": 1}}"#,
        r#"{"text": "t", "sessionId": "s", "messageId": "m", "metadata": {"a": "b"}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"uid":"u"}"#,
        r#"{"action": "message", "channel": "c", "message_id": "m", "message": "hi"}"#,
        r#"{"type": "done", "data": {"success": true}, "timestamp": "2024-05-01T12:00:00.000Z"}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"Hi","tool_calls":[{"index":0}]}}]}"#,
    ];
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..6),
    )
        .prop_map(|(seed, edits)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        })
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

fn normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        decode_everything(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_json(bytes in json_like()) {
        decode_everything(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_strings(text in hostile_text()) {
        decode_everything(text.as_bytes());
    }

    #[test]
    fn envelopes_round_trip_through_the_canonical_form(env in envelope()) {
        let json = seed000::encode_envelope(&env, seed000::Mode::Canonical);
        let json = json.unwrap_or_else(|| panic!("canonical encoding refused {env:?}"));
        prop_assert!(json.is_ascii(), "{}", json);
        prop_assert!(!json.contains('\n'), "{}", json);
        let back = seed000::decode_envelope(json.as_bytes()).map(|d| d.into_envelope(0));
        prop_assert_eq!(back.ok(), Some(env));
    }

    #[test]
    fn requests_round_trip_through_every_request_form(req in request()) {
        let canonical = seed000::encode_request(&req);
        prop_assert_eq!(seed000::decode_request(canonical.as_bytes()).ok(), Some(req.clone()));
        // A queue several kinds of client publish to tells the forms apart by field names.
        prop_assert_eq!(decode_request(canonical.as_bytes()).ok(), Some(req.clone()));

        let s4 = seed004::encode_request(&req);
        let back = seed004::decode_request(s4.as_bytes());
        let back = back.unwrap_or_else(|e| panic!("{e}: {s4}"));
        prop_assert_eq!(&back.key, &req.key);
        prop_assert_eq!(back.last_user_text(), req.last_user_text());

        let s3 = seed003::encode_request(&req);
        let back = seed003::decode_request(s3.as_bytes());
        let back = back.unwrap_or_else(|e| panic!("{e}: {s3}"));
        prop_assert_eq!(&back.messages, &req.messages);
        prop_assert_eq!(&*back.key.session_id, &*req.key.session_id);
    }

    #[test]
    fn one_frame_renders_as_exactly_one_sse_event(data in hostile_text(), id in prop::option::of(any::<u64>())) {
        let mut frame = Frame::data(data.as_str());
        frame.id = id;
        let events = sse::parse(&sse::render(&frame));
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(&events[0].data, &normalized(&data));
        prop_assert_eq!(events[0].id.clone(), id.map(|i| i.to_string()));
    }

    #[test]
    fn no_dialect_lets_a_token_inject_an_event(text in hostile_text(), key in key()) {
        for transport in transports() {
            let mut enc = transport.encoder(&key);
            let mut frames = Vec::new();
            enc.open(&mut frames);
            let opened = frames.len();
            let env = TokenEnvelope::new(key.clone(), 1, 0, StreamEvent::token(text.as_str()));
            enc.encode(&ClientEvent::Envelope(Arc::new(env)), &mut frames);
            enc.encode(&ClientEvent::Fault(Fault::Unavailable(text.clone())), &mut frames);
            let body: String = frames.iter().map(sse::render).collect();
            let events = sse::parse(&body);
            prop_assert_eq!(events.len(), frames.len(), "{}: {:?}", transport.name(), body);
            for (frame, event) in frames.iter().zip(&events) {
                prop_assert_eq!(&event.data, &normalized(&frame.data));
                prop_assert_eq!(event.event.as_deref(), frame.event.as_deref());
            }
            if transport.name() == seed001::Seed001Sse.name() {
                // The token comes back whole, newlines and all, from the one frame it made.
                let token = seed001::parse_data(&events[opened].data).ok();
                prop_assert_eq!(token, Some(seed001::Seed001Frame::Token(text.clone())));
            }
        }
    }
}

#[test]
fn a_token_holding_blank_lines_and_data_fields_stays_one_event() {
    let key = StreamKey::new("s", "m");
    let env = TokenEnvelope::new(
        key.clone(),
        1,
        7,
        StreamEvent::token("a\n\ndata: evil\n\nb"),
    );
    let mut frames = Vec::new();
    seed001::Seed001Sse
        .encoder(&key)
        .encode(&ClientEvent::Envelope(Arc::new(env)), &mut frames);
    let body: String = frames.iter().map(sse::render).collect();
    assert_eq!(
        body,
        "id: 7\ndata: {\"token\": \"a\\n\\ndata: evil\\n\\nb\"}\n\n"
    );
    let events = sse::parse(&body);
    assert_eq!(events.len(), 1, "{body:?}");
    assert!(!events.iter().any(|e| e.data == "evil"));

    // Rendering raw text with the same content (no dialect does, but adapters may) splits
    // it into data lines of one event, never into two events.
    let raw = sse::render(&Frame::data("a\n\ndata: evil\n\nb"));
    assert_eq!(
        raw,
        "data: a\ndata: \ndata: data: evil\ndata: \ndata: b\n\n"
    );
    assert_eq!(sse::parse(&raw).len(), 1);
}

/// `depth` nested arrays or objects, as text.
fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    for depth in [200, 10_000, 200_000] {
        let arrays = nested(depth, "[", "]");
        let objects = nested(depth, "{\"a\":", "}");
        let in_field =
            format!(r#"{{"sessionId": "s", "messageId": "m", "text": "t", "metadata": {arrays}}}"#);
        let in_usage = format!(
            r#"{{"sessionId": "s", "messageId": "m", "end_of_stream": true, "usage": {objects}}}"#
        );
        for body in [&arrays, &objects, &in_field, &in_usage] {
            decode_everything(body.as_bytes());
            assert!(seed000::decode_request(body.as_bytes()).is_err());
            assert!(seed000::decode_envelope(body.as_bytes()).is_err());
            assert!(decode_request(body.as_bytes()).is_err());
            assert!(openai::parse_data(body).is_err() || depth < 128);
        }
    }
}

#[test]
fn invalid_utf8_inside_json_strings_is_a_decode_error() {
    for bad in [
        &b"\xff"[..],
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80",
    ] {
        let mut env = br#"{"sessionId": "s", "messageId": "m", "token": ""#.to_vec();
        env.extend_from_slice(bad);
        env.extend_from_slice(br#""}"#);
        assert!(seed000::decode_envelope(&env).is_err(), "{env:?}");
        let mut req = br#"{"sessionId": "s", "messageId": "m", "text": ""#.to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(br#""}"#);
        assert!(seed000::decode_request(&req).is_err(), "{req:?}");
        assert!(decode_request(&req).is_err(), "{req:?}");
    }
    // A lone surrogate escape is not a character either.
    let lone = br#"{"sessionId": "s", "messageId": "m", "token": "\ud800"}"#;
    assert!(seed000::decode_envelope(lone).is_err());
    // A surrogate pair is one character.
    let pair = br#"{"sessionId": "s", "messageId": "m", "token": "\ud83d\ude00"}"#;
    let env = seed000::decode_envelope(pair).map(|d| d.into_envelope(0).event);
    assert_eq!(env.ok(), Some(StreamEvent::token("😀")));
}

#[test]
fn huge_numbers_and_attempt_zero_are_refused() {
    for body in [
        r#"{"sessionId": "s", "messageId": "m", "token": "x", "seq": 18446744073709551616}"#,
        r#"{"sessionId": "s", "messageId": "m", "token": "x", "seq": -1}"#,
        r#"{"sessionId": "s", "messageId": "m", "token": "x", "attempt": 0}"#,
        r#"{"sessionId": "s", "messageId": "m", "token": "x", "attempt": 4294967296}"#,
        r#"{"sessionId": "s", "messageId": "m", "token": "x", "seq": 1e400}"#,
    ] {
        assert!(seed000::decode_envelope(body.as_bytes()).is_err(), "{body}");
    }
    let req = r#"{"sessionId": "s", "messageId": "m", "text": "t", "max_tokens": 99999999999}"#;
    assert!(seed000::decode_request(req.as_bytes()).is_err());
}

/// An OpenAI-compatible server whose bytes arrive cut in the middle of UTF-8 characters:
/// the backend must put the characters together again, never emit U+FFFD or garble.
#[cfg(feature = "openai")]
mod utf8_split_across_chunks {
    use std::time::Duration;

    use chatstream_core::backend::{OpenAiBackend, OpenAiConfig};
    use chatstream_core::{ChatRequest, Conversation, LlmBackend, LlmEvent, StreamKey};
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LIMIT: Duration = Duration::from_secs(20);

    /// Serves one streamed answer made of `tokens`, writing the response in pieces of
    /// `piece` bytes (so multi-byte characters, JSON escapes and `data:` lines are cut).
    async fn serve_cut(tokens: &'static [&'static str], piece: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("test setup");
        let addr = listener.local_addr().expect("test setup");
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            // Read the request head and body (Content-Length).
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = socket.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let mut body = Vec::new();
            for t in tokens {
                let chunk = serde_json::json!({
                    "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]
                });
                body.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
            }
            let last = serde_json::json!({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            });
            body.extend_from_slice(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes());
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for part in body.chunks(piece) {
                if socket.write_all(part).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
                // Give each piece its own TCP segment and its own read on the other side.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        format!("http://{addr}/v1")
    }

    async fn answer(base_url: String) -> String {
        let config = OpenAiConfig::new(base_url, "m").with_idle_timeout(Duration::from_secs(10));
        let backend = OpenAiBackend::new(config).expect("test setup");
        let request = ChatRequest::new(StreamKey::new("s", "m"), "hi");
        let stream =
            tokio::time::timeout(LIMIT, backend.stream(&request, &Conversation::empty("c")))
                .await
                .expect("stream() must not hang")
                .expect("the answer starts");
        let events: Vec<_> = tokio::time::timeout(LIMIT, stream.collect::<Vec<_>>())
            .await
            .expect("the answer ends");
        let mut text = String::new();
        for event in events {
            match event {
                Ok(LlmEvent::TextDelta(t)) => text.push_str(&t),
                Ok(_) => {}
                Err(e) => panic!("the answer failed: {e}"),
            }
        }
        text
    }

    #[tokio::test]
    async fn characters_cut_between_network_reads_arrive_whole() {
        const TOKENS: &[&str] = &[
            "h\u{e9}",
            "llo ",
            "\u{1f600}",
            "\u{20ac}\u{4e2d}",
            " \u{10ffff}!",
        ];
        let expected: String = TOKENS.concat();
        for piece in [1, 3, 7] {
            let got = answer(serve_cut(TOKENS, piece).await).await;
            assert_eq!(got, expected, "pieces of {piece} bytes");
            assert!(!got.contains('\u{fffd}'));
        }
    }
}
