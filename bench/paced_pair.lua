-- wrk script: pair.lua's start + check pairs at a set pace, for latency under load
-- below saturation: each connection waits PACE_MS before each of its requests.
-- bench/http.py sets the pace to about half of the rate the saturated run reached.
-- Each wait is drawn at random around the pace (mean PACE_MS, from 0 to twice it),
-- so that the connections do not fire in waves.
-- wrk -t2 -c64 -d8s -s bench/paced_pair.lua http://127.0.0.1:PORT -- API_KEY OUTBOX_FILE PACE_MS
dofile("bench/pair.lua")
local pair_init = init

function init(args)
  pace = tonumber(args[3])
  pair_init(args)
end

function delay()
  return math.random() * 2 * pace
end
