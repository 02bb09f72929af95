-- Count one failed sign-in for an account; lock it when the limit is reached.
-- KEYS[1]  loginfail:{<account_tag>}
-- ARGV[1]  failures allowed per window, ARGV[2] window ms, ARGV[3] lockout ms
-- returns  {failures, locked 0|1}
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if n == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return {n, 1}
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return {n, 0}
