-- Extend a lock's lease, only for its holder (compare, then PEXPIRE).
-- KEYS[1]  lock:<kind>:{<id>}
-- ARGV[1]  the holder's token
-- ARGV[2]  new lease in ms
-- ARGV[3]  1 = take the lock back if it is free (a lease coming back from the
--          database fallback after an outage), 0 = renew only
-- returns  1 renewed, 2 taken back, 0 another holder has it or the lease lapsed
--          (security/locks.py LockRenew)
-- Taking a free lock back is safe: anyone who held it in between has a higher
-- fencing number, so a stale write of ours is refused by the database.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if (not current) and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
