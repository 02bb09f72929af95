-- Charge tokens to one GCRA bucket for work already done (a PDF render that used a lot
-- of CPU): never refused, the bucket may go into debt, so the next requests wait until
-- the work is paid for. Prepended by gcra.lua (for gcra_now_us).
-- KEYS[1]  ratelimit:{<identifier>}:<policy>
-- ARGV[1]  emission interval of the policy, integer microseconds
-- ARGV[2]  capacity of the policy (rate + burst)
-- ARGV[3]  tokens to charge
-- ARGV[4]  most debt, in tokens: the TAT never runs further ahead than
--          capacity + this many emission intervals (a bounded wait, whatever the cost)
-- returns  {remaining, reset_after_ms}: tokens left (negative: debt), and the wait
--          until the bucket is full again
-- Uses the Redis clock (TIME), as the scripts that take tokens do.

local now_us = gcra_now_us()
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now_us then
  tat = now_us
end
local new_tat = tat + emission * tonumber(ARGV[3])
local ceiling = now_us + emission * (capacity + tonumber(ARGV[4]))
if new_tat > ceiling then
  new_tat = ceiling
end
if new_tat < tat then
  new_tat = tat
end
local reset_ms = math.ceil((new_tat - now_us) / 1000)
if reset_ms > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', reset_ms)
end
return {math.floor((emission * capacity - (new_tat - now_us)) / emission), reset_ms}
