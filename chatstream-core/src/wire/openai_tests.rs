use std::sync::Arc;

use super::*;
use crate::{Error, Fault, Status};

fn transport(include_usage: bool) -> OpenAiChunks {
    OpenAiChunks::new(OpenAiOptions {
        id: Some("chatcmpl-123".into()),
        model: "m".into(),
        created: Some(1_700_000_000),
        include_usage,
    })
}

fn run(t: &OpenAiChunks, events: &[ClientEvent]) -> Vec<Frame> {
    let mut enc = t.encoder(&StreamKey::new("s", "msg-1"));
    let mut out = Vec::new();
    events.iter().for_each(|e| enc.encode(e, &mut out));
    out
}

fn ev(seq: u64, event: StreamEvent) -> ClientEvent {
    ClientEvent::Envelope(Arc::new(TokenEnvelope::new(
        StreamKey::new("s", "msg-1"),
        1,
        seq,
        event,
    )))
}

const HEAD: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":"#;

#[test]
fn chunks_are_byte_exact() {
    let usage = Usage {
        prompt_tokens: 5,
        completion_tokens: 2,
        total_tokens: 7,
    };
    let frames = run(
        &transport(false),
        &[
            ev(0, StreamEvent::status(Status::Started)),
            ev(1, StreamEvent::token("Hé")),
            ev(
                2,
                StreamEvent::End {
                    finish_reason: FinishReason::Stop,
                    usage: Some(usage),
                },
            ),
            ev(3, StreamEvent::token("late")),
        ],
    );
    assert_eq!(
        frames,
        vec![
            Frame::data(format!(r#"{HEAD}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#)).with_id(1),
            Frame::data(format!(r#"{HEAD}[{{"index":0,"delta":{{"content":"Hé"}},"finish_reason":null}}]}}"#)).with_id(1),
            Frame::data(format!(r#"{HEAD}[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#)).with_id(2),
            Frame::data("[DONE]").with_id(2),
        ]
    );
}

#[test]
fn include_usage_adds_null_usage_and_a_usage_chunk() {
    let usage = Usage {
        prompt_tokens: 5,
        completion_tokens: 2,
        total_tokens: 7,
    };
    let frames = run(
        &transport(true),
        &[ev(
            0,
            StreamEvent::End {
                finish_reason: FinishReason::Cancelled,
                usage: Some(usage),
            },
        )],
    );
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(
        data,
        vec![
            format!(r#"{HEAD}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}],"usage":null}}"#).as_str(),
            &format!(r#"{HEAD}[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],"usage":null}}"#),
            &format!(r#"{HEAD}[],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#),
            "[DONE]",
        ]
    );
    let parsed = parse_data(data[2]).ok();
    assert_eq!(
        parsed,
        Some(OpenAiData::Chunk(ChunkDelta {
            id: Some("chatcmpl-123".into()),
            usage: Some(usage),
            ..ChunkDelta::default()
        }))
    );
}

#[test]
fn errors_resets_and_faults() {
    let frames = run(
        &transport(false),
        &[
            ev(0, StreamEvent::token("a")),
            ev(
                1,
                StreamEvent::Error {
                    message: "boom".into(),
                },
            ),
            ev(
                2,
                StreamEvent::End {
                    finish_reason: FinishReason::Error,
                    usage: None,
                },
            ),
        ],
    );
    assert_eq!(
        frames[2..],
        [
            Frame::data(
                r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#
            )
            .with_id(1),
            Frame::data("[DONE]").with_id(2),
        ]
    );
    for event in [
        ClientEvent::Reset { attempt: 2 },
        ClientEvent::Fault(Fault::SlowConsumer),
    ] {
        let frames = run(&transport(false), &[event, ev(5, StreamEvent::token("x"))]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], Frame::data("[DONE]"));
        let code = match parse_data(&frames[0].data) {
            Ok(OpenAiData::Error(e)) => e.code,
            other => panic!("{other:?}"),
        };
        assert!(matches!(code.as_deref(), Some("reset" | "slow_consumer")));
    }
}

#[test]
fn default_id_names_the_message() {
    let t = OpenAiChunks::new(OpenAiOptions {
        model: "m".into(),
        ..Default::default()
    });
    let frames = run(&t, &[ev(0, StreamEvent::token("x"))]);
    assert!(frames[0]
        .data
        .starts_with(r#"{"id":"chatcmpl-msg-1","object":"chat.completion.chunk","created":"#));
}

#[test]
fn completion_object() {
    let meta = ChunkMeta {
        id: "chatcmpl-1".into(),
        model: "m".into(),
        created: 1,
    };
    let usage = Usage {
        prompt_tokens: 1,
        completion_tokens: 2,
        total_tokens: 3,
    };
    assert_eq!(
        completion_json(&meta, "Hi", &[], &FinishReason::Length, Some(usage)),
        concat!(
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"#,
            r#""message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}],"#,
            r#""usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        )
    );
}

#[test]
fn a_completion_that_called_a_tool_carries_the_call_and_null_content() {
    let meta = ChunkMeta {
        id: "chatcmpl-1".into(),
        model: "m".into(),
        created: 1,
    };
    let call = crate::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{}".into(),
    };
    assert_eq!(
        completion_json(&meta, "", &[call], &FinishReason::ToolCalls, None),
        concat!(
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"#,
            r#""message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
        )
    );
}

#[test]
fn decoder_reads_what_servers_send() {
    // An OpenAI-style token chunk with logprobs and a system fingerprint.
    let chunk = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}"#;
    assert_eq!(
        parse_data(chunk).ok(),
        Some(OpenAiData::Chunk(ChunkDelta {
            id: Some("c".into()),
            content: Some("Hi".into()),
            ..Default::default()
        }))
    );
    let last = r#"{"choices":[{"index":0,"delta":{"content":null},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let d = match parse_data(last) {
        Ok(OpenAiData::Chunk(d)) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        d.finish_reason.as_deref().map(finish_reason_from_str),
        Some(FinishReason::ToolCalls)
    );
    assert_eq!(d.usage.map(|u| u.total_tokens), Some(7));
    assert_eq!(parse_data("[DONE]").ok(), Some(OpenAiData::Done));
    assert_eq!(
        parse_data(r#"{"error":{"message":"bad","type":"invalid_request_error","code":429}}"#).ok(),
        Some(OpenAiData::Error(ApiError {
            message: "bad".into(),
            kind: Some("invalid_request_error".into()),
            code: Some("429".into())
        }))
    );
    for bad in [
        "",
        "{}",
        "[DONE",
        r#"{"choices":"x"}"#,
        r#"{"choices":[{"delta":{"content":5}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":99999999999}}"#,
        r#"{"choices":[{"index":-1}]}"#,
    ] {
        assert!(
            matches!(parse_data(bad), Err(Error::Decode { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_tool_call_is_a_tool_calls_delta_numbered_from_zero() {
    let call = |id: &str| crate::ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    let frames = run(
        &transport(false),
        &[
            ev(
                0,
                StreamEvent::ToolCall {
                    call: call("call_1"),
                },
            ),
            ev(
                1,
                StreamEvent::ToolCall {
                    call: call("call_2"),
                },
            ),
            ev(
                2,
                StreamEvent::End {
                    finish_reason: FinishReason::ToolCalls,
                    usage: None,
                },
            ),
        ],
    );
    let data: Vec<&str> = frames.iter().map(|f| f.data.as_str()).collect();
    assert_eq!(
        data,
        [
            format!(
                r#"{HEAD}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#
            ),
            format!(
                r#"{HEAD}[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}}]}},"finish_reason":null}}]}}"#
            ),
            format!(
                r#"{HEAD}[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"id":"call_2","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}}]}},"finish_reason":null}}]}}"#
            ),
            format!(r#"{HEAD}[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}]}}"#),
            DONE.to_owned(),
        ]
    );
}
