-- Take `cost` tokens from one or more GCRA buckets at once (all or none).
-- Prepended by gcra.lua.
-- KEYS[i]      ratelimit:{<identifier>}:<policy>, one per policy
-- ARGV[3i-2]   emission interval of policy i, integer microseconds
-- ARGV[3i-1]   capacity of policy i (rate + burst)
-- ARGV[3i]     cost for policy i (usually 1)
-- ARGV[3n+1]   optional, TESTS ONLY: "now" in microseconds instead of the Redis
--              clock, so a test can replay exact arrival times; the service never
--              sends it.
-- returns      flat array, 4 integers per policy, in KEYS order:
--              allowed 0|1, remaining, retry_after_ms (0 when it had room, -1 never),
--              reset_after_ms (retry and reset rounded up to whole milliseconds)
--              (security/ratelimit.py GcraReply)
-- Uses the Redis clock (TIME) so app hosts cannot skew the buckets.

local n = #KEYS
local now_us = tonumber(ARGV[3 * n + 1]) or gcra_now_us()
if n == 1 then
  return gcra_take1(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now_us)
end
local decisions = {}
local all_allowed = true
for i = 1, n do
  local d = gcra_peek(KEYS[i], tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]),
    tonumber(ARGV[3 * i]), now_us)
  decisions[i] = d
  if d.allowed == 0 then
    all_allowed = false
  end
end

local out = {}
for i = 1, n do
  local d = decisions[i]
  if all_allowed then
    gcra_commit(KEYS[i], d)
  else
    gcra_uncharged(d)
  end
  local retry_ms = -1
  if d.retry_us >= 0 then
    retry_ms = math.ceil(d.retry_us / 1000)
  end
  out[#out + 1] = d.allowed
  out[#out + 1] = d.remaining
  out[#out + 1] = retry_ms
  out[#out + 1] = math.ceil(d.reset_us / 1000)
end
return out
