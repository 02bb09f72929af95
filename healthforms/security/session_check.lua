-- The authenticated hot path: check and touch one session, take one token from the
-- user's `api` bucket and check a CSRF token, in ONE round trip.
-- Prepended by gcra.lua (gcra_now_us, gcra_peek, gcra_commit).
-- All keys share the {<user_id>} hash tag, so they live in one Cluster slot.
-- KEYS[1]  session:{<user_id>}:<session_hash>
-- KEYS[2]  ratelimit:{<user_id>}:api            (read only when ARGV[4] == 1)
-- KEYS[3]  csrf:{<user_id>}:<token_id>           (read only when ARGV[8] == 1)
-- ARGV[1]  idle timeout, ms
-- ARGV[2]  absolute lifetime, ms (counted from the record's `c`)
-- ARGV[3]  session hash: the value a CSRF key of this session holds
-- ARGV[4]  take a bucket token 0|1; ARGV[5] emission interval us; ARGV[6] capacity;
-- ARGV[7]  cost
-- ARGV[8]  check the CSRF key 0|1
-- returns  {status, created_ms, last_seen_ms, ip, user_agent, allowed, remaining,
--           retry_after_ms, reset_after_ms, expires_in_ms}
--          status 1 ok, 0 no live session, 2 rate limited, 3 CSRF token not live here.
--          Only status 1 touches the session (last seen + sliding idle TTL).

local now_us = gcra_now_us()
local now_ms = math.floor(now_us / 1000)
local idle_ms = tonumber(ARGV[1])
local max_age_ms = tonumber(ARGV[2])

local rec = redis.call('HMGET', KEYS[1], 'c', 's', 'i', 'u')
if not rec[1] then
  return {0}
end
local created = tonumber(rec[1])
local left_ms = created + max_age_ms - now_ms
if left_ms <= 0 then
  -- Past its absolute lifetime: end it now rather than wait for the TTL.
  redis.call('DEL', KEYS[1])
  return {0}
end

local d = nil
if ARGV[4] == '1' then
  d = gcra_peek(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), now_us)
end

local function rate_reply(status)
  if not d then
    return {status, created, 0, '', '', 1, -1, 0, 0, 0}
  end
  local retry_ms = -1
  if d.retry_us >= 0 then
    retry_ms = math.ceil(d.retry_us / 1000)
  end
  return {status, created, 0, '', '', d.allowed, d.remaining, retry_ms,
    math.ceil(d.reset_us / 1000), 0}
end

if d and d.allowed == 0 then
  return rate_reply(2)
end

if ARGV[8] == '1' then
  if redis.call('GET', KEYS[3]) ~= ARGV[3] then
    -- A forged or foreign token still pays for the attempt.
    if d then gcra_commit(KEYS[2], d) end
    return rate_reply(3)
  end
end

if d then gcra_commit(KEYS[2], d) end
local ttl = idle_ms
if left_ms < ttl then
  ttl = left_ms
end
redis.call('HSET', KEYS[1], 's', now_ms)
redis.call('PEXPIRE', KEYS[1], ttl)
local reply = rate_reply(1)
reply[3] = tonumber(rec[2]) or created
reply[4] = rec[3] or ''
reply[5] = rec[4] or ''
reply[10] = ttl
return reply
