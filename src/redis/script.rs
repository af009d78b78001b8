//! The server-side scripts: the fixed-window algorithm over plain integer counters, one key per
//! quota window, for every quota of a request in one atomic round trip.
//!
//! [`CHECK`] is the hot path (a check decided by the local clock): the client names each
//! quota's counter and hands over every integer pre-formatted, so an allowed single-quota
//! decision of cost 1 on an existing counter is one `INCR`. [`GENERAL`] serves everything else (peek,
//! refund, clear, and every operation decided by Redis's `TIME`, where only the script knows
//! the window and so the counter's name).
//!
//! Both charge first and give back on a denial, inside the script, so a denied request consumes
//! nothing and no other request ever sees its charge. A counter gets its expiry in the script
//! that creates it, so none lives without one.

use std::sync::LazyLock;

use ::redis::aio::ConnectionLike;
use ::redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, Value};

/// KEYS[i]: quota i's counter for the window the client's clock is in.
/// ARGV[1]: the cost; then per quota i, ARGV[2i] its limit and ARGV[2i+1] the counter's TTL in
/// ms (until the window ends, plus the skew allowance), all decimal integers. For one counter
/// and a cost of 1, the commonest check, the cost is left out: ARGV is the limit and the TTL.
///
/// Returns, for one counter and a cost of 1, the count after the charge when allowed, or
/// `-(count + 1)` when denied (the count as it stands: nothing charged); otherwise
/// `{violated, count_1, ...}` with `violated` a bitmask of the counters over their limits and
/// the counts as they stand after.
const CHECK_HEAD: &str = r#"
local call = redis.call
local n = #KEYS
if #ARGV == 2 then
  -- INCR, not INCRBY: under callgrind 23.8k instructions per call against 27.0k, since every
  -- argument costs Redis more than a line of Lua (a bare INCRBY script: 22.8k).
  local key = KEYS[1]
  local v = call('INCR', key)
  if v == 1 then call('PEXPIRE', key, ARGV[2]) end
  -- A counter set below zero by hand counts as empty: the reply stays positive when allowed.
  if v <= tonumber(ARGV[1]) then
    if v < 1 then v = 1 end
    return v
  end
  -- Nothing charged: the count as it stands, from DECR's exact reply (see the end).
  return -1 - call('DECR', key)
end
local cost = ARGV[1]
local c = tonumber(cost)
local keys, args, out, first = KEYS, ARGV, {0}, 1
"#;

/// KEYS[i]: quota i's counter for the window the client's clock is in or, decided by Redis's
/// `TIME` (ARGV[3] empty), its name up to the window index, `<base><window_ms>:`, which only
/// the script can complete. (Such a name is no key, so while its Cluster slot migrates, Redis
/// cannot route by it: the Redis-time path has that limit.)
/// ARGV[1]: the operation, `check`, `peek`, `refund` or `clear`; ARGV[2]: the cost, or the
/// units to give back; ARGV[3]: now in unix ms, or empty for Redis's `TIME`; ARGV[4]: the skew
/// allowance in ms; then per quota i, ARGV[3i+2] its limit, ARGV[3i+3] its window and
/// ARGV[3i+4] its phase, in ms.
///
/// Returns `{now, violated, count_1, ...}`: the time decided at, a bitmask of the counters over
/// their limits (checks only), and each current window's count as it stands after the
/// operation. Window indexes
/// are computed as the client computes them (`crate::window::locate`).
const GENERAL_HEAD: &str = r#"
local call, fmt, tonumber, floor = redis.call, string.format, tonumber, math.floor
local op, amount = ARGV[1], ARGV[2]
local a = tonumber(amount)
local now = tonumber(ARGV[3])
if not now then
  local t = call('TIME')
  now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
end
local margin = tonumber(ARGV[4])
local n = #KEYS
local keys, out = KEYS, {now, 0}
if ARGV[3] == '' then
  -- Only here is the window known: the client named each counter up to its index.
  keys = {}
  for i = 1, n do
    local w, phase = tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
    keys[i] = KEYS[i] .. fmt('%d', floor((now + w - phase) / w))
  end
