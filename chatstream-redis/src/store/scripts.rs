//! Lua scripts of the conversation store. Each touches the keys of one hash tag only.

use std::sync::LazyLock;

use redis::Script;

/// The conversation of a channel, created when absent; slides the mapping's expiry.
/// KEYS: channel. ARGV: new id, ttl (s). Returns `{id, created (0|1)}`.
pub(super) static CHANNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', KEYS[1])
if id then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {id, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {ARGV[1], 1}
",
    )
});

/// Touches (or creates) a conversation: last activity, expiry; records the channel.
/// KEYS: meta, messages. ARGV: id, now (ms), ttl (s), channel ('' for none).
/// Returns `{owner or '', org or ''}`.
pub(super) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created', ARGV[2], 'message_count', 0)
end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'channel', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'owner', 'org')
return {f[1] or '', f[2] or ''}
",
    )
});

/// Appends messages atomically: RPUSH, HINCRBY message_count, HSET last_activity, EXPIRE.
/// KEYS: meta, messages. ARGV: id, now (ms), ttl (s), message JSON…
/// Returns `{owner or '', channel or '', org or ''}`.
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created', ARGV[2], 'message_count', 0)
end
local n = #ARGV - 3
if n > 0 then
  for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('HINCRBY', KEYS[1], 'message_count', n)
end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'owner', 'channel', 'org')
return {f[1] or '', f[2] or '', f[3] or ''}
",
    )
});

/// Reads a conversation and slides its expiry. KEYS: meta, messages. ARGV: now (ms), ttl (s).
/// Returns nil when absent, else `{meta field/value list, messages}`.
pub(super) static GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
",
    )
});

/// Removes a channel mapping only when it still points at the conversation.
/// KEYS: channel. ARGV: conversation id. Returns 1 when removed.
pub(super) static UNMAP_CHANNEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0
",
    )
});
