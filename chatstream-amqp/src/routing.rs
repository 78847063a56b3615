//! Names built from stream keys: topic routing keys and seed 003 response queues.

use chatstream_core::{wire::seed003, Result, StreamKey};

use crate::error::AmqpError;

/// Longest AMQP short string (queue names, routing keys).
pub(crate) const MAX_NAME: usize = 255;

/// Escapes one part of a stream key into a single topic-routing word: `%` → `%25`,
/// `.` → `%2E`, `*` → `%2A`, `#` → `%23`. The result holds no word separator and no
/// wildcard, so a binding key made of it matches exactly that stream, and the escaping is
/// reversible (no two parts escape to the same word).
pub fn escape_word(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '*' => out.push_str("%2A"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_word`]; `None` for text that is not an escaped word.
pub fn unescape_word(word: &str) -> Option<String> {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let c = match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "2E" => '.',
            "2A" => '*',
            "23" => '#',
            _ => return None,
        };
        out.push(c);
        rest = &rest[i + 3..];
    }
    if rest.contains(['.', '*', '#']) {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// The topic routing key of a stream: `escape(session_id).escape(message_id)`, two words.
/// Fails with [`Error::Invalid`](chatstream_core::Error::Invalid) when it would be longer
/// than 255 bytes.
pub fn routing_key(key: &StreamKey) -> Result<String> {
    let rk = format!(
        "{}.{}",
        escape_word(&key.session_id),
        escape_word(&key.message_id)
    );
    check_len(rk)
}

/// Reads a routing key made by [`routing_key`] back into the stream key.
pub fn parse_routing_key(rk: &str) -> Option<StreamKey> {
    let (session, message) = rk.split_once('.')?;
    Some(StreamKey::new(
        unescape_word(session)?,
        unescape_word(message)?,
    ))
}

/// The seed 003 response queue of a stream: `response_{uid}` for seed 003's keys (session id
/// = message id = uid), `response_{session}.{message}` for any other key.
pub fn response_queue(key: &StreamKey) -> Result<String> {
    let name = if key.session_id == key.message_id {
        seed003::response_queue(&key.session_id)
    } else {
        seed003::response_queue(&format!(
            "{}.{}",
            escape_word(&key.session_id),
            escape_word(&key.message_id)
        ))
    };
    check_len(name)
}

fn check_len(name: String) -> Result<String> {
    if name.len() > MAX_NAME {
        return Err(AmqpError::invalid_name(&name, "longer than 255 bytes").into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped_into_one_word() {
        assert_eq!(escape_word("a.b*c#d%e"), "a%2Eb%2Ac%23d%25e");
        assert_eq!(escape_word("plain-id_09"), "plain-id_09");
        assert_eq!(escape_word(""), "");
        for s in [
            "a.b*c#d%e",
            "%2E",
            "..",
            "#",
            "*.#",
            "ünï.cødé",
            "%",
            "%%25",
        ] {
            let w = escape_word(s);
            assert!(!w.contains(['.', '*', '#']), "{w:?} still has a special");
            assert_eq!(unescape_word(&w).as_deref(), Some(s), "round trip of {s:?}");
        }
    }

    #[test]
    fn routing_keys_are_two_words_and_injective() {
        let a = StreamKey::new("a.b", "c");
        let b = StreamKey::new("a", "b.c");
        let ra = routing_key(&a).expect("short");
        let rb = routing_key(&b).expect("short");
        assert_ne!(ra, rb, "keys that differ must route differently");
        assert_eq!(ra.matches('.').count(), 1);
        assert_eq!(parse_routing_key(&ra), Some(a));
        assert_eq!(parse_routing_key(&rb), Some(b));
        let wild = StreamKey::new("#", "*");
        assert_eq!(routing_key(&wild).expect("short"), "%23.%2A");
    }

    #[test]
    fn overlong_names_are_refused_not_panicked_on() {
        let long = StreamKey::new("s".repeat(200), "m".repeat(100));
        let err = routing_key(&long).expect_err("too long");
        assert!(!err.is_retryable());
        assert!(response_queue(&long).is_err());
    }

    #[test]
    fn seed003_keys_use_the_seed_queue_name() {
        let uid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(
            response_queue(&StreamKey::new(uid, uid)).expect("short"),
            format!("response_{uid}")
        );
        assert_eq!(
            response_queue(&StreamKey::new("s.1", "m")).expect("short"),
            "response_s%2E1.m"
        );
    }
}
