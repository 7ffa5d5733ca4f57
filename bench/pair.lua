-- wrk script: full start + check pairs. Each created verification's code is read
-- from the file outbox (as a phone would receive it) and checked once, right code.
-- A thread sends a check whenever one is ready, else a new start.
-- wrk -t2 -c64 -d8s -s bench/pair.lua http://127.0.0.1:PORT -- API_KEY OUTBOX_FILE
local common = dofile("bench/common.lua")
local threads = {}
local counters = {"created", "valid", "invalid", "refused", "no_code"}

setup = common.setup(threads)

local function on_line(line)
  local id = line:match('"verification_id": "([^"]+)"')
  local code = line:match('"code": "(%d+)"')
  if id and code then codes[id] = code end
end

function init(args)
  key, outbox_path = args[1], args[2]
  common.init_pairs(outbox_path, on_line)
end


function request()
  local item = common.next_check()
  if item then return common.check_request(key, item[1], item[2]) end
  return common.start_request(key)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
    local id = body:match('"id":"(VE%x+)"')
    local code = codes[id]
    if code == nil then
      read_outbox()
      code = codes[id]
    end
    if code == nil then
      no_code = no_code + 1
    else
      codes[id] = nil
      tail = tail + 1
      queue[tail] = {id, code}
    end
  elseif status == 200 then
    if body:find('"valid":true', 1, true) then valid = valid + 1 else invalid = invalid + 1 end
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  common.report(threads, summary, latency, counters)
end
