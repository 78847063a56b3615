//! Fuzz-ish tests without a fuzzing crate: a xorshift generator feeds every decoder random and
//! mutated input (none may panic), and every encoder random text (all JSON must parse back).

use std::sync::Arc;

use super::*;
use crate::{ClientEvent, ClientTransport, Fault, FinishReason, Frame, Status, StreamEvent};
use crate::{StreamKey, TokenEnvelope};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"sessionId": "s", "messageId": "m", "token": "H", "seq": 3, "type": "token"}"#,
    r#"{"sessionId": "s", "messageId": "m", "end_of_stream": true, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}"#,
    r#"{"text": "t", "sessionId": "s", "messageId": "m", "messages": [{"role": "user", "content": "x"}]}"#,
    r#"{"type": "done", "data": {"success": true}, "timestamp": "2024-05-01T12:00:00.000Z"}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"username":"a","uid":"u"}"#,
    r#"{"action": "message", "channel": "c", "message_id": "m", "message": "hi"}"#,
    r#"{"message": "x", "timestamp": 1683042123.456, "status": "started", "type": "status", "final_message": false, "message_id": "m", "thread_id": "t"}"#,
    r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":{"prompt_tokens":1}}"#,
    r#"{"error":{"message":"m","type":"t","code":1}}"#,
    "data: {\"token\": \"x\"}\n\nid: 1\ndata: __END__\n\n",
];

const ALPHABET: &[u8] = b"{}[]\":,0123456789.-+eE truefalsnl\\u\n\r\x00\xff\xc3\xa9abcdefgtype";

fn random_input(rng: &mut XorShift) -> Vec<u8> {
    if rng.below(2) == 0 {
        let len = rng.below(80);
        (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect()
    } else {
        let mut bytes = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                _ => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        bytes
    }
}

#[test]
fn decoders_never_panic_on_random_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..600 {
        let bytes = random_input(&mut rng);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(d) = seed000::decode_envelope(&bytes) {
            // Whatever decodes re-encodes canonically and decodes to the same envelope.
            let env = d.into_envelope(0);
            let again = seed000::encode_envelope(&env, seed000::Mode::Canonical)
                .and_then(|j| seed000::decode_envelope(j.as_bytes()).ok())
                .map(|d| d.into_envelope(0));
            assert_eq!(again.as_ref(), Some(&env), "{text}");
        }
        let _ = seed000::decode_request(&bytes);
        let _ = seed001::parse_data(&text);
        let _ = seed001::parse_line(&text);
        let _ = seed002::parse_event(&text);
        let _ = seed003::decode_request(&bytes);
        for kind in [None, Some("token"), Some("end"), Some("error"), Some("x")] {
            let _ = seed003::decode_response(kind, &bytes);
        }
        let _ = seed004::decode_request(&bytes);
        let _ = seed004::decode_action(&bytes);
        let _ = seed004::parse_message(&text);
        let _ = openai::parse_data(&text);
        let _ = sse::parse(&text);
    }
}

const CHARS: &[char] = &[
    'a',
    ' ',
    '"',
    '\\',
    '/',
    '\n',
    '\r',
    '\t',
    '\u{0}',
    '\u{1f}',
    '\u{7f}',
    'é',
    '€',
    '\u{2028}',
    '\u{2029}',
    '<',
    '>',
    '&',
    '😀',
    '\u{10ffff}',
    '\u{fffe}',
];

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

#[test]
fn encoders_write_valid_json_for_any_text() {
    let mut rng = XorShift(42);
    for round in 0..50 {
        let text: String = (0..rng.below(20))
            .map(|_| CHARS[rng.below(CHARS.len())])
            .collect();
        let key = StreamKey::new(text.as_str(), "m");
        let events = [
            StreamEvent::Status {
                status: Status::Started,
                conversation_id: Some(text.clone()),
                detail: None,
            },
            StreamEvent::token(text.as_str()),
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
            let mut out: Vec<Frame> = Vec::new();
            enc.open(&mut out);
            if round % 3 == 0 {
                enc.encode(&ClientEvent::Reset { attempt: 2 }, &mut out);
            }
            for (seq, event) in events.iter().enumerate() {
                let env = TokenEnvelope::new(key.clone(), 1, seq as u64, event.clone());
                enc.encode(&ClientEvent::Envelope(Arc::new(env)), &mut out);
            }
            enc.encode(
                &ClientEvent::Fault(Fault::Unavailable(text.clone())),
                &mut out,
            );
            for frame in out
                .iter()
                .filter(|f| !matches!(f.data.as_str(), "[DONE]" | "__END__"))
            {
                let parsed = serde_json::from_str::<serde_json::Value>(&frame.data);
                assert!(parsed.is_ok(), "{}: {:?}", transport.name(), frame.data);
            }
        }
        for mode in [seed000::Mode::Seed000, seed000::Mode::Canonical] {
            let env = TokenEnvelope::new(key.clone(), 1, 0, StreamEvent::token(text.as_str()));
            let json = seed000::encode_envelope(&env, mode).unwrap_or_default();
            assert!(json.is_ascii(), "{json}");
            let back = seed000::decode_envelope(json.as_bytes()).map(|d| d.into_envelope(0));
            assert_eq!(back.ok(), Some(env));
        }
    }
}
