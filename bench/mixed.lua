-- wrk script for bench/run.sh --soak: mixed traffic, in turn a 1 KiB blob GET, a manifest GET
-- (Bearer token) and a token request (Basic auth), so the soak exercises the proxy path and
-- the token service together. Arguments after `--`: BLOB_PATH MANIFEST_PATH TOKEN_PATH
-- BEARER_HEADER_VALUE BASIC_HEADER_VALUE MANIFEST_ACCEPT. Prints report.lua's BENCH line.
local requests = {}
local n = 0

init = function(args)
  local blob, manifest, token, bearer, basic, accept = args[1], args[2], args[3], args[4], args[5], args[6]
  requests[1] = wrk.format("GET", blob, { Authorization = bearer })
  requests[2] = wrk.format("GET", manifest, { Authorization = bearer, Accept = accept })
  requests[3] = wrk.format("GET", token, { Authorization = basic })
end

request = function()
  n = n % #requests + 1
  return requests[n]
end

-- The result line: report.lua's, loaded from next to this file.
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "report.lua")
