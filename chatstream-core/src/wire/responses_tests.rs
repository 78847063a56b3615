use std::sync::Arc;

use super::*;
use crate::wire::sse;
use crate::{Fault, FinishReason, StreamEvent, StreamKey, TokenEnvelope, Usage};

fn header() -> ResponseHeader {
    ResponseHeader {
        id: "resp_1".into(),
        created_at: 1_700_000_000,
        model: "m".into(),
        store: true,
        ..Default::default()
    }
}

fn env(seq: u64, event: StreamEvent) -> ClientEvent {
    ClientEvent::Envelope(Arc::new(TokenEnvelope::new(
        StreamKey::new("resp_1", "resp_1"),
        1,
        seq,
        event,
    )))
}

fn end(finish_reason: FinishReason, usage: Option<Usage>) -> StreamEvent {
    StreamEvent::End {
        finish_reason,
        usage,
    }
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 3,
        completion_tokens: 2,
        total_tokens: 5,
    }
}

fn encode(header: ResponseHeader, after: Option<u64>, events: &[ClientEvent]) -> String {
    let transport = ResponsesEvents::new(ResponsesOptions {
        header: Arc::new(header),
        starting_after: after,
    });
    let mut encoder = transport.encoder(&StreamKey::new("resp_1", "resp_1"));
    let mut frames = Vec::new();
    encoder.open(&mut frames);
    for e in events {
        encoder.encode(e, &mut frames);
    }
    frames.iter().map(sse::render).collect()
}

fn answer() -> Vec<ClientEvent> {
    vec![
        env(0, StreamEvent::status(crate::Status::Started)),
        env(1, StreamEvent::token("Hel")),
        env(2, StreamEvent::token("lo")),
        env(3, end(FinishReason::Stop, Some(usage()))),
    ]
}

/// A two-token answer, event by event, following OpenAI's streaming event reference.
const ANSWER: &str = concat!(
    "id: 0\nevent: response.created\ndata: {\"type\":\"response.created\",\"response\":",
    r#"{"id":"resp_1","object":"response","created_at":1700000000,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"metadata":{},"model":"m","output":[],"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","usage":null,"user":null}"#,
    ",\"sequence_number\":0}\n\n",
    "id: 1\nevent: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"response\":",
    r#"{"id":"resp_1","object":"response","created_at":1700000000,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"metadata":{},"model":"m","output":[],"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","usage":null,"user":null}"#,
    ",\"sequence_number\":1}\n\n",
    "id: 20\nevent: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]},"sequence_number":20}"#,
    "\n\nid: 21\nevent: response.content_part.added\n",
    r#"data: {"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]},"sequence_number":21}"#,
    "\n\nid: 22\nevent: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel","logprobs":[],"sequence_number":22}"#,
    "\n\nid: 30\nevent: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"lo","logprobs":[],"sequence_number":30}"#,
    "\n\nid: 40\nevent: response.output_text.done\n",
    r#"data: {"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":"Hello","logprobs":[],"sequence_number":40}"#,
    "\n\nid: 41\nevent: response.content_part.done\n",
    r#"data: {"type":"response.content_part.done","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hello","annotations":[]},"sequence_number":41}"#,
    "\n\nid: 42\nevent: response.output_item.done\n",
    r#"data: {"type":"response.output_item.done","output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello","annotations":[]}]},"sequence_number":42}"#,
    "\n\nid: 43\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":",
    r#"{"id":"resp_1","object":"response","created_at":1700000000,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"metadata":{},"model":"m","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":5},"user":null}"#,
    ",\"sequence_number\":43}\n\n",
);

#[test]
fn an_answer_is_the_reference_event_sequence_byte_for_byte() {
    assert_eq!(encode(header(), None, &answer()), ANSWER);
}

/// The events of an SSE text: (sequence number, type, data).
fn events(text: &str) -> Vec<(u64, String, String)> {
    sse::parse(text)
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
            let n = v["sequence_number"].as_u64().expect("sequence_number");
            (n, v["type"].as_str().expect("type").to_owned(), e.data)
        })
        .collect()
}

#[test]
fn sequence_numbers_grow_strictly_and_a_resume_skips_exactly_what_was_seen() {
    let whole = events(&encode(header(), None, &answer()));
    let numbers: Vec<u64> = whole.iter().map(|e| e.0).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for after in [0, 1, 5, 20, 21, 22, 29, 30, 42, 43, 100] {
        let resumed = events(&encode(header(), Some(after), &answer()));
        let expected: Vec<_> = whole.iter().filter(|e| e.0 > after).cloned().collect();
        assert_eq!(resumed, expected, "starting_after={after}");
    }
}

