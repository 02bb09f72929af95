-- What every script here shares (loaded with dofile(os.getenv("WRK_LIB"))): the request
-- headers from WRK_HEADERS, answers counted per thread, and done()'s JSON for WRK_OUT
-- (latency in microseconds). Scripts run with -t1: one thread's counters.

local common = {}

-- "Name: value" lines -> a table; Content-Type JSON when there is a body and none given.
function common.headers(raw, body)
  local headers = {}
  for line in string.gmatch(raw or "", "[^\n]+") do
    local name, value = string.match(line, "^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  if body and body ~= "" and not headers["Content-Type"] then
    headers["Content-Type"] = "application/json"
  end
  return headers
end

-- Sum the named globals of every thread (kept in setup()).
function common.totals(threads, names)
  local totals = {}
  for _, name in ipairs(names) do
    totals[name] = 0
    for _, thread in ipairs(threads) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
  end
  return totals
end

-- Write the run's figures; `section` and `counts` (optional) add "<section>": {...}.
function common.write(summary, latency, section, names, counts)
  local out = os.getenv("WRK_OUT")
  if not out then return end
  local extra = ""
  if section then
    local parts = {}
    for _, name in ipairs(names) do
      table.insert(parts, string.format('"%s": %d', name, counts[name]))
    end
    extra = string.format('"%s": {%s}, ', section, table.concat(parts, ", "))
  end
  local f = io.open(out, "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    extra ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end

return common
