-- wrk script: POST /v1/verifications only, distinct numbers and client IPs.
-- wrk -t2 -c64 -d8s -s bench/start.lua http://127.0.0.1:PORT -- API_KEY
local common = dofile("bench/common.lua")
local threads = {}
local counters = {"created", "refused"}

function setup(thread)
  thread:set("seed", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  key = args[1]
  math.randomseed(os.time() * 1000 + seed)
  created, refused = 0, 0
end

function request()
  return common.start_request(key)
end

function response(status, headers, body)
  if status == 201 then created = created + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  common.report(threads, summary, latency, counters)
end
