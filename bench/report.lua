-- wrk script for bench/run.py. Ends with one machine-readable line ("BENCH {json}").
--
--   wrk -t2 -c32 -d10s -s bench/report.lua URL                    as fast as it goes
--   wrk -t16 -c16 -d10s -s bench/report.lua URL -- 2000 16        paced: ~2000 req/s
--
-- Plain wrk has no rate option, so a paced run (rate and thread count after `--`) does
-- this: every wrk thread owns ONE connection and sends Poisson arrivals at rate/threads;
-- after each response it sleeps until its next arrival is due. The threads together then
-- offer a Poisson load at `rate`, as independent clients would. It needs -t equal to -c:
-- a sleep blocks the thread, and any other connection on it would wait too.
--
-- Keep-alive servers only (gunicorn's gthread worker). The sync worker closes every
-- connection and (gunicorn 27 here) lingers until the client has closed its end too
-- (util.close_graceful); wrk closes only after response() returns and connects again
-- before any delay() or request(), so a pause anywhere in wrk holds a sync worker idle
-- and the numbers measure the pause. bench/run.py approximates half load there with one
-- closed-loop connection instead.
--
-- wrk starts a request's clock when it is sent; when the server falls behind, a thread
-- sends late and the wait is not counted (coordinated omission). The paced run therefore
-- also reports latency from each request's scheduled time ("latency_from_schedule_us"),
-- as wrk2 does; that is the figure to hold against a latency target.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
  int nanosleep(const bench_timespec *req, bench_timespec *rem);
]]
local CLOCK_MONOTONIC = 1
local clock_buffer = ffi.new("bench_timespec")
local sleep_buffer = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock_buffer)
  return tonumber(clock_buffer.tv_sec) * 1e6 + tonumber(clock_buffer.tv_nsec) / 1e3
end

local function sleep_us(us)
  sleep_buffer.tv_sec = math.floor(us / 1e6)
  sleep_buffer.tv_nsec = math.floor((us % 1e6) * 1e3)
  ffi.C.nanosleep(sleep_buffer, nil)
end

-- Main state: number the threads so each can seed its own random arrivals.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

-- Thread state (paced runs only).
samples = {} -- microseconds from scheduled send to response, one per response
statuses = {} -- status code -> count
local mean_gap_us, next_due, due -- microseconds

function init(args)
  local rate, count = tonumber(args[1]), tonumber(args[2] or "1")
  if not (rate and rate > 0) then
    return -- unpaced: define no request()/response(), so wrk sends a fixed request fast
  end
  mean_gap_us = 1e6 * count / rate
  math.randomseed(id * 7919 + math.floor(now_us()) % 100000)
  local prepared = wrk.format()

  -- wrk looks for these after init(); defining them only here keeps unpaced runs lean.
  request = function()
    local now = now_us()
    due = math.min(next_due or now, now) -- late: counted from when it was due
    next_due = due - math.log(1 - math.random()) * mean_gap_us
    return prepared
  end

  response = function(status, headers, body)
    local now = now_us()
    if due ~= nil then
      samples[#samples + 1] = now - due
      due = nil
    end
    statuses[status] = (statuses[status] or 0) + 1
    if next_due ~= nil and next_due > now then
      sleep_us(next_due - now) -- wrk has already taken this response's time
    end
  end
end

local function percentile(sorted, p)
  if #sorted == 0 then
    return 0
  end
  local rank = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[rank]
end

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean)

  local all, codes = {}, {}
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get("samples") or {}) do
      all[#all + 1] = value
    end
    for code, n in pairs(thread:get("statuses") or {}) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  if #all > 0 then
    table.sort(all)
    line = line .. string.format(
      ', "latency_from_schedule_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}',
      percentile(all, 50), percentile(all, 90), percentile(all, 99), percentile(all, 99.9),
      all[#all])
    local parts = {}
    for code, n in pairs(codes) do
      parts[#parts + 1] = string.format('"%d": %d', code, n)
    end
    line = line .. ', "statuses": {' .. table.concat(parts, ", ") .. "}"
  end
  io.write("BENCH " .. line .. "}\n")
end
