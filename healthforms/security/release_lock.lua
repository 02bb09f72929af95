-- Release a lock only if the caller still holds it (compare, then delete).
-- KEYS[1]  lock:<kind>:{<id>}
-- ARGV[1]  the holder's token
-- returns  1 released, 0 not held by this token (lapsed, or a newer holder has it)
--          (security/locks.py LockRelease)
-- In one script: a holder whose lease expired must not delete the lock that a
-- newer holder has taken since.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
