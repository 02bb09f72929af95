-- GCRA token bucket, as a library prepended to the scripts that take tokens
-- (ratelimit.lua, and the session hot-path script, so the session check and the
-- user's bucket are still one round trip).
--
-- State: one key per identifier and policy holding the theoretical arrival time
-- (TAT) in integer microseconds of the Redis clock. Microseconds stay exact in a
-- Lua double (< 2^53), and they are written with %d: tostring() would round them.
-- Every quantity below is an integer number of microseconds, so the arithmetic is
-- exact and a pure-Python model (security/ratelimit.py LocalBuckets) agrees with it
-- to the microsecond.
--
-- gcra_peek(key, emission_us, capacity, cost, now_us) -> decision table:
--   allowed    1|0
--   remaining  tokens left after this request (when refused: tokens left now)
--   retry_us   wait until this cost could pass (0 when allowed; -1: cost larger
--              than the bucket, never)
--   reset_us   wait until the bucket is full again (after this request if allowed)
--   new_tat    TAT to store when allowed
--   cost       the cost asked for
--   emission_us
-- The caller commits allowed decisions with gcra_commit, so a request that needs
-- several buckets (api + pdf) either takes from all of them or from none; a bucket
-- that had room but was not charged is described by gcra_uncharged(decision).

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
  -- Tokens in the bucket now, in microseconds of refill (an integer).
  local level_us = tolerance - (tat - now_us)
  local d = {allowed = 0, remaining = math.floor(level_us / emission_us), retry_us = -1,
    reset_us = tat - now_us, new_tat = tat, cost = cost, emission_us = emission_us}
  if cost > capacity then
    -- Refuse outright: no wait would ever make room for it.
    return d
  end
  local slack = level_us - emission_us * cost
  if slack < 0 then
    -- Admit only when slack >= 0: rounding here (the "+0.5" of some ports) would
    -- admit a request before its token exists.
    d.retry_us = -slack
    return d
  end
  d.allowed = 1
  d.remaining = math.floor(slack / emission_us)
  d.retry_us = 0
  d.new_tat = tat + emission_us * cost
  d.reset_us = d.new_tat - now_us
  return d
end

local function gcra_uncharged(d)
  -- The bucket had room, but another bucket refused the request: nothing was taken.
  if d.allowed == 1 then
    d.allowed = 0
    d.new_tat = d.new_tat - d.emission_us * d.cost
    d.reset_us = d.reset_us - d.emission_us * d.cost
    d.remaining = d.remaining + d.cost
  end
  return d
end

-- gcra_take1: gcra_peek + gcra_commit for a single bucket, with no table per decision:
-- the common case (one policy) costs the server a third of the general path.
-- Returns the ratelimit.lua reply for one policy: allowed, remaining, retry_after_ms
-- (-1 never), reset_after_ms.
local function gcra_take1(key, emission_us, capacity, cost, now_us)
  local tat = tonumber(redis.call('GET', key))
  if not tat or tat < now_us then
    tat = now_us
  end
  local level_us = emission_us * capacity - (tat - now_us)
  if cost > capacity then
    return {0, math.floor(level_us / emission_us), -1, math.ceil((tat - now_us) / 1000)}
  end
  local slack = level_us - emission_us * cost
  if slack < 0 then
    return {0, math.floor(level_us / emission_us), math.ceil(-slack / 1000),
      math.ceil((tat - now_us) / 1000)}
  end
  local new_tat = tat + emission_us * cost
  local reset_ms = math.ceil((new_tat - now_us) / 1000)
  redis.call('SET', key, string.format('%d', new_tat), 'PX', reset_ms)
  return {1, math.floor(slack / emission_us), 0, reset_ms}
end

local function gcra_commit(key, decision)
  local ttl_ms = math.ceil(decision.reset_us / 1000)
  if ttl_ms > 0 then
    -- The key lives exactly until the bucket is full again: an idle client costs nothing.
    redis.call('SET', key, string.format('%d', decision.new_tat), 'PX', ttl_ms)
  end
end
