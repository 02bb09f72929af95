-- One request shape over several paths, taken in turn, with every answer's status
-- counted. WRK_METHOD (GET), WRK_PATHS (one path per line), WRK_BODY (""),
-- WRK_HEADERS ("Name: value" lines), WRK_OUT as in request.lua, plus
-- "statuses": {"2xx", "409", "4xx", "5xx"}.

local common = dofile(os.getenv("WRK_LIB"))
local method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
local headers = common.headers(os.getenv("WRK_HEADERS"), body)

local prepared = {}
for path in string.gmatch(os.getenv("WRK_PATHS") or "/", "[^\n]+") do
  table.insert(prepared, wrk.format(method, path, headers, body ~= "" and body or nil))
end
local turn = 0

ok, conflict, other4xx, server5xx = 0, 0, 0, 0
local names = { "ok", "conflict", "other4xx", "server5xx" }
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
  local totals = common.totals(threads, names)
  local counts = { ["2xx"] = totals.ok, ["409"] = totals.conflict,
                   ["4xx"] = totals.other4xx, ["5xx"] = totals.server5xx }
  common.write(summary, latency, "statuses", { "2xx", "409", "4xx", "5xx" }, counts)
end
