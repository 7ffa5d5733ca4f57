-- Shared by the otpguard wrk scripts (loaded with dofile from bench/).
-- Per-thread counters are read back in done() through the thread objects.
local M = {}

function M.number()
  -- +447400 plus six random digits: valid UK mobiles, spread over 100 prefixes.
  return string.format("+447400%06d", math.random(0, 999999))
end

function M.ip()
  return string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255),
                       math.random(1, 254))
end

function M.start_request(key)
  local body = string.format('{"to":"%s","client_ip":"%s"}', M.number(), M.ip())
  return wrk.format("POST", "/v1/verifications",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

function M.check_request(key, id, code)
  local body = string.format('{"id":"%s","code":"%s","client_ip":"%s"}', id, code, M.ip())
  return wrk.format("POST", "/v1/verifications/check",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

-- An outbox file read as a phone reads its messages: new lines only (from the end of
-- the file at the start of the run), each handed to ``on_line``. Returns the reader.
function M.outbox_reader(path, on_line)
  local file, buf = io.open(path, "r"), ""
  if file then file:seek("end") end  -- only messages sent during this run
  return function()
    if not file then
      file = io.open(path, "r")
      if not file then return end
    end
    file:seek("cur", 0)  -- clears the stdio EOF flag so that new lines are seen
    local data = file:read("*a")
    if data == nil or #data == 0 then return end
    buf = buf .. data
    local last = 1
    for line, pos in buf:gmatch("([^\n]*)\n()") do
      on_line(line)
      last = pos
    end
    buf = buf:sub(last)
  end
end

-- wrk's setup(): number the threads (each seeds its own random numbers) and keep them
-- for done(). Used as ``setup = common.setup(threads)``.
function M.setup(threads)
  return function(thread)
    thread:set("seed", #threads + 1)
    table.insert(threads, thread)
  end
end

-- A pair script's per-thread state (its globals), with codes read from the outbox at
-- ``outbox_path`` by ``on_line``: counters, the codes seen, the queue of checks.
function M.init_pairs(outbox_path, on_line)
  math.randomseed(os.time() * 1000 + seed)
  created, valid, invalid, refused, no_code = 0, 0, 0, 0, 0
  codes = {}
  queue, head, tail = {}, 1, 0
  read_outbox = M.outbox_reader(outbox_path, on_line)
end

-- The next queued check of a pair script (its globals queue, head, tail), or nil.
function M.next_check()
  if head > tail then return nil end
  local item = queue[head]
  queue[head] = nil
  head = head + 1
  return item
end

-- Print one machine-readable line; bench/http.py parses it.
function M.report(threads, summary, latency, counters)
  local totals = {}
  for _, name in ipairs(counters) do totals[name] = 0 end
  for _, t in ipairs(threads) do
    for _, name in ipairs(counters) do totals[name] = totals[name] + (t:get(name) or 0) end
  end
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"socket_errors":%d', summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout),
    string.format('"non2xx":%d', summary.errors.status),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"max_us":%d', latency.max),
  }
  for _, name in ipairs(counters) do
    table.insert(parts, string.format('"%s":%d', name, totals[name]))
  end
  io.write("WRK_RESULT {" .. table.concat(parts, ",") .. "}\n")
end

return M
