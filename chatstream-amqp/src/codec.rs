//! Message bodies and headers: request bodies, envelope batches, seed 003 response messages.

use chatstream_core::wire::{seed000, seed003, seed004};
use chatstream_core::{ChatRequest, FinishReason, Result, StreamEvent, TokenEnvelope};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::RequestFormat;

/// Content type of one JSON document (a request, one canonical envelope).
pub const CONTENT_JSON: &str = "application/json";
/// Content type of newline-delimited canonical envelopes (one broker message, many
/// envelopes).
pub const CONTENT_NDJSON: &str = "application/x-ndjson";

/// Header: why a request was dead-lettered.
pub const HEADER_REASON: &str = "x-chatstream-reason";
/// Header: delivery attempt of a request (classic queues) or of an envelope (seed 003).
pub const HEADER_ATTEMPT: &str = "x-chatstream-attempt";
/// Header: the queue a dead-lettered request came from.
pub const HEADER_QUEUE: &str = "x-chatstream-queue";
/// Header: the finish reason of a seed 003 end message (`stop`, `cancelled`, …), which the
/// seed's body format has no room for.
pub const HEADER_FINISH: &str = "x-chatstream-finish-reason";
/// Header: the usage of a seed 003 end message (`{"prompt_tokens", "completion_tokens",
/// "total_tokens"}` as JSON), when the worker reported one (always for a cancelled answer).
pub const HEADER_USAGE: &str = "x-chatstream-usage";
/// Header: the client's tools of a request whose body format has no metadata (seed 003 and
/// 004 bodies), as the JSON of `metadata["tools"]` ([`chatstream_core::meta::TOOLS`]).
pub const HEADER_TOOLS: &str = "x-chatstream-tools";
/// Header set by RabbitMQ on quorum-queue redeliveries.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// Encodes a request body in `format`.
pub(crate) fn encode_request(request: &ChatRequest, format: RequestFormat) -> String {
    match format {
        RequestFormat::Canonical => seed000::encode_request(request),
        RequestFormat::Seed003 => seed003::encode_request(request),
        RequestFormat::Seed004 => seed004::encode_request(request),
    }
}

/// Newline-delimited canonical envelopes.
pub(crate) fn encode_ndjson<'a>(envs: impl IntoIterator<Item = &'a TokenEnvelope>) -> Vec<u8> {
    let mut out = Vec::new();
    for env in envs {
        if let Some(line) = seed000::encode_envelope(env, seed000::Mode::Canonical) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// Decodes a token message: newline-delimited envelopes, or one JSON envelope (seed 000
/// peers). Blank lines are skipped.
pub(crate) fn decode_envelopes(body: &[u8]) -> Vec<Result<seed000::DecodedEnvelope>> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(seed000::decode_envelope)
        .collect()
}

/// Builds a field table from pairs.
pub(crate) fn table(pairs: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k), v);
    }
    t
}

/// A long-string header value.
pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// When the request was published, in milliseconds since the Unix epoch: the header
/// RabbitMQ's `set_header_timestamp` message interceptor sets.
pub(crate) const HEADER_TIMESTAMP_MS: &str = "timestamp_in_ms";

/// Reads an integer header, whatever integer type the writer chose.
pub(crate) fn header_u64(headers: Option<&FieldTable>, name: &str) -> Option<u64> {
    let v = headers?.inner().get(name)?;
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// Reads a text header.
pub(crate) fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The reason RabbitMQ itself dead-lettered a message (`x-death[0].reason`), if any.
pub(crate) fn death_reason(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    header_text(Some(first), "reason").map(|r| format!("broker dead-lettered: {r}"))
}

/// The seed 003 response message for a run of envelopes of one stream: consecutive tokens
/// are concatenated (the original's clients print bodies as they come, so this is the same
/// text), an error or the end is a message of its own; statuses are not sent.
pub(crate) fn seed003_messages(batch: &[TokenEnvelope], pack: bool) -> Vec<Seed003Message> {
    let mut out: Vec<Seed003Message> = Vec::new();
    for env in batch {
        let Some(msg) = seed003::response_body(env) else {
            continue;
        };
        if pack && msg.kind == seed003::ResponseKind::Token {
            if let Some(last) = out.last_mut() {
                if last.attempt == env.attempt && last.msg.kind == seed003::ResponseKind::Token {
                    last.msg.body.extend_from_slice(&msg.body);
                    continue;
                }
            }
        }
        let (finish, usage) = match &env.event {
            StreamEvent::End {
                finish_reason,
                usage,
            } => (Some(finish_reason.clone()), *usage),
            _ => (None, None),
        };
        out.push(Seed003Message {
            attempt: env.attempt,
            finish,
            usage,
            msg,
        });
    }
    out
}

/// One `response_{uid}` message and what its headers carry.
#[derive(Debug)]
pub(crate) struct Seed003Message {
    pub(crate) attempt: u32,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) usage: Option<chatstream_core::Usage>,
    pub(crate) msg: seed003::ResponseMessage,
}

