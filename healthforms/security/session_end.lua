-- End sessions of one user: their records, their index entries and their CSRF tokens.
-- KEYS[1]  sessions:{<user_id>}  (the index)
-- ARGV[1]  key prefix of a session record:  "<prefix>session:{<user_id>}:"
-- ARGV[2]  key prefix of a CSRF token:      "<prefix>csrf:{<user_id>}:"
-- ARGV[3]  key prefix of a session's token index: "<prefix>csrfs:{<user_id>}:"
-- ARGV[4]  "*" for every session of the user, else one session hash
-- returns  number of live sessions ended  (security/sessions.py SessionEnd)
-- Every key touched carries the {<user_id>} tag of KEYS[1], so all share one slot.

local function end_one(hash)
  local ended = redis.call('DEL', ARGV[1] .. hash)
  local idx = ARGV[3] .. hash
  local ids = redis.call('ZRANGE', idx, 0, -1)
  for i = 1, #ids do
    redis.call('DEL', ARGV[2] .. ids[i])
  end
  redis.call('DEL', idx)
  redis.call('ZREM', KEYS[1], hash)
  return ended
end

local count = 0
if ARGV[4] == '*' then
  local all = redis.call('ZRANGE', KEYS[1], 0, -1)
  for i = 1, #all do
    count = count + end_one(all[i])
  end
  redis.call('DEL', KEYS[1])
else
  count = end_one(ARGV[4])
end
return count
