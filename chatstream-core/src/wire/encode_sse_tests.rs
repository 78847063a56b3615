//! The SSE fast paths ([`FrameEncoder::encode_sse`] overridden by seed 001 and OpenAI) write
//! exactly what `encode` + [`render_into`] write, event by event, for hostile text.

use std::sync::Arc;

use bytes::BytesMut;

use super::json::{push_compact_str, push_python_str, to_compact_json, to_python_json};
use super::openai::{OpenAiChunks, OpenAiOptions};
use super::seed001::Seed001Sse;
use super::seed003::Seed003Sse;
use super::sse::render_into;
use crate::{ClientEvent, ClientTransport, Fault, FinishReason, Status};
use crate::{StreamEvent, StreamKey, TokenEnvelope, ToolCall, Usage};

/// Quotes, backslashes, every kind of line break, controls, DEL, non-ASCII, emoji (a
/// surrogate pair in `\u` escapes), U+2028, HTML, and the empty token.
const TOKENS: &[&str] = &[
    "Hello",
    " tok",
    "",
    r#"say "hi""#,
    r"back\slash \\ \u0041 \n",
    "\n",
    "line\nbreak",
    "a\r\nb\rc\n\n",
    "\t\u{8}\u{c}\u{b}",
    "\u{0}\u{1}\u{1f} \u{7f}",
    "é",
    "naïve café",
    "日本語のテキスト",
    "😀",
    "x\"\\\n😀é\u{7f}y👍🏽",
    "\u{2028}\u{2029}\u{feff}\u{10ffff}",
    "</script><b>&amp;</b>",
    r#""content":"""#,
    "data: {\"token\": \"x\"}\n\nid: 9\n\n",
];

fn key() -> StreamKey {
    StreamKey::new("s", "msg-1")
}

fn env(seq: u64, event: StreamEvent) -> ClientEvent {
    ClientEvent::Envelope(Arc::new(TokenEnvelope::new(key(), 1, seq, event)))
}

fn end(reason: FinishReason, usage: Option<Usage>) -> StreamEvent {
    StreamEvent::End {
        finish_reason: reason,
        usage,
    }
}

fn usage() -> Option<Usage> {
    Some(Usage {
        prompt_tokens: 3,
        completion_tokens: 20,
        total_tokens: 23,
    })
}

/// Every token of [`TOKENS`] between a status and `last` (seqs from 1; the status at 0).
fn stream(last: &[ClientEvent]) -> Vec<ClientEvent> {
    let mut events = vec![env(0, StreamEvent::status(Status::Started))];
    events.extend(
        TOKENS
            .iter()
            .zip(1..)
            .map(|(t, seq)| env(seq, StreamEvent::token(*t))),
    );
    events.extend_from_slice(last);
    // After the end nothing more is written.
    events.push(env(1_000, StreamEvent::token("after")));
    events
}

/// The scripts: a clean end, an error then the end, a reset, faults of every kind (one
/// with a hostile message), before and after tokens, and a tool call.
fn scripts() -> Vec<Vec<ClientEvent>> {
    let n = TOKENS.len() as u64;
    let hostile = Fault::Unavailable("redis \"down\"\n\\ é😀\u{1}".into());
    let call = ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Zürich\n"}"#.into(),
    };
    let mut scripts = vec![
        stream(&[env(n + 1, end(FinishReason::Stop, usage()))]),
        stream(&[env(n + 1, end(FinishReason::Length, None))]),
        stream(&[
            env(
                n + 1,
                StreamEvent::Error {
                    message: "boom \"x\"\n\\ é😀\u{7f}".into(),
                },
            ),
            env(n + 2, end(FinishReason::Error, None)),
        ]),
        stream(&[
            ClientEvent::Reset { attempt: 2 },
            env(n + 1, StreamEvent::token("again")),
            env(n + 2, end(FinishReason::Cancelled, usage())),
        ]),
        stream(&[
            env(n + 1, StreamEvent::ToolCall { call }),
            env(n + 2, end(FinishReason::ToolCalls, usage())),
        ]),
        stream(&[ClientEvent::Fault(hostile.clone())]),
        vec![ClientEvent::Fault(hostile)],
        vec![env(1, end(FinishReason::Stop, usage()))],
        vec![
            ClientEvent::Reset { attempt: 7 },
            ClientEvent::Fault(Fault::HistoryLost),
        ],
    ];
    for fault in [
        Fault::HistoryLost,
        Fault::SlowConsumer,
        Fault::TimedOut,
        Fault::ShuttingDown,
    ] {
        scripts.push(stream(&[ClientEvent::Fault(fault)]));
    }
    scripts
}

