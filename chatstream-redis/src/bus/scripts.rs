//! The publish script: one call per stream per batch, all calls of a batch pipelined.

use std::sync::LazyLock;

use redis::Script;

/// Appends envelopes under explicit ids, trims, marks and expires.
///
/// KEYS: stream, marker. ARGV: max_len, live ttl (ms), ended ttl (ms), tombstone (ms),
/// the entry id of the batch's `End` ('' when none), then id / JSON pairs. The `End` is
/// also kept in the marker (`ended` = its id, `end` = its JSON).
/// Returns `{added, stale}`; fails when an envelope of the newest attempt arrives after a
/// later one (out of order).
///
/// A stream that begins (no stream, no marker) with an envelope other than the first of
/// its attempt lost its start (Redis came back empty while the worker went on): the
/// missing part is recorded as trimmed, so a read from the start gets `HistoryLost`.
pub(super) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stream, marker = KEYS[1], KEYS[2]
local max_len = tonumber(ARGV[1])
local ATTEMPT = 4294967296
local function attempt_of(id)
  return math.floor(tonumber(string.match(id, '^(%d+)')) / ATTEMPT)
end
local end_id = ARGV[5]
if #ARGV >= 6 and redis.call('EXISTS', stream) == 0 and redis.call('EXISTS', marker) == 0 then
  local first = tonumber(string.match(ARGV[6], '^(%d+)'))
  if first % ATTEMPT ~= 0 then
    redis.call('HSET', marker, 'trimmed', string.format('%d-1', first - 1))
  end
end
local added, stale, top_attempt, end_json = 0, 0, nil, nil
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local r = redis.pcall('XADD', stream, id, 'env', ARGV[i + 1])
  local kept = true
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then return r end
    if #redis.call('XRANGE', stream, id, id) == 0 then
      kept = false
      if top_attempt == nil then
        local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
        top_attempt = attempt_of(top[1][1])
      end
      if attempt_of(id) >= top_attempt then
        return redis.error_reply('OUTOFORDER entry ' .. id .. ' arrived after a later one')
      end
      stale = stale + 1
    end
  else
    added = added + 1
  end
  if kept and id == end_id then end_json = ARGV[i + 1] end
end
local len = redis.call('XLEN', stream)
if len > max_len + math.floor(max_len / 10) then
  local victims = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - max_len)
  redis.call('XTRIM', stream, 'MAXLEN', max_len)
  redis.call('HSET', marker, 'trimmed', victims[#victims][1])
end
local ends = end_json ~= nil
if ends then redis.call('HSET', marker, 'ended', end_id, 'end', end_json) end
if added > 0 or ends then
  redis.call('HSETNX', marker, 'started', '1')
  local ttl = tonumber(ARGV[2])
  if redis.call('HEXISTS', marker, 'ended') == 1 then ttl = tonumber(ARGV[3]) end
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', marker, ttl + tonumber(ARGV[4]))
end
return {added, stale}
",
    )
});
