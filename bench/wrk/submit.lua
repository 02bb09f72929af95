-- A patient's round: fetch the public form (which issues a nonce), then submit it.
-- WRK_PUBLIC_ID: the form's public id; WRK_ANSWERS: the answers object as JSON;
-- WRK_OUT as in request.lua, plus "submissions": {fetched, accepted, refused}. Nonces
-- are queued per thread: every response to a fetch feeds one submission, so requests
-- alternate fetch / submit at any concurrency.

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
  local out = os.getenv("WRK_OUT")
  if not out then return end
  local counts = { fetched = 0, accepted = 0, refused = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do
      counts[name] = counts[name] + (thread:get(name) or 0)
    end
  end
  local f = io.open(out, "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"submissions": {"fetched": %d, "accepted": %d, "refused": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    counts.fetched, counts.accepted, counts.refused,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
