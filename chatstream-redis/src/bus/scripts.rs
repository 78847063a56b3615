//! The publish script: one call per round trip, covering every stream of every publish in
//! it.

use std::sync::LazyLock;

use redis::Script;

/// Appends envelopes of many streams under explicit ids, trims, marks and expires.
///
/// The call holds *groups*, one per publish and stream, in call order (a stream may have
/// several groups when several publishes of it go out together). KEYS: stream and marker
/// of each group, in group order. ARGV: max_len, live ttl (ms), ended ttl (ms), tombstone
/// (ms), the news channel, then per group: the number of envelopes `n`, the entry id of the group's `End`
/// ('' when none), then `n` id / JSON pairs. The `End` is also kept in the marker
/// (`ended` = its id, `end` = its JSON).
///
/// Returns `{added, stale, error}` per group; `error` is '' when the group was appended, or
/// why not: `OUTOFORDER …` when an envelope of the newest attempt arrives after a later one,
/// or the command error of a key that is not a stream. A failing group does not stop the
/// others.
///
/// A stream that begins (no stream, no marker) with an envelope other than the first of
/// its attempt lost its start (Redis came back empty while the worker went on): the
/// missing part is recorded as trimmed, so a read from the start gets `HistoryLost`.
///
/// Per group of a stream that exists, whose envelopes are all new (the common case), Redis
/// runs one `XADD … NOMKSTREAM` per envelope and nothing else; every 128 entries (when a
/// group crosses a multiple of 128 in seq; of a tenth of `max_len` when that is less) also
/// `XLEN` (trimming) and the two `PEXPIRE`s, and at an `End` the marker's fields. A new
/// stream and a retried or superseded envelope take the slow path, which checks each entry. The script call itself
/// is paid once per round trip. Each Lua-to-Redis call costs more than the command it runs
/// (about 1.4 µs for an `XADD` here), so the common case keeps to one per envelope.
/// At the end, one `PUBLISH` on the news channel names every stream that got
/// entries, one key per line, so readers read those streams and no others.
pub(super) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local max_len = tonumber(ARGV[1])
local live_ttl, ended_ttl, tombstone = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ATTEMPT = 4294967296
-- Trimming is checked every CHECK entries: 128, or a tenth of max_len when that is less.
local CHECK = math.max(1, math.min(128, math.floor(max_len / 10)))
local function ms_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end
local function attempt_of(id)
  return math.floor(ms_of(id) / ATTEMPT)
end
-- After a group's appends: a new stream's marker and expiry, trimming and the expiries
-- every CHECK entries, and the End.
local function upkeep(stream, marker, a, n, existed, end_id, end_json)
  local first_ms, last_ms = ms_of(ARGV[a]), ms_of(ARGV[a + 2 * n - 2])
  if not existed then
    -- The stream begins with this group (XADD made it, without an expiry).
    if redis.call('EXISTS', marker) == 0 and first_ms % ATTEMPT ~= 0 then
      redis.call('HSET', marker, 'trimmed', string.format('%d-1', first_ms - 1))
    end
    redis.call('HSETNX', marker, 'started', '1')
    redis.call('PEXPIRE', stream, live_ttl)
    redis.call('PEXPIRE', marker, live_ttl + tombstone)
  elseif math.floor((first_ms - 1) / CHECK) ~= math.floor(last_ms / CHECK) then
    local len = redis.call('XLEN', stream)
    if len > max_len + math.floor(max_len / 10) then
      local victims = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - max_len)
      redis.call('XTRIM', stream, 'MAXLEN', max_len)
      redis.call('HSET', marker, 'trimmed', victims[#victims][1])
    end
    redis.call('PEXPIRE', stream, live_ttl)
    redis.call('PEXPIRE', marker, live_ttl + tombstone)
  end
  if end_json ~= nil then
    redis.call('HSET', marker, 'ended', end_id, 'end', end_json)
    redis.call('HSETNX', marker, 'started', '1')
    redis.call('PEXPIRE', stream, ended_ttl)
    redis.call('PEXPIRE', marker, ended_ttl + tombstone)
  end
end
local function group(stream, marker, a, n, end_id)
  local last = a + 2 * n - 2
  -- The common case: the stream exists and every entry is new. One call per entry; a
  -- missing stream (nil) or an entry already there (an error) leaves it to the slow path,
  -- which finds the entries added here in place.
  local fast_added, fast = 0, true
  local ok = pcall(function()
    for i = a, last, 2 do
      if not redis.call('XADD', stream, 'NOMKSTREAM', ARGV[i], 'env', ARGV[i + 1]) then
        fast = false
        return
      end
      fast_added = fast_added + 1
    end
  end)
  if ok and fast then
    local end_json = nil
    if end_id ~= '' and ARGV[last] == end_id then end_json = ARGV[last + 1] end
    upkeep(stream, marker, a, n, true, end_id, end_json)
    return {fast_added, 0, ''}
  end
  local added, stale, top_attempt, end_json = fast_added, 0, nil, nil
  -- Refreshes the expiry, and tells whether the stream exists: one call for both.
  local existed = redis.call('PEXPIRE', stream, live_ttl) == 1
  for i = a, last, 2 do
    local id = ARGV[i]
    local r = redis.pcall('XADD', stream, id, 'env', ARGV[i + 1])
    local kept = true
    if type(r) == 'table' and r.err then
      if not string.find(r.err, 'equal or smaller', 1, true) then return {added, stale, r.err} end
      if #redis.call('XRANGE', stream, id, id) == 0 then
        kept = false
        if top_attempt == nil then
          local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
          top_attempt = attempt_of(top[1][1])
        end
        if attempt_of(id) >= top_attempt then
          return {added, stale, 'OUTOFORDER entry ' .. id .. ' arrived after a later one'}
        end
        stale = stale + 1
      end
    else
      added = added + 1
    end
    if kept and id == end_id then end_json = ARGV[i + 1] end
  end
  if added == 0 and end_json == nil then return {0, stale, ''} end
  upkeep(stream, marker, a, n, existed, end_id, end_json)
  return {added, stale, ''}
end
local out = {}
local news = {}
local a = 6
for g = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a])
  local end_id = ARGV[a + 1]
  local ok, res = pcall(group, KEYS[g], KEYS[g + 1], a + 2, n, end_id)
  if not ok then
    local msg = res
    if type(res) == 'table' then msg = res.err or 'error' end
    res = {0, 0, tostring(msg)}
  end
  out[#out + 1] = res
  if res[1] > 0 then
    news[#news + 1] = KEYS[g]
  end
  a = a + 2 + 2 * n
end
if #news > 0 then redis.call('PUBLISH', ARGV[5], table.concat(news, '\n')) end
return out
",
    )
});
