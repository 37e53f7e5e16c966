-- wrk script for bench/bench_sessions.py: heartbeats to a session store.
--
-- Each request upserts one of the N sessions the bench preloaded (`bench-000000` ..),
-- picked at random, with a fresh event.id and event.time and one of a few pages, as a
-- JSON body; X-Forwarded-For varies the visitor's address (geo) through the trusted
-- proxy setting. So the store stays at N live sessions while every request changes one.
--
-- Usage: wrk ... -s session_update.lua URL -- TOKEN N ASYNC(true|false)

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local pages = { "/", "/pricing", "/blog", "/docs/getting-started", "/products/trail-runner-2",
  "/cart", "/checkout", "/search", "/about", "/account/settings" }
local ips = { "81.2.69.142", "216.160.83.56", "2.125.160.216", "89.160.20.112",
  "175.16.199.10", "67.43.156.5", "81.2.69.160", "216.160.83.60", "202.196.224.5",
  "2.125.160.220" }

function init(args)
  token = args[1]
  sessions = tonumber(args[2])
  async = args[3]
  sent = 0
  math.randomseed(os.time() + tid * 7919)
  base_ms = os.time() * 1000
end

function request()
  sent = sent + 1
  local i = math.random(0, sessions - 1)
  local body = string.format(
    '{"store":"stash","async":%s,"ops":[{"upsert":[{"session":{"id":"bench-%06d"},'
      .. '"event":{"id":"w%d-%d","time":%d,"type":"heartbeat","data":{"page":"%s"}}}]}]}',
    async, i, tid, sent, base_ms + sent, pages[(i % #pages) + 1])
  local headers = {
    ["m1-auth-token"] = token,
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = ips[(i % #ips) + 1],
  }
  return wrk.format("POST", "/session/update", headers, body)
end

function done(summary, latency, requests)
  local sent_total = 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
  end
  local e = summary.errors
  io.write(string.format(
    '@@WRK {"requests": %d, "duration_us": %d, "sent": %d, "err_connect": %d, '
      .. '"err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, '
      .. '"p50_us": %d, "p99_us": %d, "lat_max_us": %d}\n',
    summary.requests, summary.duration, sent_total, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
