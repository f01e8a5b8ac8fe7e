//! Trimming a stream to what its consumer groups still need, in one script (atomic, so no
//! entry is read or acked between the look and the trim).
//!
//! The floor is the lowest, over every group, of the group's oldest pending entry, or of the
//! id just after its `last-delivered-id` when nothing is pending. Entries below the floor have
//! been read and acked by every group; `XTRIM MINID` removes them. The script fails closed: a stream without groups is not
//! trimmed (nobody is known to have read it), and a group it cannot read stops the trim with
//! an error instead of being skipped.

use redis::aio::ConnectionLike;

/// KEYS: the stream. Returns the number of entries trimmed.
const TRIM_ACKED: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is a ' .. kind .. ', not a stream: not trimmed')
end
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return ms, seq
end
-- Ids compared exactly as decimal strings: by length, then by text.
local function below(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
-- A decimal string plus one, exactly (ids are 64-bit; Lua's numbers are doubles).
local function incr(digits)
  local out, carry = {}, 1
  for i = #digits, 1, -1 do
    local d = tonumber(string.sub(digits, i, i)) + carry
    carry = d == 10 and 1 or 0
    out[i] = tostring(d % 10)
  end
  local text = table.concat(out)
  if carry == 1 then text = '1' .. text end
  return text
end
local function after(id)
  local ms, seq = parse(id)
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local floor = nil
for _, group in ipairs(groups) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if not name or not parse(last) then
    return redis.error_reply('ERR cannot read the groups of ' .. KEYS[1] .. ': not trimmed')
  end
  local pending = redis.call('XPENDING', KEYS[1], name)
  local low
  if pending[1] > 0 then low = pending[2] else low = after(last) end
  if not parse(low) then
    return redis.error_reply('ERR cannot read the pending entries of ' .. KEYS[1] .. ': not trimmed')
  end
  if floor == nil or below(low, floor) then floor = low end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
";

/// Trims from `stream` the entries every group has read and acked; returns how many.
pub async fn acked(conn: &mut impl ConnectionLike, stream: &str) -> redis::RedisResult<u64> {
    redis::cmd("EVAL").arg(TRIM_ACKED).arg(1).arg(stream).query_async(conn).await
}
