-- A patient's round: fetch the public form (which issues a nonce), then submit it.
-- WRK_PUBLIC_ID: the form's public id; WRK_ANSWERS: the answers object as JSON;
-- WRK_OUT as in request.lua. Nonces are queued per thread: every response to a fetch
-- feeds one submission, so requests alternate fetch / submit at any concurrency.

local public_id = os.getenv("WRK_PUBLIC_ID")
local answers = os.getenv("WRK_ANSWERS") or "{}"
local fetch_path = "/api/public/forms/" .. public_id
local submit_path = fetch_path .. "/responses"
local nonces = {}
local fetch = wrk.format("GET", fetch_path)
local json_headers = { ["Content-Type"] = "application/json" }

request = function()
  local nonce = table.remove(nonces)
  if nonce then
    local body = '{"nonce": "' .. nonce .. '", "answers": ' .. answers .. '}'
    return wrk.format("POST", submit_path, json_headers, body)
  end
  return fetch
end

response = function(status, headers, body)
  if status == 200 then
    local nonce = string.match(body, '"nonce"%s*:%s*"([^"]+)"')
    if nonce then table.insert(nonces, nonce) end
  end
end

done = function(summary, latency, requests)
  local out = os.getenv("WRK_OUT")
  if not out then return end
  local f = io.open(out, "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
