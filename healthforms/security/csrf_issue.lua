-- Hand out a CSRF token for one live session without ever revoking another.
-- KEYS[1]  session:{<user_id>}:<session_hash>  (must exist)
-- KEYS[2]  csrfs:{<user_id>}:<session_hash>     ZSET token_id -> expiry ms (the cap)
-- KEYS[3]  csrf:{<user_id>}:<new_token_id>      value: the session hash
-- ARGV[1]  session hash, ARGV[2] new token id, ARGV[3] token lifetime ms,
-- ARGV[4]  most live tokens per session
-- returns  {0} no live session; {1, expiry_ms} the new token was stored;
--          {2, token_id, expiry_ms} the cap is reached: the newest live token is
--          handed out again instead (nothing is revoked, Redis cannot grow).
--          (security/csrf.py CsrfIssue)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local life = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms + 60000)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  return {2, newest[1], tonumber(newest[2])}
end
-- Whole seconds: the expiry travels in the token and is signed there.
local expiry = (math.floor((now_ms + life) / 1000)) * 1000
redis.call('SET', KEYS[3], ARGV[1], 'PX', expiry - now_ms)
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[2], expiry - now_ms)
return {1, expiry}
