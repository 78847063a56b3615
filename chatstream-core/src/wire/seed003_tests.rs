use std::sync::Arc;

use super::*;
use crate::{Fault, FinishReason, Role, Status};

const UID: &str = "123e4567-e89b-12d3-a456-426614174000";

#[test]
fn key_message_form_from_the_document() {
    let doc = r#"{
     "key": "123e4567-e89b-12d3-a456-426614174000",
     "message": "What is the capital of France?"
   }"#;
    let req = decode_request(doc.as_bytes()).ok();
    assert_eq!(
        req,
        Some(ChatRequest::new(
            StreamKey::new(UID, UID),
            "What is the capital of France?"
        ))
    );
}

#[test]
fn openai_form_from_the_document_round_trips_through_go_bytes() {
    // What the document's pika example publishes (Python json.dumps of its dict).
    let pika = format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Tell me a joke."}}], "stream": true, "username": "alice", "uid": "{UID}"}}"#
    );
    let req = decode_request(pika.as_bytes());
    let req = match req {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(req.key, StreamKey::new(UID, UID));
    assert_eq!(req.model.as_deref(), Some("gpt-4o"));
    assert_eq!(req.user.as_deref(), Some("alice"));
    assert_eq!(req.messages, vec![ChatMessage::user("Tell me a joke.")]);
    assert_eq!(
        encode_request(&req),
        format!(
            r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"Tell me a joke."}}],"stream":true,"username":"alice","uid":"{UID}"}}"#
        )
    );
    assert_eq!(
        decode_request(encode_request(&req).as_bytes()).ok(),
        Some(req)
    );

    let mut full = ChatRequest::new(StreamKey::new("u", "u"), "<b>&</b>");
    full.messages.insert(0, ChatMessage::system("sys"));
    full.max_tokens = Some(64);
    assert_eq!(
        encode_request(&full),
        concat!(
            r#"{"model":"","messages":[{"role":"system","content":"sys"},"#,
            r#"{"role":"user","content":"\u003cb\u003e\u0026\u003c/b\u003e"}],"#,
            r#""stream":true,"max_tokens":64,"username":"","uid":"u"}"#
        )
    );
    assert_eq!(
        decode_request(encode_request(&full).as_bytes()).ok(),
        Some(full)
    );
}

#[test]
fn curl_body_without_uid_and_other_garbage_are_decode_errors() {
    let curl = r#"{
    "model": "gpt-4o",
    "messages": [
      { "role": "user", "content": "Tell me a short story about a brave knight." }
    ],
    "stream": true,
    "username": "alice"
  }"#;
    let cases: Vec<&[u8]> = vec![
        curl.as_bytes(),
        b"{}",
        br#"{"key": "k"}"#,
        br#"{"key": 1, "message": "m"}"#,
        br#"{"messages": [], "uid": "u"}"#,
        br#"{"messages": [{"role": "user"}], "uid": "u"}"#,
        br#"{"messages": [{"role": "user", "content": "x"}], "uid": "u", "max_tokens": -1}"#,
        br#"{"messages": [{"role": "user", "content": "x"}], "uid": "u", "stream": "yes"}"#,
        b"\x80\x81",
    ];
    for case in cases {
        assert!(
            matches!(decode_request(case), Err(Error::Decode { .. })),
            "{}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(response_queue(UID), format!("response_{UID}"));
    assert_eq!(Role::User.as_str(), "user");
}

fn env(seq: u64, event: StreamEvent) -> TokenEnvelope {
    TokenEnvelope::new(StreamKey::new(UID, UID), 1, seq, event)
}

#[test]
fn response_bodies_are_raw_text() {
    let token = response_body(&env(0, StreamEvent::token("Paris")));
    assert_eq!(
        token,
        Some(ResponseMessage {
            kind: ResponseKind::Token,
            body: b"Paris".to_vec(),
            content_type: "text/plain"
        })
    );
    let end = response_body(&env(
        1,
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None,
        },
    ));
    assert_eq!(
        end.as_ref().map(|m| (m.kind, m.body.len())),
        Some((ResponseKind::End, 0))
    );
    assert_eq!(
        response_body(&env(2, StreamEvent::status(Status::Started))),
        None
    );
    let err = response_body(&env(
        3,
        StreamEvent::Error {
            message: "boom".into(),
        },
    ));
    assert_eq!(
        err.map(|m| (m.kind.as_str(), m.body)),
        Some(("error", b"boom".to_vec()))
    );

    assert_eq!(
        decode_response(None, b"Paris").ok(),
        Some(StreamEvent::token("Paris"))
    );
    assert_eq!(
        decode_response(Some("end"), b"").ok(),
        Some(StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None
        })
    );
    assert_eq!(
        decode_response(Some("error"), b"x").ok(),
        Some(StreamEvent::Error {
            message: "x".into()
        })
    );
    assert!(matches!(
        decode_response(Some("what"), b""),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        decode_response(None, b"\xff"),
        Err(Error::Decode { .. })
    ));
}

