use super::*;

fn env(seq: u64, event: StreamEvent) -> TokenEnvelope {
    TokenEnvelope::new(StreamKey::new("s", "m"), 1, seq, event)
}

#[test]
fn seed000_vectors_are_byte_exact() {
    assert_eq!(
        encode_envelope(&env(0, StreamEvent::token("H")), Mode::Seed000).as_deref(),
        Some(r#"{"sessionId": "s", "messageId": "m", "token": "H"}"#)
    );
    let end = StreamEvent::End {
        finish_reason: FinishReason::Stop,
        usage: None,
    };
    assert_eq!(
        encode_envelope(&env(5, end), Mode::Seed000).as_deref(),
        Some(r#"{"sessionId": "s", "messageId": "m", "end_of_stream": true}"#)
    );
    assert_eq!(
        encode_envelope(&env(1, StreamEvent::status(Status::Started)), Mode::Seed000),
        None
    );
    let err = StreamEvent::Error {
        message: "x".into(),
    };
    assert_eq!(encode_envelope(&env(1, err), Mode::Seed000), None);
}

#[test]
fn canonical_appends_optional_fields() {
    assert_eq!(
        encode_envelope(&env(3, StreamEvent::token("é")), Mode::Canonical).as_deref(),
        Some(
            r#"{"sessionId": "s", "messageId": "m", "token": "\u00e9", "seq": 3, "type": "token"}"#
        )
    );
    let usage = Usage {
        prompt_tokens: 1,
        completion_tokens: 2,
        total_tokens: 3,
    };
    let mut e = env(
        9,
        StreamEvent::End {
            finish_reason: FinishReason::Length,
            usage: Some(usage),
        },
    );
    e.attempt = 2;
    assert_eq!(
        encode_envelope(&e, Mode::Canonical).as_deref(),
        Some(concat!(
            r#"{"sessionId": "s", "messageId": "m", "end_of_stream": true, "seq": 9, "attempt": 2, "#,
            r#""type": "end", "finish_reason": "length", "usage": {"prompt_tokens": 1, "#,
            r#""completion_tokens": 2, "total_tokens": 3}}"#
        ))
    );
    let status = StreamEvent::Status {
        status: Status::Processing,
        conversation_id: Some("thread_abc123".into()),
        detail: Some("weather".into()),
    };
    assert_eq!(
        encode_envelope(&env(1, status), Mode::Canonical).as_deref(),
        Some(concat!(
            r#"{"sessionId": "s", "messageId": "m", "seq": 1, "type": "status", "#,
            r#""status": "processing", "thread_id": "thread_abc123", "detail": "weather"}"#
        ))
    );
    assert_eq!(
        encode_envelope(
            &env(
                2,
                StreamEvent::Error {
                    message: "boom".into()
                }
            ),
            Mode::Canonical
        )
        .as_deref(),
        Some(r#"{"sessionId": "s", "messageId": "m", "seq": 2, "type": "error", "error": "boom"}"#)
    );
}

#[test]
fn every_event_round_trips_in_canonical_form() {
    let events = [
        StreamEvent::token("a\n\"b\" 😀"),
        StreamEvent::status(Status::Responding),
        StreamEvent::Status {
            status: Status::Started,
            conversation_id: Some("t".into()),
            detail: Some("d".into()),
        },
        StreamEvent::Error {
            message: "m".into(),
        },
        StreamEvent::End {
            finish_reason: FinishReason::Cancelled,
            usage: None,
        },
        StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: Some(Usage::default()),
        },
    ];
    for (i, event) in events.into_iter().enumerate() {
        let mut e = env(i as u64 + TokenEnvelope::seq_base(3), event);
        e.attempt = 3;
        let json = encode_envelope(&e, Mode::Canonical).unwrap_or_default();
        let decoded = decode_envelope(json.as_bytes()).map(|d| d.into_envelope(0));
        assert_eq!(decoded.ok(), Some(e), "{json}");
    }
}

#[test]
fn plain_seed000_decodes_with_defaults_and_any_spacing() {
    let d = decode_envelope(br#"{"sessionId":"s","messageId":"m","token":"H"}"#);
    let d = d.ok();
    assert_eq!(d.as_ref().map(|d| (d.attempt, d.seq)), Some((1, None)));
    assert_eq!(
        d.map(|d| d.into_envelope(7)),
        Some(env(7, StreamEvent::token("H")))
    );
    let end =
        decode_envelope(b"{ \"end_of_stream\" : true ,\n\"messageId\":\"m\",\"sessionId\":\"s\"}");
    assert_eq!(
        end.ok().map(|d| d.event),
        Some(StreamEvent::End {
            finish_reason: FinishReason::Stop,
            usage: None
        })
    );
}

#[test]
fn malformed_envelopes_are_decode_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        br#"{"sessionId": "s", "messageId": "m"}"#,
        br#"{"sessionId": "s", "messageId": "m", "end_of_stream": false}"#,
        br#"{"sessionId": "s", "token": "H"}"#,
        br#"{"sessionId": 1, "messageId": "m", "token": "H"}"#,
        br#"{"sessionId": "s", "messageId": "m", "token": 5}"#,
        br#"{"sessionId": "s", "messageId": "m", "token": "H", "seq": 18446744073709551616}"#,
        br#"{"sessionId": "s", "messageId": "m", "token": "H", "seq": -1}"#,
        br#"{"sessionId": "s", "messageId": "m", "token": "H", "attempt": 0}"#,
        br#"{"sessionId": "s", "messageId": "m", "token": "H", "attempt": 4294967296}"#,
        br#"{"sessionId": "s", "messageId": "m", "type": "telepathy"}"#,
        br#"{"sessionId": "s", "messageId": "m", "type": "token"}"#,
        br#"{"sessionId": "s", "messageId": "m", "type": "status", "status": "sleeping"}"#,
        br#"{"sessionId": "s", "messageId": "m", "type": "end", "finish_reason": "bored"}"#,
        b"{\"sessionId\": \"\xff\", \"messageId\": \"m\", \"token\": \"H\"}",
    ];
    for case in cases {
        match decode_envelope(case) {
            Err(Error::Decode { what, .. }) => assert_eq!(what, WHAT),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(case)),
        }
    }
}