end
if op == 'clear' then
  call('DEL', unpack(keys))
  for i = 1, n do out[i + 2] = 0 end
  return out
end
if op == 'peek' then
  local values = call('MGET', unpack(keys))
  for i = 1, n do out[i + 2] = tonumber(values[i]) or 0 end
  return out
end
if op == 'refund' then
  for i = 1, n do
    local stored = call('GET', keys[i])
    local v = tonumber(stored) or 0
    if v > 0 and a > 0 then
      if v <= a then
        call('DECRBY', keys[i], stored)
        v = 0
      else
        call('DECRBY', keys[i], amount)
        v = v - a
      end
    end
    out[i + 2] = v
  end
  return out
end
-- A check: the arguments CHECK takes, from these.
local cost, c, first = amount, a, 2
local args = {amount}
for i = 1, n do
  local at = 3 * i
  local w, phase = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  args[2 * i] = ARGV[at + 2]
  args[2 * i + 1] = fmt('%d', floor((now + w - phase) / w) * w + phase - now + margin)
end
"#;

/// A check, the end of both scripts: charges `cost` (`c` as a number) to each of the `n`
/// counters `keys`, giving a new counter its TTL; if any is over its limit, gives every charge
/// back. `args` is laid out as CHECK's ARGV. `out[first]` is then the bitmask of the counters
/// over, and `out[first + i]` is counter i's count as it stands. (Every argument and every
/// closure costs Redis more than a line of Lua: the shared code takes tables, not functions.)
const CHARGE: &str = r#"
local violated, bit = 0, 1
for i = 1, n do
  local key = keys[i]
  local v = redis.pcall('INCRBY', key, cost)
  if type(v) == 'table' then
    -- Redis keeps a failed script's writes: give back what was charged, then fail.
    for j = 1, i - 1 do call('DECRBY', keys[j], cost) end
    return v
  end
  if v == c then call('PEXPIRE', key, args[2 * i + 1]) end
  if v > tonumber(args[2 * i]) then violated = violated + bit end
  out[first + i] = v
  bit = bit * 2
end
if violated ~= 0 then
  out[first] = violated
  -- DECRBY's reply, not v - c: above 2^53 a Lua number no longer counts one by one, while a
  -- count at or below the limit is always exact.
  for i = 1, n do out[first + i] = call('DECRBY', keys[i], cost) end
end
return out
"#;

/// A script's source and SHA-1, computed once.
pub(crate) struct Script(::redis::Script);

/// The hot path: a check decided by the local clock.
pub(crate) static CHECK: LazyLock<Script> =
    LazyLock::new(|| Script(::redis::Script::new(&[CHECK_HEAD, CHARGE].concat())));

/// Peek, refund, clear, and every operation decided by Redis's time.
pub(crate) static GENERAL: LazyLock<Script> =
    LazyLock::new(|| Script(::redis::Script::new(&[GENERAL_HEAD, CHARGE].concat())));

impl Script {
    /// `EVALSHA <sha> <keys>`, to which the caller appends the keys, then the arguments.
    pub(crate) fn command(&self, keys: usize, capacity: usize) -> Cmd {
        let mut command = Cmd::with_capacity(7 + 4 * keys, capacity + 64);
        command
            .arg("EVALSHA")
            .arg(self.0.get_hash().as_bytes())
            .arg(keys);
        command
    }

    /// Runs `command` (from [`command`](Self::command)); after `NOSCRIPT` (a restart, a
    /// failover, `SCRIPT FLUSH`) loads the script and runs it again.
    pub(crate) async fn run(
        &self,
        command: &Cmd,
        connection: &mut impl ConnectionLike,
    ) -> RedisResult<Value> {
        match command.query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.0.load_async(connection).await?;
                command.query_async(connection).await
            }
            reply => reply,
        }
    }
}
