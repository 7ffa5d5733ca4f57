-- wrk script: POST /v1/verifications/check with the right code, once per verification.
-- The (id, code) list comes from the file outbox, written there by the server's
-- transport the way a phone receives a message; each thread takes every n-th line
-- and stops when its share runs out, so no verification is checked twice.
-- wrk -t2 -c64 -d8s -s bench/check.lua http://127.0.0.1:PORT -- API_KEY CHECKS_FILE
local common = dofile("bench/common.lua")
local threads = {}
local counters = {"valid", "invalid"}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  key = args[1]
  math.randomseed(os.time() * 1000 + index)
  valid, invalid = 0, 0
  todo, next_item = {}, 1
  local n, nthreads = 0, tonumber(args[3])
  for line in io.lines(args[2]) do
    if n % nthreads == index then
      local id, code = line:match("^(%S+) (%d+)$")
      table.insert(todo, {id, code})
    end
    n = n + 1
  end
end

function request()
  local item = todo[next_item]
  if item == nil then
    wrk.thread:stop()
    item = todo[#todo]
  end
  next_item = next_item + 1
  return common.check_request(key, item[1], item[2])
end

function response(status, headers, body)
  if body:find('"valid":true', 1, true) then valid = valid + 1 else invalid = invalid + 1 end
end

function done(summary, latency, requests)
  common.report(threads, summary, latency, counters)
end