#[test]
fn the_token_limit_gives_response_incomplete_with_its_reason() {
    let events = events(&encode(
        header(),
        None,
        &[
            env(0, StreamEvent::token("Hi")),
            env(1, end(FinishReason::Length, Some(usage()))),
        ],
    ));
    let (n, kind, data) = events.last().expect("events");
    assert_eq!((n, kind.as_str()), (&23, "response.incomplete"));
    let v: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["response"]["status"], "incomplete");
    assert_eq!(
        v["response"]["incomplete_details"],
        serde_json::json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["response"]["output"][0]["status"], "incomplete");
    assert_eq!(v["response"]["output"][0]["content"][0]["text"], "Hi");
}

#[test]
fn a_cancelled_answer_keeps_its_partial_text_and_usage() {
    let events = events(&encode(
        header(),
        None,
        &[
            env(0, StreamEvent::token("Par")),
            env(1, end(FinishReason::Cancelled, Some(usage()))),
        ],
    ));
    let (_, kind, data) = events.last().expect("events");
    assert_eq!(kind, "response.incomplete");
    let v: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(v["response"]["status"], "cancelled");
    assert_eq!(v["response"]["output"][0]["content"][0]["text"], "Par");
    assert_eq!(v["response"]["usage"]["output_tokens"], 2);
    assert_eq!(v["response"]["incomplete_details"], serde_json::Value::Null);
}

#[test]
fn an_error_is_an_error_event_then_response_failed() {
    let text = encode(
        header(),
        None,
        &[
            env(
                0,
                StreamEvent::Error {
                    message: "boom".into(),
                },
            ),
            env(1, end(FinishReason::Error, None)),
        ],
    );
    let events = events(&text);
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    assert!(text.contains(r#"data: {"type":"error","code":"server_error","message":"boom","param":null,"sequence_number":10}"#), "{text}");
    let v: serde_json::Value = serde_json::from_str(&events[3].2).expect("json");
    assert_eq!(
        v["response"]["error"],
        serde_json::json!({"code": "server_error", "message": "boom"})
    );
    assert_eq!(v["response"]["output"], serde_json::json!([]));
}

#[test]
fn a_fault_or_a_reset_is_an_error_event_and_nothing_after() {
    for (event, code) in [
        (ClientEvent::Fault(Fault::HistoryLost), "history_lost"),
        (ClientEvent::Reset { attempt: 2 }, "reset"),
    ] {
        let evs = events(&encode(
            header(),
            None,
            &[
                env(0, StreamEvent::token("a")),
                event,
                env(1, end(FinishReason::Stop, None)),
            ],
        ));
        let (n, kind, data) = evs.last().expect("events");
        assert_eq!((*n, kind.as_str()), (13, "error"), "{evs:?}");
        assert!(data.contains(&format!("\"code\":\"{code}\"")), "{data}");
    }
}

#[test]
fn a_background_response_is_created_queued() {
    let h = ResponseHeader {
        background: true,
        ..header()
    };
    let evs = events(&encode(h, None, &[]));
    let v: serde_json::Value = serde_json::from_str(&evs[0].2).expect("json");
    assert_eq!(v["response"]["status"], "queued");
    assert_eq!(v["response"]["background"], true);
    let v: serde_json::Value = serde_json::from_str(&evs[1].2).expect("json");
    assert_eq!(v["response"]["status"], "in_progress");
}

#[test]
fn the_collector_and_the_object_agree_with_the_stream() {
    let mut collector = OutcomeCollector::default();
    let outcome = answer()
        .iter()
        .find_map(|e| collector.push(e))
        .expect("an outcome at the end");
    assert_eq!(outcome.status, ResponseStatus::Completed);
    assert_eq!(outcome.text, "Hello");
    let json = response_json(&header(), &ResponseView::finished(&outcome));
    assert!(ANSWER.contains(&json), "{json}");
}

#[test]
fn sequence_numbers_of_a_later_attempt_stay_above_the_first() {
    let first_attempt_max = sequence_number(u64::from(u32::MAX), EVENTS_PER_ENVELOPE - 1);
    assert!(sequence_number(TokenEnvelope::seq_base(2), 0) > first_attempt_max);
    assert!(
        sequence_number(TokenEnvelope::seq_base(2), 0) < 1 << 53,
        "exact in JavaScript"
    );
}

fn weather_call() -> crate::ToolCall {
    crate::ToolCall {
        id: "call_7".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    }
}

/// Some text, then a call of a client tool, then the end the worker sends after it.
fn call_answer() -> Vec<ClientEvent> {
    vec![
        env(0, StreamEvent::token("Let me check.")),
        env(
            1,
            StreamEvent::ToolCall {
                call: weather_call(),
            },
        ),
        env(2, end(FinishReason::ToolCalls, Some(usage()))),
    ]
}

/// The events of [`call_answer`] after the two opening ones: the message item closes when
/// the call comes, then the `function_call` item, whole (OpenAI's streaming event
/// reference: `response.output_item.added`, `response.function_call_arguments.delta` /
/// `.done`, `response.output_item.done`).
const CALL_ANSWER: &str = concat!(
    "id: 10\nevent: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]},"sequence_number":10}"#,
    "\n\nid: 11\nevent: response.content_part.added\n",
    r#"data: {"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]},"sequence_number":11}"#,
    "\n\nid: 12\nevent: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Let me check.","logprobs":[],"sequence_number":12}"#,
    "\n\nid: 20\nevent: response.output_text.done\n",
    r#"data: {"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":"Let me check.","logprobs":[],"sequence_number":20}"#,
    "\n\nid: 21\nevent: response.content_part.done\n",
    r#"data: {"type":"response.content_part.done","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Let me check.","annotations":[]},"sequence_number":21}"#,
    "\n\nid: 22\nevent: response.output_item.done\n",
    r#"data: {"type":"response.output_item.done","output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Let me check.","annotations":[]}]},"sequence_number":22}"#,
    "\n\nid: 23\nevent: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","output_index":1,"item":{"id":"fc_1_0","type":"function_call","status":"in_progress","arguments":"","call_id":"call_7","name":"get_weather"},"sequence_number":23}"#,
    "\n\nid: 24\nevent: response.function_call_arguments.delta\n",
    r#"data: {"type":"response.function_call_arguments.delta","item_id":"fc_1_0","output_index":1,"delta":"{\"city\":\"Paris\"}","sequence_number":24}"#,
    "\n\nid: 25\nevent: response.function_call_arguments.done\n",
    r#"data: {"type":"response.function_call_arguments.done","item_id":"fc_1_0","output_index":1,"name":"get_weather","arguments":"{\"city\":\"Paris\"}","sequence_number":25}"#,
    "\n\nid: 26\nevent: response.output_item.done\n",
    r#"data: {"type":"response.output_item.done","output_index":1,"item":{"id":"fc_1_0","type":"function_call","status":"completed","arguments":"{\"city\":\"Paris\"}","call_id":"call_7","name":"get_weather"},"sequence_number":26}"#,
    "\n\nid: 30\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":",
    r#"{"id":"resp_1","object":"response","created_at":1700000000,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"metadata":{},"model":"m","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Let me check.","annotations":[]}]},{"id":"fc_1_0","type":"function_call","status":"completed","arguments":"{\"city\":\"Paris\"}","call_id":"call_7","name":"get_weather"}],"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":5},"user":null}"#,
    ",\"sequence_number\":30}\n\n",
);

