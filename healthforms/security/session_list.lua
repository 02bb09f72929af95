-- List the live sessions of one user, pruning index entries whose record is gone.
-- KEYS[1]  sessions:{<user_id>}
-- ARGV[1]  key prefix of a session record: "<prefix>session:{<user_id>}:"
-- ARGV[2]  absolute lifetime ms (unused: a record's TTL never outlasts it)
-- returns  flat array, 7 values per live session (security/sessions.py ListedSession):
--          hash, created_ms, last_seen_ms, ip, user_agent, method, expires_in_ms

local out = {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #all do
  local key = ARGV[1] .. all[i]
  local rec = redis.call('HMGET', key, 'c', 's', 'i', 'u', 'm')
  local ttl = redis.call('PTTL', key)
  if rec[1] and ttl > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = rec[1]
    out[#out + 1] = rec[2] or rec[1]
    out[#out + 1] = rec[3] or ''
    out[#out + 1] = rec[4] or ''
    out[#out + 1] = rec[5] or ''
    out[#out + 1] = ttl
  else
    redis.call('ZREM', KEYS[1], all[i])
  end
end
return out
