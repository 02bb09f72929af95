-- Take `cost` tokens from one or more GCRA buckets at once (all or none).
-- Prepended by gcra.lua.
-- KEYS[i]      ratelimit:{<identifier>}:<policy>, one per policy
-- ARGV[3i-2]   emission interval of policy i, integer microseconds
-- ARGV[3i-1]   capacity of policy i (rate + burst)
-- ARGV[3i]     cost for policy i (usually 1)
-- returns      flat array, 4 integers per policy, in KEYS order:
--              allowed 0|1, remaining, retry_after_ms (-1 never), reset_after_ms
--              (retry and reset rounded up to whole milliseconds)
-- Uses the Redis clock (TIME) so app hosts cannot skew the buckets.

local now_us = gcra_now_us()
local decisions = {}
local all_allowed = true
for i = 1, #KEYS do
  local d = gcra_peek(KEYS[i], tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]),
    tonumber(ARGV[3 * i]), now_us)
  decisions[i] = d
  if d.allowed == 0 then
    all_allowed = false
  end
end

local out = {}
for i = 1, #KEYS do
  local d = decisions[i]
  if all_allowed then
    gcra_commit(KEYS[i], d)
  end
  local allowed = d.allowed
  local remaining = d.remaining
  if not all_allowed and allowed == 1 then
    -- Another bucket refused the request, so this one was not charged.
    allowed = 0
    remaining = remaining + 1
  end
  local retry_ms = -1
  if d.retry_us >= 0 then
    retry_ms = math.ceil(d.retry_us / 1000)
  end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = retry_ms
  out[#out + 1] = math.ceil(d.reset_us / 1000)
end
return out