#[test]
fn a_tool_call_is_a_function_call_item_after_the_closed_message_byte_for_byte() {
    // The two opening events are those of every response (checked above).
    assert_eq!(encode(header(), Some(1), &call_answer()), CALL_ANSWER);
}

#[test]
fn a_resume_inside_a_tool_call_skips_exactly_what_was_seen() {
    let whole = events(&encode(header(), None, &call_answer()));
    let numbers: Vec<u64> = whole.iter().map(|e| e.0).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for after in [12, 22, 23, 24, 25, 26, 29] {
        let resumed = events(&encode(header(), Some(after), &call_answer()));
        let expected: Vec<_> = whole.iter().filter(|e| e.0 > after).cloned().collect();
        assert_eq!(resumed, expected, "starting_after={after}");
    }
}

#[test]
fn a_call_without_text_has_no_message_item_and_text_after_a_call_opens_a_new_one() {
    let only_call = [
        env(
            0,
            StreamEvent::ToolCall {
                call: weather_call(),
            },
        ),
        env(1, end(FinishReason::ToolCalls, None)),
    ];
    let evs = events(&encode(header(), None, &only_call));
    let kinds: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let done: serde_json::Value = serde_json::from_str(&evs[6].2).expect("json");
    let output = done["response"]["output"].as_array().expect("output");
    assert_eq!(output.len(), 1, "{output:?}");
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["call_id"], "call_7");

    let call_then_text = [
        env(
            0,
            StreamEvent::ToolCall {
                call: weather_call(),
            },
        ),
        env(1, StreamEvent::token("Done.")),
        env(2, end(FinishReason::Stop, None)),
    ];
    let evs = events(&encode(header(), None, &call_then_text));
    let done: serde_json::Value =
        serde_json::from_str(&evs.last().expect("events").2).expect("json");
    let output = done["response"]["output"].as_array().expect("output");
    let ids: Vec<&str> = output
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["fc_1_0", "msg_1_1"]);
    assert_eq!(output[1]["content"][0]["text"], "Done.");
}

#[test]
fn the_stored_object_of_a_call_agrees_with_the_stream() {
    let mut collector = OutcomeCollector::default();
    let outcome = call_answer()
        .iter()
        .find_map(|e| collector.push(e))
        .expect("an outcome at the end");
    assert_eq!(outcome.status, ResponseStatus::Completed);
    assert_eq!(outcome.finish_reason, FinishReason::ToolCalls);
    assert_eq!(outcome.tool_calls, [weather_call()]);
    let json = response_json(&header(), &ResponseView::finished(&outcome));
    assert!(CALL_ANSWER.contains(&json), "{json}");
}