#[test]
fn seed000_request_is_byte_exact_and_round_trips() {
    let req = ChatRequest::new(StreamKey::new("sess-1", "msg-1"), "Hi, ünïcode");
    let json = encode_request(&req);
    assert_eq!(
        json,
        r#"{"text": "Hi, \u00fcn\u00efcode", "sessionId": "sess-1", "messageId": "msg-1"}"#
    );
    assert_eq!(decode_request(json.as_bytes()).ok(), Some(req));

    let mut rich = ChatRequest::new(StreamKey::new("s", "m"), "q");
    rich.messages.insert(0, ChatMessage::system("be brief"));
    rich.model = Some("gpt".into());
    rich.max_tokens = Some(10);
    rich.metadata
        .insert(crate::meta::REPLY_TO.into(), "gw-1".into());
    let json = encode_request(&rich);
    assert!(json.starts_with(r#"{"text": "q", "sessionId": "s", "messageId": "m", "messages": ["#));
    assert_eq!(decode_request(json.as_bytes()).ok(), Some(rich));
}

#[test]
fn malformed_requests_are_decode_errors() {
    let cases: &[&[u8]] = &[
        b"{}",
        br#"{"sessionId": "s", "messageId": "m"}"#,
        br#"{"text": 1, "sessionId": "s", "messageId": "m"}"#,
        br#"{"text": "t", "sessionId": "s"}"#,
        br#"{"sessionId": "s", "messageId": "m", "messages": []}"#,
        br#"{"sessionId": "s", "messageId": "m", "messages": [{"role": "alien", "content": "x"}]}"#,
        br#"{"text": "t", "sessionId": "s", "messageId": "m", "max_tokens": 99999999999}"#,
        b"\xfe\xff",
    ];
    for case in cases {
        assert!(
            matches!(decode_request(case), Err(Error::Decode { .. })),
            "{}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn a_tool_call_is_canonical_only_and_round_trips() {
    let call = crate::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    };
    let e = env(4, StreamEvent::ToolCall { call });
    assert_eq!(encode_envelope(&e, Mode::Seed000), None);
    let line = encode_envelope(&e, Mode::Canonical).expect("canonical");
    assert_eq!(
        line,
        r#"{"sessionId": "s", "messageId": "m", "seq": 4, "type": "tool_call", "tool_call": {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}}"#
    );
    let back = decode_envelope(line.as_bytes()).expect("decodes");
    assert_eq!(back.into_envelope(0), e);
    let missing = br#"{"sessionId": "s", "messageId": "m", "type": "tool_call"}"#;
    assert!(decode_envelope(missing).is_err());
}
