//! The one server-side script every decision runs: the fixed-window algorithm of the in-memory
//! backend, for every quota of a request, in one atomic round trip.

use std::sync::LazyLock;

/// KEYS[i]: quota i's counter, `<base><window_ms>`, holding `"<window index>:<count>"`.
///
/// ARGV: op (`check`, `peek` or `refund`), amount (the cost, or the units to give back),
/// now in unix ms (empty: use the server's `TIME`), the expiry margin in ms, then per quota its
/// limit, window length in ms and phase in ms.
///
/// Returns `{now, violated, index_1, count_1, end_1, ...}`: the time decided at, a bitmask of
/// the quotas that deny, and per quota the window and count the decision reports (a peek
/// reports the count as if charged) and the window's end.
///
/// Every write is `SET ... PX <until the window's end, plus a margin>`: value and expiry in one
/// command, so no key exists for a moment without a TTL, whatever happens to a client or the
/// script. The expiry is relative, so a local clock skewed against the server's neither keeps a
/// key too long nor drops it early. A key found without a TTL (e.g. written by hand or restored
/// without one) is given one.
const SOURCE: &str = r#"
local op = ARGV[1]
local amount = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local margin = tonumber(ARGV[4])
local n = #KEYS
local index, count, ends, limits, current = {}, {}, {}, {}, {}
local violated = 0
for i = 1, n do
  local at = 4 + 3 * (i - 1)
  local limit, w, phase = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local now_index = math.floor((now + w - phase) / w)
  local idx, c, live = now_index, 0, false
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local si, sc = string.match(stored, '^(%d+):(%d+)$')
    si, sc = tonumber(si), tonumber(sc)
    -- A count from a later window (the clock stepped back) is kept: time never moves a counter back.
    if si and si >= now_index then
      idx, c, live = si, sc, true
    end
  end
  index[i], count[i], ends[i], limits[i], current[i] = idx, c, idx * w + phase, limit, live
  if op ~= 'refund' and c + amount > limit then
    violated = violated + 2 ^ (i - 1)
  end
end
local write = (op == 'check' and violated == 0)
for i = 1, n do
  if op == 'refund' then
    if current[i] and count[i] > 0 and amount > 0 then
      count[i] = math.max(0, count[i] - amount)
      redis.call('SET', KEYS[i], string.format('%d:%d', index[i], count[i]), 'PX', ends[i] - now + margin)
    end
  elseif violated == 0 then
    count[i] = count[i] + amount
    if write then
      redis.call('SET', KEYS[i], string.format('%d:%d', index[i], count[i]), 'PX', ends[i] - now + margin)
    end
  end
  if not write and redis.call('PTTL', KEYS[i]) == -1 then
    redis.call('PEXPIRE', KEYS[i], ends[i] - now + margin)
  end
end
local out = {now, violated}
for i = 1, n do
  out[#out + 1] = index[i]
  out[#out + 1] = count[i]
  out[#out + 1] = ends[i]
end
return out
"#;

/// The script, with its SHA-1 computed once; `invoke_async` sends `EVALSHA` and reloads the
/// script transparently after `NOSCRIPT` (a restart, a failover, `SCRIPT FLUSH`).
pub(crate) static DECIDE: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(SOURCE));
