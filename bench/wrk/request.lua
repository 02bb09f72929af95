-- One request shape, repeated: method, path, body and headers from the environment.
-- WRK_METHOD (GET), WRK_PATH (/), WRK_BODY (""), WRK_HEADERS ("Name: value" lines),
-- WRK_OUT: where done() writes the figures as JSON (latency in microseconds).

local method = os.getenv("WRK_METHOD") or "GET"
local path = os.getenv("WRK_PATH") or "/"
local body = os.getenv("WRK_BODY")
local raw_headers = os.getenv("WRK_HEADERS") or ""

local headers = {}
for line in string.gmatch(raw_headers, "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end
if body and body ~= "" and not headers["Content-Type"] then
  headers["Content-Type"] = "application/json"
end

local prepared = wrk.format(method, path, headers, body ~= "" and body or nil)

request = function()
  return prepared
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
