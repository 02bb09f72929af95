-- A patient's round: fetch the public form (which issues a nonce), then submit it.
-- WRK_PUBLIC_ID: the form's public id; WRK_ANSWERS: the answers object as JSON;
-- WRK_OUT as in request.lua, plus "submissions": {fetched, accepted, refused}. Nonces
-- are queued per thread: every response to a fetch feeds one submission, so requests
-- alternate fetch / submit at any concurrency.

local common = dofile(os.getenv("WRK_LIB"))
local public_id = os.getenv("WRK_PUBLIC_ID")
local answers = os.getenv("WRK_ANSWERS") or "{}"
local fetch_path = "/api/public/forms/" .. public_id
local submit_path = fetch_path .. "/responses"
local nonces = {}
local fetch = wrk.format("GET", fetch_path)
local json_headers = { ["Content-Type"] = "application/json" }
-- Answers counted by kind (read back in done(); run with -t1).
fetched, accepted, refused = 0, 0, 0
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

request = function()
  local nonce = table.remove(nonces)
  if nonce then
    local body = '{"nonce": "' .. nonce .. '", "answers": ' .. answers .. '}'
    return wrk.format("POST", submit_path, json_headers, body)
  end
  return fetch
end

response = function(status, headers, body)
  if status == 201 then accepted = accepted + 1
  elseif status >= 300 then refused = refused + 1 end
  if status == 200 then
    fetched = fetched + 1
    local nonce = string.match(body, '"nonce"%s*:%s*"([^"]+)"')
    if nonce then table.insert(nonces, nonce) end
  end
end

done = function(summary, latency, requests)
  local names = { "fetched", "accepted", "refused" }
  common.write(summary, latency, "submissions", names, common.totals(threads, names))
end
