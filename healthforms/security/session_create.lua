-- Create a session record and add it to the user's index.
-- KEYS[1]  session:{<user_id>}:<session_hash>
-- KEYS[2]  sessions:{<user_id>}   ZSET member session_hash, score absolute end (ms)
-- ARGV[1]  session hash, ARGV[2] ip, ARGV[3] user agent (short), ARGV[4] method flags
-- ARGV[5]  idle timeout ms, ARGV[6] absolute lifetime ms, ARGV[7] most sessions per user
-- ARGV[8]  key prefix of a session record: "<prefix>session:{<user_id>}:"
-- ARGV[9]  key prefix of a CSRF token: "<prefix>csrf:{<user_id>}:"
-- ARGV[10] key prefix of a session's token index: "<prefix>csrfs:{<user_id>}:"
-- returns  {created_ms, expires_in_ms}  (security/sessions.py SessionCreate)
-- Every key gets a TTL: the record its idle timeout, the index the latest absolute end.
-- Each field stays far under 64 bytes so the hash keeps its compact listpack encoding.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idle_ms = tonumber(ARGV[5])
local max_age_ms = tonumber(ARGV[6])
local ends = now_ms + max_age_ms

redis.call('HSET', KEYS[1], 'c', now_ms, 's', now_ms, 'i', ARGV[2], 'u', ARGV[3], 'm', ARGV[4])
local ttl = idle_ms
if max_age_ms < ttl then ttl = max_age_ms end
redis.call('PEXPIRE', KEYS[1], ttl)

-- Drop index entries whose session ended; cap the rest so a login loop cannot grow it.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
redis.call('ZADD', KEYS[2], ends, ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if extra > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #oldest, 2 do
    -- Same {<user_id>} slot as KEYS[1]: the evicted session and its CSRF tokens.
    local hash = oldest[i]
    redis.call('DEL', ARGV[8] .. hash)
    local ids = redis.call('ZRANGE', ARGV[10] .. hash, 0, -1)
    for j = 1, #ids do
      redis.call('DEL', ARGV[9] .. ids[j])
    end
    redis.call('DEL', ARGV[10] .. hash)
  end
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], math.max(1, tonumber(last[2]) - now_ms))
return {now_ms, ttl}
