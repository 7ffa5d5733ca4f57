-- wrk script: django-phone-verify's register + verify pairs (bench/peer.py).
-- A register's code is read from the SMS backend's outbox file (one JSON line per
-- message: the number and the text, as a phone receives it), found by the number the
-- session token names (the token is a JWT; its payload carries the phone number).
-- A thread sends a verify whenever one is ready, else a new register.
-- wrk -t2 -c64 -d8s -s bench/peer_pair.lua http://127.0.0.1:PORT -- OUTBOX_FILE
local common = dofile("bench/common.lua")
local threads = {}
local counters = {"created", "valid", "invalid", "refused", "no_code"}
local JSON = {["Content-Type"] = "application/json"}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local b64 = {}
for i = 1, #B64 do b64[B64:byte(i)] = i - 1 end

local function b64url_decode(s)
  local out, acc, nbits = {}, 0, 0
  for i = 1, #s do
    local v = b64[s:byte(i)]
    if v then
      acc, nbits = acc * 64 + v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        local byte = math.floor(acc / 2 ^ nbits)
        out[#out + 1] = string.char(byte)
        acc = acc - byte * 2 ^ nbits
      end
    end
  end
  return table.concat(out)
end

local function token_number(token)
  local payload = token:match("^[^.]+%.([^.]+)%.")
  if not payload then return nil end
  return b64url_decode(payload):match('"phone_number":%s*"([^"]+)"')
end

setup = common.setup(threads)

local function on_line(line)
  local to = line:match('"to": "([^"]+)"')
  local code = line:match('"body": "%D*(%d+)')  -- the first digits of the text
  if to and code then codes[to] = code end
end

function init(args)
  outbox_path = args[1]
  common.init_pairs(outbox_path, on_line)
end


function request()
  local item = common.next_check()
  if item then
    local body = string.format(
      '{"phone_number":"%s","session_token":"%s","security_code":"%s"}',
      item[1], item[2], item[3])
    return wrk.format("POST", "/api/phone/verify", JSON, body)
  end
  local body = string.format('{"phone_number":"%s"}', common.number())
  return wrk.format("POST", "/api/phone/register", JSON, body)
end

function response(status, headers, body)
  if status ~= 200 then
    if status == 400 then invalid = invalid + 1 else refused = refused + 1 end
    return
  end
  local token = body:match('"session_token":%s*"([^"]+)"')
  if token == nil then
    if body:find("is valid", 1, true) then valid = valid + 1 else invalid = invalid + 1 end
    return
  end
  created = created + 1
  local number = token_number(token)
  local code = number and codes[number]
  if number and code == nil then
    read_outbox()
    code = codes[number]
  end
  if code == nil then
    no_code = no_code + 1
  else
    codes[number] = nil
    tail = tail + 1
    queue[tail] = {number, token, code}
  end
end

function done(summary, latency, requests)
  common.report(threads, summary, latency, counters)
end
