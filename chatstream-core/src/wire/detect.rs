//! Telling the request dialects apart, for queues that several kinds of client publish to.

use serde_json::{Map, Value};

use crate::{ChatRequest, Error, Result};

/// Which documented request format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDialect {
    /// Seed 000 / canonical: `{"text", "sessionId", "messageId"}` (or `messages`).
    Seed000,
    /// Seed 003: `{"key", "message"}` or `{"model", "messages", "uid", …}`.
    Seed003,
    /// Seed 004: `{"channel", "message_id", "message"}`.
    Seed004,
}

/// The dialect of a request body, judged by its field names.
pub fn detect_request(bytes: &[u8]) -> Result<RequestDialect> {
    let value: Value = super::from_json("request", bytes)?;
    let Value::Object(obj) = value else {
        return Err(Error::decode("request", "expected a JSON object"));
    };
    dialect_of(&obj).ok_or_else(|| {
        Error::decode(
            "request",
            "unrecognised request format: expected seed 000 (sessionId, messageId, text), \
             seed 003 (key, message | uid, messages) or seed 004 (channel, message_id, message) fields",
        )
    })
}

fn dialect_of(obj: &Map<String, Value>) -> Option<RequestDialect> {
    let has = |k: &str| obj.contains_key(k);
    if has("sessionId") || has("messageId") {
        Some(RequestDialect::Seed000)
    } else if has("channel") || has("message_id") {
        Some(RequestDialect::Seed004)
    } else if has("uid") || has("messages") || (has("key") && has("message")) {
        Some(RequestDialect::Seed003)
    } else {
        None
    }
}

/// Decodes a request in any documented dialect (seed 000 / canonical, seed 003 in both
/// forms, seed 004). Malformed or unrecognised bodies give [`Error::Decode`] saying why, fit
/// for a dead-letter reason.
pub fn decode_request(bytes: &[u8]) -> Result<ChatRequest> {
    match detect_request(bytes)? {
        RequestDialect::Seed000 => super::seed000::decode_request(bytes),
        RequestDialect::Seed003 => super::seed003::decode_request(bytes),
        RequestDialect::Seed004 => super::seed004::decode_request(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_documented_request_decodes_to_its_stream_key() {
        let r = decode_request(br#"{"text": "hi", "sessionId": "s1", "messageId": "m1"}"#).unwrap();
        assert_eq!(
            (&*r.key.session_id, &*r.key.message_id, r.last_user_text()),
            ("s1", "m1", "hi")
        );
        let r = decode_request(br#"{"key": "123e4567-e89b-12d3-a456-426614174000", "message": "What is the capital of France?"}"#).unwrap();
        assert_eq!(&*r.key.session_id, "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(r.last_user_text(), "What is the capital of France?");
        let r = decode_request(
            br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me a joke."}], "stream": true, "username": "alice", "uid": "u-1"}"#,
        )
        .unwrap();
        assert_eq!(
            (&*r.key.session_id, r.user.as_deref(), r.model.as_deref()),
            ("u-1", Some("alice"), Some("gpt-4o"))
        );
        let r = decode_request(
            br#"{"channel": "convex_id_12345", "message_id": "msg-123456789", "message": "What is the capital of France?"}"#,
        )
        .unwrap();
        assert_eq!(
            (&*r.key.session_id, &*r.key.message_id),
            ("convex_id_12345", "msg-123456789")
        );
    }

    #[test]
    fn canonical_requests_round_trip() {
        let mut req = ChatRequest::new(crate::StreamKey::new("s", "m"), "hello");
        req.metadata.insert("reply_to".into(), "gw-1".into());
        let back = decode_request(super::super::seed000::encode_request(&req).as_bytes()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn unrecognised_and_malformed_bodies_say_why() {
        for body in [
            &b"[1,2]"[..],
            b"{}",
            b"{\"foo\": 1}",
            b"not json",
            b"\xff\xfe",
            b"{\"channel\": 5}",
        ] {
            let e = decode_request(body).unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{body:?}: {e}");
        }
        let e = decode_request(b"{\"foo\": 1}").unwrap_err().to_string();
        assert!(e.contains("unrecognised request format"), "{e}");
    }
}