/// Two encoders of `transport`, one through `encode` + `render_into`, one through
/// `encode_sse`, fed the same events: the text of each event must be the same bytes.
fn assert_fast_path_matches(transport: &dyn ClientTransport) {
    for events in scripts() {
        let mut slow = transport.encoder(&key());
        let mut fast = transport.encoder(&key());
        let mut frames = Vec::new();
        // The fast path appends: start from text already in the buffer, as a chunk does.
        let mut buffer = BytesMut::from(&b"earlier\n\n"[..]);
        for event in &events {
            frames.clear();
            slow.encode(event, &mut frames);
            let mut expected = String::new();
            frames.iter().for_each(|f| render_into(f, &mut expected));
            let before = buffer.len();
            fast.encode_sse(event, &mut buffer);
            assert_eq!(
                String::from_utf8_lossy(&buffer[before..]),
                expected,
                "{} on {event:?}",
                transport.name()
            );
            assert_eq!(&buffer[before..], expected.as_bytes());
        }
        assert!(buffer.starts_with(b"earlier\n\n"));
    }
}

#[test]
fn seed001_fast_path_writes_what_encode_and_render_write() {
    assert_fast_path_matches(&Seed001Sse);
    // The text itself, for one token: one data line, ensure_ascii escapes.
    let mut enc = Seed001Sse.encoder(&key());
    let mut out = BytesMut::new();
    enc.encode_sse(&env(4, StreamEvent::token("a\"\n😀")), &mut out);
    assert_eq!(
        &out[..],
        b"id: 4\ndata: {\"token\": \"a\\\"\\n\\ud83d\\ude00\"}\n\n"
    );
}

#[test]
fn openai_fast_path_writes_what_encode_and_render_write() {
    for include_usage in [false, true] {
        for (id, model) in [
            (Some("chatcmpl-123"), "gpt-4o-mini"),
            (None, ""),
            // Names that look like the content field and need escaping.
            (Some(r#"id "content":"" é"#), "m\"\n\\😀\u{1}\u{7f}"),
        ] {
            let transport = OpenAiChunks::new(OpenAiOptions {
                id: id.map(str::to_owned),
                model: model.into(),
                created: Some(1_700_000_000),
                include_usage,
            });
            assert_fast_path_matches(&transport);
        }
    }
}

#[test]
fn default_encode_sse_renders_the_frames_of_encode() {
    // Seed 003 keeps the provided method.
    assert_fast_path_matches(&Seed003Sse);
}

/// A xorshift generator: random strings from an alphabet of the characters escaping
/// treats apart, plus arbitrary scalar values.
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

    fn text(&mut self) -> String {
        const ALPHABET: &[char] = &[
            'a',
            ' ',
            '~',
            '"',
            '\\',
            '/',
            '\n',
            '\r',
            '\t',
            '\u{0}',
            '\u{8}',
            '\u{c}',
            '\u{1f}',
            '\u{7f}',
            '\u{80}',
            'é',
            '\u{7ff}',
            '\u{800}',
            '\u{2028}',
            '\u{fffd}',
            '\u{ffff}',
            '\u{10000}',
            '😀',
            '\u{10ffff}',
        ];
        let len = self.next() % 24;
        (0..len)
            .map(|_| {
                let r = self.next();
                if r % 4 == 0 {
                    char::from_u32((r >> 8) as u32 % 0x11_0000).unwrap_or('x')
                } else {
                    ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                }
            })
            .collect()
    }
}

#[test]
fn in_place_escaping_matches_serde_json() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let texts = TOKENS
        .iter()
        .map(|t| (*t).to_owned())
        .chain((0..5_000).map(|_| rng.text()));
    for text in texts {
        let mut out = BytesMut::new();
        push_python_str(&mut out, &text);
        assert_eq!(&out[..], to_python_json(&text).as_bytes(), "{text:?}");
        out.clear();
        push_compact_str(&mut out, &text);
        assert_eq!(&out[..], to_compact_json(&text).as_bytes(), "{text:?}");
    }
}
