-- Give tokens back to one GCRA bucket: a request that took them turned out not to
-- count against the policy (a successful sign-in under `auth`: failures still count).
-- Prepended by gcra.lua (for gcra_now_us).
-- KEYS[1]  ratelimit:{<identifier>}:<policy>
-- ARGV[1]  emission interval of the policy, integer microseconds
-- ARGV[2]  tokens to give back (usually 1)
-- returns  reset_after_ms: until the bucket is full again (0: it is full; key deleted)
-- Never fuller than a full bucket: the TAT does not go below now. Uses the Redis clock
-- (TIME), as the scripts that take tokens do.

local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then
  return 0
end
local now_us = gcra_now_us()
local new_tat = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if new_tat <= now_us then
  redis.call('DEL', KEYS[1])
  return 0
end
local reset_ms = math.ceil((new_tat - now_us) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', reset_ms)
return reset_ms
