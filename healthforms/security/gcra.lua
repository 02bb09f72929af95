-- GCRA token bucket, as a library prepended to the scripts that take tokens
-- (ratelimit.lua, and the session hot-path script, so the session check and the
-- user's bucket are still one round trip).
--
-- State: one key per identifier and policy holding the theoretical arrival time
-- (TAT) in integer microseconds of the Redis clock. Microseconds stay exact in a
-- Lua double (< 2^53), and they are written with %d: tostring() would round them.
--
-- gcra_peek(key, emission_us, capacity, cost, now_us) -> decision table:
--   allowed    1|0
--   remaining  tokens left after this request (0 when refused)
--   retry_us   wait until this cost could pass (-1: cost larger than the bucket, never)
--   reset_us   wait until the bucket is full again
--   new_tat    TAT to store when allowed
-- The caller commits allowed decisions with gcra_commit, so a request that needs
-- several buckets (api + pdf) either takes from all of them or from none.

local function gcra_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function gcra_peek(key, emission_us, capacity, cost, now_us)
  local tat = tonumber(redis.call('GET', key))
  if not tat or tat < now_us then
    tat = now_us
  end
  local tolerance = emission_us * capacity
  if cost > capacity then
    -- Refuse outright: no wait would ever make room for it.
    return {allowed = 0, remaining = 0, retry_us = -1, reset_us = tat - now_us, new_tat = tat}
  end
  local new_tat = tat + emission_us * cost
  local allow_at = new_tat - tolerance
  local slack = now_us - allow_at
  if slack < 0 then
    -- Admit only when slack >= 0: rounding here would admit early.
    return {allowed = 0, remaining = 0, retry_us = -slack, reset_us = tat - now_us, new_tat = tat}
  end
  return {
    allowed = 1,
    remaining = math.floor(slack / emission_us),
    retry_us = 0,
    reset_us = new_tat - now_us,
    new_tat = new_tat,
  }
end

local function gcra_commit(key, decision)
  local ttl_ms = math.ceil(decision.reset_us / 1000)
  if ttl_ms > 0 then
    -- The key lives exactly until the bucket is full again: an idle client costs nothing.
    redis.call('SET', key, string.format('%d', decision.new_tat), 'PX', ttl_ms)
  end
end
