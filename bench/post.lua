-- wrk script for bench/bench_ingest.py.
--
-- POSTs form-encoded /write bodies in which every event gets a fresh event.id and
-- event.time, so the server indexes ever-new terms as it would with real traffic (a
-- fixed body would only ever hit existing postings). It also counts what it sent, so the
-- bench can check the events stored against the events sent and acknowledged.
--
-- Usage: wrk ... -s post.lua URL -- DATAFILE
-- DATAFILE is a Lua chunk written by bench/http_load.py (`write_wrk_data`) returning
-- {path=, headers=, prefix=, base_ms=, templates={{seg, seg, ...}, ...}}. A template's
-- segments surround the per-event values: seg1 ID seg2 TIME seg3 ID seg4 TIME ... segN.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local data = dofile(args[1])
  templates = data.templates
  path = data.path
  headers = data.headers
  prefix = data.prefix
  base_ms = data.base_ms
  sent = 0
  events = 0
end

function request()
  sent = sent + 1
  local parts = templates[(sent - 1) % #templates + 1]
  local buf = { parts[1] }
  local n = 1
  for i = 2, #parts, 2 do
    events = events + 1
    buf[n + 1] = string.format("%s%04x%08x", prefix, tid, events)
    buf[n + 2] = parts[i]
    -- about four events per millisecond, as at a few thousand events per second
    buf[n + 3] = string.format("%.0f", base_ms + math.floor(events / 4))
    buf[n + 4] = parts[i + 1]
    n = n + 4
  end
  return wrk.format("POST", path, headers, table.concat(buf))
end

function done(summary, latency, requests)
  local sent_total, events_total = 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    events_total = events_total + thread:get("events")
  end
  local e = summary.errors
  io.write(string.format(
    '@@WRK {"requests": %d, "duration_us": %d, "bytes": %d, "sent": %d, "events_sent": %d, '
      .. '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, '
      .. '"err_timeout": %d, "lat_mean_us": %.1f, "lat_max_us": %d, "p50_us": %d, '
      .. '"p90_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, sent_total, events_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
