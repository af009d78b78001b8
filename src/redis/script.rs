//! The one server-side script every decision runs: the fixed-window algorithm of the in-memory
//! backend, for every quota of a request, in one atomic round trip.

use std::sync::LazyLock;

/// KEYS[i]: quota i's counter, `<base><window_ms>`, holding `"<window index>:<count>"`.
///
/// ARGV: op (`check`, `peek` or `refund`), amount (the cost, or the units to give back),
/// now in unix ms (empty: use the server's `TIME`), the expiry margin in ms (the clock skew
/// allowed between processes), then per quota its limit, window length in ms and phase in ms.
///
/// Returns `{now, violated, index_1, count_1, end_1, ...}`: the time decided at, a bitmask of
/// the quotas that deny, and per quota the window and count the decision reports (a peek
/// reports the count as if charged) and the window's end.
///
/// Every write is `SET ... PX <until the window's end, plus a margin>`: value and expiry in one
/// command, so no key exists for a moment without a TTL, whatever happens to a client or the
/// script. The expiry is relative, so a local clock skewed against the server's neither keeps a
/// key too long nor drops it early; the margin keeps it for processes whose clocks are behind
/// the writer's. A key found without a TTL (e.g. written by hand or restored without one) is
/// given one.
const SOURCE: &str = r#"
-- Hot-path costs are mostly Redis's own (each redis.call, each number converted for it), so
-- the script keeps calls and conversions few: one table (the reply, filled in place), one read
-- for all quotas, integers handed to redis.call already formatted ('%d', not Lua's '%.14g'),
-- no PTTL on a key that was just written or does not exist.
local call, fmt, find, tonumber, floor = redis.call, string.format, string.find, tonumber, math.floor
local op = ARGV[1]
local amount = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = call('TIME')
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end
local margin = tonumber(ARGV[4])
local n = #KEYS
local check, refund = op == 'check', op == 'refund'
-- The reply, filled in place: {now, violated, index_i, count_i, end_i, ...}.
local out = n == 1 and {now, 0, 0, 0, 0} or {now, 0}
-- One read for every quota: the keys share a hash slot (`{key}`).
local values = n > 1 and call('MGET', unpack(KEYS))
-- violated and present are bitmasks over the quotas; bit is quota i's.
local violated, present, bit = 0, 0, 1
for i = 1, n do
  local at = 3 * i
  local limit, w, phase = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local key = KEYS[i]
  local idx = floor((now + w - phase) / w)
  local c = 0
  local stored
  if values then stored = values[i] else stored = call('GET', key) end
  if stored then
    present = present + bit
    local _, _, si, sc = find(stored, '^(%d+):(%d+)$')
    si = tonumber(si)
    -- A count from a later window (the clock stepped back) is kept: time never moves a counter back.
    if si and si >= idx then
      idx, c = si, tonumber(sc)
    end
  end
  local ends = idx * w + phase
  if refund then
    -- Each quota is refunded on its own: lower a current count, else repair a missing TTL.
    if c > 0 and amount > 0 then
      c = c - amount
      if c < 0 then c = 0 end
      call('SET', key, fmt('%d:%d', idx, c), 'PX', fmt('%d', ends - now + margin))
    elseif stored and call('PTTL', key) == -1 then
      call('PEXPIRE', key, fmt('%d', ends - now + margin))
    end
  elseif c + amount > limit then
    violated = violated + bit
  end
  out[at], out[at + 1], out[at + 2] = idx, c, ends
  bit = bit * 2
end
if not refund then
  out[2] = violated
  local write = check and violated == 0
  bit = 1
  for i = 1, n do
    local at = 3 * i
    if violated == 0 then
      out[at + 1] = out[at + 1] + amount
    end
    if write then
      call('SET', KEYS[i], fmt('%d:%d', out[at], out[at + 1]), 'PX', fmt('%d', out[at + 2] - now + margin))
    elseif present % (bit * 2) >= bit and call('PTTL', KEYS[i]) == -1 then
      call('PEXPIRE', KEYS[i], fmt('%d', out[at + 2] - now + margin))
    end
    bit = bit * 2
  end
end
return out
"#;

/// The script, with its SHA-1 computed once; `invoke_async` sends `EVALSHA` and reloads the
/// script transparently after `NOSCRIPT` (a restart, a failover, `SCRIPT FLUSH`).
pub(crate) static DECIDE: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(SOURCE));
