-- Take a lock (SET NX PX) and its fencing number in one round trip.
-- Re-entrant for the holder's own token; fair: while tokens wait in the FIFO
-- queue, only the one at its head may take a free lock, so no waiter starves.
-- KEYS[1]  lock:<kind>:{<id>}          the lease; value = the holder's token
-- KEYS[2]  fence:<kind>:{<id>}         fencing counter (last number handed out)
-- KEYS[3]  lock:<kind>:{<id>}:queue    ZSET waiting token -> arrival (µs, Redis clock)
-- KEYS[4]  lock:<kind>:{<id>}:alive    HASH waiting token -> deadline (µs) of its last poll
-- ARGV[1]  token
-- ARGV[2]  lease in ms
-- ARGV[3]  TTL in ms of the fencing counter (refreshed on every use)
-- ARGV[4]  1 = join the queue when the lock is not free, 0 = do not
-- ARGV[5]  waiter lease in ms: a waiter that stops polling for this long loses its place
-- ARGV[6]  1 = re-enter only: renew the token's own lock, never take a free one
--          (a save checking "is it mine?" in the same round trip); absent or 0 = acquire
-- returns  {status, fence, holder, ttl_ms} (security/locks.py LockAcquire):
--          {1, fence, '', lease_ms}    acquired: a new fencing number
--          {2, fence, '', lease_ms}    this token already held it: lease renewed, same fence
--                                      (a new one only if the fencing counter was lost)
--          {0, 0, holder, pttl_ms}     not taken: another token holds it
--          {0, 0, '', 0}               not taken although free: waiters come first, or
--                                      ARGV[6] = 1 (re-enter only)
-- Fencing numbers are max(counter + 1, Redis time in µs): they keep growing even
-- after a FLUSH, a restart without persistence or a spell on the database fallback.
local token = ARGV[1]
local lease = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function issue_fence()
  local fence = redis.call('INCR', KEYS[2])
  if fence < now then
    fence = now
    -- %d: tostring() would print a 16-digit number in exponent form.
    redis.call('SET', KEYS[2], string.format('%d', now), 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return fence
end

local current = redis.call('GET', KEYS[1])
if current == token then
  redis.call('PEXPIRE', KEYS[1], lease)
  local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
  if fence > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  else
    fence = issue_fence()
  end
  return {2, fence, '', lease}
end

if ARGV[6] == '1' then
  if current then
    return {0, 0, current, redis.call('PTTL', KEYS[1])}
  end
  return {0, 0, '', 0}
end

if not current then
  -- Drop waiters that stopped polling (crashed, cancelled) from the head of the queue.
  local head = false
  while true do
    local first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not first then break end
    local deadline = tonumber(redis.call('HGET', KEYS[4], first) or '0')
    if deadline >= now then
      head = first
      break
    end
    redis.call('ZREM', KEYS[3], first)
    redis.call('HDEL', KEYS[4], first)
  end
  if (not head) or head == token then
    redis.call('SET', KEYS[1], token, 'NX', 'PX', lease)
    if head then
      redis.call('ZREM', KEYS[3], token)
      redis.call('HDEL', KEYS[4], token)
    end
    return {1, issue_fence(), '', lease}
  end
end

if ARGV[4] == '1' then
  local waiter_lease = tonumber(ARGV[5])
  if not redis.call('ZSCORE', KEYS[3], token) then
    redis.call('ZADD', KEYS[3], now, token)
  end
  redis.call('HSET', KEYS[4], token, string.format('%d', now + waiter_lease * 1000))
  -- Every live waiter refreshes these TTLs; they vanish once nobody waits.
  redis.call('PEXPIRE', KEYS[3], waiter_lease * 2)
  redis.call('PEXPIRE', KEYS[4], waiter_lease * 2)
end
if current then
  return {0, 0, current, redis.call('PTTL', KEYS[1])}
end
return {0, 0, '', 0}
