-- Claim a public-form nonce for one submission, atomically.
-- KEYS[1]  nonce:{<form_public_id>}:<nonce_id>
-- ARGV[1]  HMAC digest of the answers being submitted (hex; never the answers)
-- ARGV[2]  claim lease in ms (a crashed instance's claim lapses and the database decides)
-- returns  the state before the call (submissions/nonces.py ClaimState):
--          "issued"   -> now "claiming:<digest>"; the caller stores the response. No key
--                        means issued: the caller checked the nonce's MAC and expiry, and
--                        a key flushed or evicted after use leaves the database's UNIQUE
--                        nonce id to refuse a second copy.
--          "claiming:<digest>"               another copy is being stored
--          "used:<digest>:<confirmation>"    already stored
local state = redis.call('GET', KEYS[1])
if state == false or state == 'issued' then
  redis.call('SET', KEYS[1], 'claiming:' .. ARGV[1], 'PX', ARGV[2])
  return 'issued'
end
return state
