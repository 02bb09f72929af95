-- Give a claimed nonce back (the storage failed): claiming:<digest> -> issued (no key).
-- KEYS[1]  nonce:{<form_public_id>}:<nonce_id>
-- ARGV[1]  HMAC digest the claim was taken with
-- returns  1 if released, 0 if the key was not this claim (compare-then-act)
--          (submissions/nonces.py NonceRelease)
if redis.call('GET', KEYS[1]) == 'claiming:' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
