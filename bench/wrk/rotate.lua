-- One request shape over several paths, taken in turn, with every answer's status
-- counted. WRK_METHOD (GET), WRK_PATHS (one path per line), WRK_BODY (""),
-- WRK_HEADERS ("Name: value" lines), WRK_OUT as in request.lua; done() adds
-- "statuses": {"2xx", "409", "4xx", "5xx"} (run with -t1: one thread's counters).

local method = os.getenv("WRK_METHOD") or "GET"
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

local prepared = {}
for path in string.gmatch(os.getenv("WRK_PATHS") or "/", "[^\n]+") do
  table.insert(prepared, wrk.format(method, path, headers, body ~= "" and body or nil))
end
local turn = 0

ok, conflict, other4xx, server5xx = 0, 0, 0, 0
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

request = function()
  turn = turn % #prepared + 1
  return prepared[turn]
end

response = function(status, headers, body)
  if status < 300 then ok = ok + 1
  elseif status == 409 then conflict = conflict + 1
  elseif status < 500 then other4xx = other4xx + 1
  else server5xx = server5xx + 1 end
end

done = function(summary, latency, requests)
  local out = os.getenv("WRK_OUT")
  if not out then return end
  local counts = { ok = 0, conflict = 0, other4xx = 0, server5xx = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do
      counts[name] = counts[name] + (thread:get(name) or 0)
    end
  end
  local f = io.open(out, "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"statuses": {"2xx": %d, "409": %d, "4xx": %d, "5xx": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    counts.ok, counts.conflict, counts.other4xx, counts.server5xx,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