/// Reads a `response_{uid}` message: the seed's body and `type`, with the finish reason from
/// [`HEADER_FINISH`] and the usage from [`HEADER_USAGE`] when present.
pub(crate) fn decode_seed003(
    kind: Option<&str>,
    headers: Option<&FieldTable>,
    body: &[u8],
) -> Result<StreamEvent> {
    let mut event = seed003::decode_response(kind, body)?;
    if let StreamEvent::End {
        finish_reason,
        usage,
    } = &mut event
    {
        if let Some(reason) = header_text(headers, HEADER_FINISH) {
            let quoted = serde_json::Value::String(reason);
            if let Ok(r) = serde_json::from_value::<FinishReason>(quoted) {
                *finish_reason = r;
            }
        }
        if let Some(json) = header_text(headers, HEADER_USAGE) {
            *usage = serde_json::from_str(&json).ok();
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use chatstream_core::wire::decode_request;
    use chatstream_core::StreamKey;

    use super::*;

    fn env(seq: u64, event: StreamEvent) -> TokenEnvelope {
        TokenEnvelope::new(StreamKey::new("s", "m"), 1, seq, event)
    }

    #[test]
    fn every_request_dialect_decodes() {
        let s0 = br#"{"text": "hi", "sessionId": "s", "messageId": "m"}"#;
        assert_eq!(
            decode_request(s0).expect("seed 000").key,
            StreamKey::new("s", "m")
        );
        let s3 = br#"{"key": "k", "message": "hi"}"#;
        assert_eq!(
            decode_request(s3).expect("seed 003").key,
            StreamKey::new("k", "k")
        );
        let s3b = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"username":"a","uid":"u"}"#;
        assert_eq!(
            decode_request(s3b).expect("seed 003 b").user.as_deref(),
            Some("a")
        );
        let s4 = br#"{"channel": "c", "message_id": "m1", "message": "hi"}"#;
        assert_eq!(
            decode_request(s4).expect("seed 004").key,
            StreamKey::new("c", "m1")
        );
        let req = ChatRequest::new(StreamKey::new("a", "b"), "x");
        for format in [RequestFormat::Canonical, RequestFormat::Seed004] {
            let body = encode_request(&req, format);
            assert_eq!(
                decode_request(body.as_bytes()).expect("round trip").key,
                req.key
            );
        }
        for bad in [&b"{\"this is\": not json"[..], b"[]", b"{}", b"\xff"] {
            let e = decode_request(bad).expect_err("malformed");
            assert!(e.to_string().contains("decode"), "{e}");
        }
    }

    #[test]
    fn a_batch_is_one_body_of_many_envelopes() {
        let batch = vec![
            env(0, StreamEvent::token("a\nb")),
            env(1, StreamEvent::token("c")),
            env(
                2,
                StreamEvent::End {
                    finish_reason: FinishReason::Stop,
                    usage: None,
                },
            ),
        ];
        let body = encode_ndjson(&batch);
        let back: Vec<TokenEnvelope> = decode_envelopes(&body)
            .into_iter()
            .map(|d| d.expect("decodes").into_envelope(99))
            .collect();
        assert_eq!(back, batch);
        let single = br#"{"sessionId": "s", "messageId": "m", "token": "x"}"#;
        let one = decode_envelopes(single);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_ref().expect("seed 000").seq, None);
    }

    #[test]
    fn seed003_runs_merge_tokens_but_not_the_end() {
        let batch = vec![
            env(0, StreamEvent::status(chatstream_core::Status::Started)),
            env(1, StreamEvent::token("Hel")),
            env(2, StreamEvent::token("lo")),
            env(
                3,
                StreamEvent::End {
                    finish_reason: FinishReason::Stop,
                    usage: None,
                },
            ),
        ];
        let packed = seed003_messages(&batch, true);
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0].msg.body, b"Hello");
        assert_eq!(packed[1].msg.kind, seed003::ResponseKind::End);
        assert_eq!(packed[1].finish, Some(FinishReason::Stop));
        let headers = table([
            (HEADER_FINISH, text("cancelled")),
            (
                HEADER_USAGE,
                text(r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}"#),
            ),
        ]);
        let end = decode_seed003(Some("end"), Some(&headers), b"").expect("end");
        assert_eq!(
            end,
            StreamEvent::End {
                finish_reason: FinishReason::Cancelled,
                usage: Some(chatstream_core::Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    total_tokens: 5
                }),
            }
        );
        assert_eq!(seed003_messages(&batch, false).len(), 3);
    }

    #[test]
    fn integer_headers_of_any_width_read() {
        let t = table([
            ("a", AMQPValue::LongLongInt(3)),
            ("b", AMQPValue::ShortShortUInt(4)),
            ("c", text("5")),
            ("d", AMQPValue::LongInt(-1)),
        ]);
        assert_eq!(header_u64(Some(&t), "a"), Some(3));
        assert_eq!(header_u64(Some(&t), "b"), Some(4));
        assert_eq!(header_u64(Some(&t), "c"), Some(5));
        assert_eq!(header_u64(Some(&t), "d"), None);
        assert_eq!(header_u64(None, "a"), None);
    }
}