fn run(events: &[ClientEvent]) -> Vec<Frame> {
    let mut enc = Seed003Sse.encoder(&StreamKey::new(UID, UID));
    let mut out = Vec::new();
    events.iter().for_each(|e| enc.encode(e, &mut out));
    out
}

fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
    ClientEvent::Envelope(Arc::new(env(seq, event)))
}

#[test]
fn sse_chunks_are_go_maps_with_sorted_keys() {
    let frames = run(&[
        ev(0, StreamEvent::status(Status::Started)),
        ev(1, StreamEvent::token("Hi")),
        ev(
            2,
            StreamEvent::End {
                finish_reason: FinishReason::Length,
                usage: None,
            },
        ),
        ev(3, StreamEvent::token("late")),
    ]);
    assert_eq!(
        frames,
        vec![
            Frame::data(format!(
                r#"{{"choices":[{{"delta":{{"content":"Hi"}},"finish_reason":null,"index":0}}],"id":"{UID}","object":"chat.completion.chunk"}}"#
            ))
            .with_id(1),
            Frame::data(format!(
                r#"{{"choices":[{{"delta":{{"content":""}},"finish_reason":"length","index":0}}],"id":"{UID}","object":"chat.completion.chunk"}}"#
            ))
            .with_id(2),
            Frame::data("[DONE]").with_id(2),
        ]
    );
}

#[test]
fn sse_errors_resets_and_faults_stop_the_stream() {
    let frames = run(&[
        ev(
            0,
            StreamEvent::Error {
                message: "rate limited".into(),
            },
        ),
        ev(
            1,
            StreamEvent::End {
                finish_reason: FinishReason::Error,
                usage: None,
            },
        ),
    ]);
    assert_eq!(
        frames,
        vec![
            Frame::data(r#"{"error":{"message":"rate limited"}}"#).with_id(0),
            Frame::data("[DONE]").with_id(1),
        ]
    );
    let frames = run(&[
        ClientEvent::Reset { attempt: 2 },
        ev(9, StreamEvent::token("x")),
    ]);
    assert_eq!(frames.len(), 2);
    assert!(frames[0]
        .data
        .starts_with(r#"{"error":{"code":"reset","message":"#));
    let frames = run(&[ClientEvent::Fault(Fault::ShuttingDown)]);
    assert_eq!(
        frames,
        vec![
            Frame::data(r#"{"error":{"code":"shutting_down","message":"server shutting down"}}"#),
            Frame::data("[DONE]"),
        ]
    );
}

#[test]
fn a_tool_call_is_a_json_message_of_its_own_type() {
    let call = crate::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{}".into(),
    };
    let msg = response_body(&env(2, StreamEvent::ToolCall { call: call.clone() })).expect("sent");
    assert_eq!(msg.kind.as_str(), "tool_call");
    assert_eq!(msg.content_type, "application/json");
    assert_eq!(
        decode_response(Some("tool_call"), &msg.body).expect("decodes"),
        StreamEvent::ToolCall { call }
    );
    assert!(decode_response(Some("tool_call"), b"not json").is_err());
}
