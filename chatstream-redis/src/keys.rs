//! The key layout. Every key starts with the prefix and carries a hash tag (`{…}`), so the
//! keys one operation touches share a Redis Cluster slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{conv:ID}:meta` | hash | `id`, `title`, `owner`, `channel`, `created`, `last_activity` (ms), `message_count` |
//! | `P{conv:ID}:messages` | list | the history, one JSON `{"role", "content"}` per message |
//! | `P{chan:NAME}` | string | the conversation id of a channel (seed 004) |
//! | `P{owner:NAME}` | sorted set | conversation ids of an owner, scored by last activity (ms) |
//! | `P{tok:SESSION:MESSAGE}` | stream | one entry per envelope, id `SEQ-1`, field `env` = canonical JSON |
//! | `P{tok:SESSION:MESSAGE}:mark` | hash | `started`; `ended` and `end` (entry id and JSON of the `End`); `trimmed` (highest entry id trimmed away); outlives the stream |
//! | `P{resp:ID}`, `P{resp:ID}:outcome` | strings | a stored response of the Responses API and its outcome ([`RedisResponseStore`](crate::RedisResponseStore)) |
//! | `P{queue:NAME}` | stream | requests (`body`, and `deliveries` on redelivered copies), consumer group |
//! | `P{queue:NAME}:dead` | stream | dead letters: `body`, `reason`, `deliveries`, `id` |
//! | `Pcancel` | pub/sub channel | cancels, `{"sessionId": …, "messageId": …}` |
//! | `Pstreams` | pub/sub channel | news of started streams (`RedisSessionFeed`), same JSON |
//! | `Pnews` | pub/sub channel | news of the token bus: each publish call sends the keys of the token streams it appended to, one per line |
//!
//! `P` is the prefix (`REDIS_PREFIX`, default `cosmo:`). Parts that come from users (ids,
//! channel names, stream keys) are percent-encoded: every byte outside `A-Z a-z 0-9 - _ . ~ @`
//! becomes `%XX`, so no input can close a hash tag, join two parts differently or inject a
//! glob pattern into the `SCAN`s of the store.

use std::fmt::Write as _;
use std::sync::Arc;

use chatstream_core::StreamKey;

/// Builds the keys of one prefix (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// Keys under `prefix` (e.g. `cosmo:`).
    pub fn new(prefix: impl Into<Arc<str>>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Metadata hash of a conversation.
    pub fn conversation_meta(&self, id: &str) -> String {
        format!("{}{{conv:{}}}:meta", self.prefix, escape(id))
    }

    /// Message list of a conversation.
    pub fn conversation_messages(&self, id: &str) -> String {
        format!("{}{{conv:{}}}:messages", self.prefix, escape(id))
    }

    /// Channel → conversation id mapping.
    pub fn channel(&self, channel: &str) -> String {
        format!("{}{{chan:{}}}", self.prefix, escape(channel))
    }

    /// Sorted set of an owner's conversations.
    pub fn owner(&self, owner: &str) -> String {
        format!("{}{{owner:{}}}", self.prefix, escape(owner))
    }

    /// Sorted set of an organisation's conversations.
    pub fn org(&self, org: &str) -> String {
        format!("{}{{org:{}}}", self.prefix, escape(org))
    }

    /// The token stream of a [`StreamKey`].
    pub fn token_stream(&self, key: &StreamKey) -> String {
        format!(
            "{}{{tok:{}:{}}}",
            self.prefix,
            escape(&key.session_id),
            escape(&key.message_id)
        )
    }

    /// The marker hash of a token stream.
    pub fn token_marker(&self, key: &StreamKey) -> String {
        let mut k = self.token_stream(key);
        k.push_str(":mark");
        k
    }

    /// The pub/sub channel of the token bus's news: the keys of token streams that got
    /// new entries, one per line.
    pub fn news_channel(&self) -> String {
        format!("{}news", self.prefix)
    }

    /// The request stream of a queue.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{{queue:{}}}", self.prefix, escape(name))
    }

    /// The dead-letter stream of a queue.
    pub fn dead_letters(&self, name: &str) -> String {
        format!("{}{{queue:{}}}:dead", self.prefix, escape(name))
    }

    /// The pub/sub channel of cancels.
    pub fn cancel_channel(&self) -> String {
        format!("{}cancel", self.prefix)
    }

    /// The pub/sub channel of news of started streams
    /// ([`RedisSessionFeed`](crate::RedisSessionFeed)).
    pub fn streams_channel(&self) -> String {
        format!("{}streams", self.prefix)
    }

    /// `SCAN` pattern of conversation metadata hashes.
    pub(crate) fn conversation_meta_pattern(&self) -> String {
        format!("{}{{conv:*}}:meta", glob_escape(&self.prefix))
    }

    /// `SCAN` patterns of every key the conversation store owns.
    pub(crate) fn store_patterns(&self) -> [String; 4] {
        let p = glob_escape(&self.prefix);
        [
            format!("{p}{{conv:*"),
            format!("{p}{{chan:*"),
            format!("{p}{{owner:*"),
            format!("{p}{{org:*"),
        ]
    }
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 - _ . ~ @`.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes the glob characters of Redis `MATCH` patterns.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or of the whole key, modulo 16,384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16_384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_conversation_share_a_hash_tag() {
        let k = Keys::new("cosmo:");
        assert_eq!(
            k.conversation_meta("thread_1"),
            "cosmo:{conv:thread_1}:meta"
        );
        assert_eq!(
            k.conversation_messages("thread_1"),
            "cosmo:{conv:thread_1}:messages"
        );
        assert_eq!(k.channel("convex_id_12345"), "cosmo:{chan:convex_id_12345}");
        let key = StreamKey::new("s-1", "m-1");
        assert_eq!(k.token_stream(&key), "cosmo:{tok:s-1:m-1}");
        assert_eq!(k.token_marker(&key), "cosmo:{tok:s-1:m-1}:mark");
        assert_eq!(k.queue("requests"), "cosmo:{queue:requests}");
        assert_eq!(k.dead_letters("requests"), "cosmo:{queue:requests}:dead");
    }

    #[test]
    fn user_input_cannot_craft_other_keys() {
        let k = Keys::new("p:");
        // Joining differently must give different keys.
        assert_ne!(
            k.token_stream(&StreamKey::new("a:b", "c")),
            k.token_stream(&StreamKey::new("a", "b:c"))
        );
        // No brace, glob or space survives.
        let evil = k.channel("x}:meta {conv:*} ?[a]\\ ");
        assert_eq!(
            evil,
            "p:{chan:x%7D%3Ameta%20%7Bconv%3A%2A%7D%20%3F%5Ba%5D%5C%20}"
        );
        assert_eq!(escape("ünï"), "%C3%BCn%C3%AF");
    }

    #[test]
    fn scan_patterns_escape_the_prefix() {
        let k = Keys::new("we*ird[1]:");
        assert_eq!(
            k.conversation_meta_pattern(),
            "we\\*ird\\[1\\]:{conv:*}:meta"
        );
    }

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            slot(b"foo{}{bar}"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        let keys = Keys::new("p:");
        let key = StreamKey::new("s", "m");
        assert_eq!(
            slot(keys.token_stream(&key).as_bytes()),
            slot(keys.token_marker(&key).as_bytes())
        );
    }
}
