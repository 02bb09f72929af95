-- One request shape, repeated: method, path, body and headers from the environment.
-- WRK_METHOD (GET), WRK_PATH (/), WRK_BODY (""), WRK_HEADERS ("Name: value" lines),
-- WRK_OUT: where done() writes the figures as JSON (common.lua).

local common = dofile(os.getenv("WRK_LIB"))
local body = os.getenv("WRK_BODY")
local prepared = wrk.format(
  os.getenv("WRK_METHOD") or "GET", os.getenv("WRK_PATH") or "/",
  common.headers(os.getenv("WRK_HEADERS"), body), body ~= "" and body or nil)

request = function()
  return prepared
end

done = function(summary, latency, requests)
  common.write(summary, latency)
end
