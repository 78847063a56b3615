//! Lua scripts of the request queue. Each touches one hash tag (the queue and its
//! dead-letter stream share it).

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, prepended to the scripts below.
const FIELD: &str = r"
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
";

/// Takes one entry: an abandoned one (XAUTOCLAIM) or a new one (XREADGROUP >).
/// Over-limit claims are dead-lettered on the way.
/// KEYS: stream, dead. ARGV: group, consumer, min idle (ms), cursor, delivery limit.
/// Returns `{cursor, id, body, attempt}`, with an empty id when there is nothing to take.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FIELD}{}",
        r"
local stream, dead, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[5])
local cursor = ARGV[4]
for _ = 1, 4 do
  local r = redis.call('XAUTOCLAIM', stream, group, me, ARGV[3], cursor, 'COUNT', 1)
  cursor = r[1]
  local e = r[2][1]
  if not e or type(e) ~= 'table' then break end
  local fields = e[2] or {}
  local body = field(fields, 'body') or ''
  local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
  local count = (p[1] and p[1][4]) or 1
  local attempt = tonumber(field(fields, 'deliveries') or '0') + count
  if attempt <= limit then return {cursor, e[1], body, attempt} end
  redis.call('XADD', dead, '*', 'body', body, 'reason',
    'delivery limit of ' .. limit .. ' reached', 'deliveries', attempt - 1, 'id', e[1])
  redis.call('XACK', stream, group, e[1])
  redis.call('XDEL', stream, e[1])
  if cursor == '0-0' then break end
end
local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', stream, '>')
if r and r[1] and r[1][2][1] then
  local e = r[1][2][1]
  local fields = e[2] or {}
  return {cursor, e[1], field(fields, 'body') or '',
    tonumber(field(fields, 'deliveries') or '0') + 1}
end
return {cursor, '', '', 0}
"
    ))
});

/// Gives an entry back: a copy with the attempts so far goes to the tail (or to the
/// dead-letter stream at the limit), the original is acked and deleted — only while this
/// consumer still owns it.
/// KEYS: stream, dead. ARGV: group, consumer, id, attempts so far, limit.
/// Returns 0 (not ours any more), 1 (requeued) or 2 (dead-lettered).
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FIELD}{}",
        r"
local stream, dead, group, me, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local p = redis.call('XPENDING', stream, group, id, id, 1)
if not p[1] or p[1][2] ~= me then return 0 end
local e = redis.call('XRANGE', stream, id, id)
redis.call('XACK', stream, group, id)
if not e[1] then return 0 end
local body = field(e[1][2], 'body') or ''
redis.call('XDEL', stream, id)
if tonumber(ARGV[4]) >= tonumber(ARGV[5]) then
  redis.call('XADD', dead, '*', 'body', body, 'reason',
    'delivery limit of ' .. ARGV[5] .. ' reached', 'deliveries', ARGV[4], 'id', id)
  return 2
end
redis.call('XADD', stream, '*', 'body', body, 'deliveries', ARGV[4])
return 1
"
    ))
});

/// Resets the idle time of this consumer's entries still being worked on.
/// KEYS: stream. ARGV: group, consumer, ids… Returns how many were refreshed.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
",
    )
});

/// Removes a consumer that holds nothing. KEYS: stream. ARGV: group, consumer.
pub(super) static FORGET_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
",
    )
});
