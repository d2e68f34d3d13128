-- wrk script for paynotify's benchmark: POSTs precomputed signed Alipay notifications.
--
-- Parameters come from the environment (read at load time, because whether `delay` exists must be
-- known before wrk starts):
--   BENCH_CORPUS       file of fixed-size records (bench/bodies.py): 8 ASCII digits of length, request
--   BENCH_RECORD_SIZE  bytes per record
--   BENCH_START        first record of this run's slice
--   BENCH_COUNT        records in the slice; thread t of T takes records START+t, START+t+T, ...
--   BENCH_THREADS      wrk's -t (how the slice is split)
--   BENCH_STOP_AFTER   0: run for wrk's -d; N: stop after N responses (use with -t1: the first
--                      thread to reach its share ends the run)
--   BENCH_RATE         0: as fast as the connections go; R: pace sends to R requests/s in total
--
-- A thread that reaches the end of its slice wraps (and counts it: the harness reports repeated
-- identities). done() prints one line "WRKJSON {...}" with the summary, latency percentiles and the
-- per-thread counters; the harness parses it.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
  int getpid(void);
  int kill(int pid, int sig);
]]
local SIGINT = 2
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_s()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local function env_number(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then return default end
  return tonumber(value)
end

local CORPUS = os.getenv("BENCH_CORPUS")
local RECORD_SIZE = env_number("BENCH_RECORD_SIZE", 1536)
local START = env_number("BENCH_START", 0)
local COUNT = env_number("BENCH_COUNT", 0)
local THREADS = env_number("BENCH_THREADS", 1)
local STOP_AFTER = env_number("BENCH_STOP_AFTER", 0)
local RATE = env_number("BENCH_RATE", 0)
local SUCCESS = '{"result":{"resultCode":"SUCCESS","resultStatus":"S","resultMessage":"success"}}'

-- main state: hand out thread ids, keep the threads for done()
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- thread state
local requests = {}
local n = 0
local position = 0
local stop_at = 0
local interval = 0
local next_slot = nil
sent = 0
responses = 0
success = 0
non_success_200 = 0
wraps = 0
late = 0
max_lag_ms = 0
statuses = {}

function init(args)
  local f = assert(io.open(CORPUS, "rb"))
  for index = START + tid, START + COUNT - 1, THREADS do
    f:seek("set", index * RECORD_SIZE)
    local record = f:read(RECORD_SIZE)
    local length = tonumber(record:sub(1, 8))
    n = n + 1
    requests[n] = record:sub(9, 8 + length)
  end
  f:close()
  assert(n > 0, "empty slice: BENCH_COUNT too small for BENCH_THREADS")
  if STOP_AFTER > 0 then
    stop_at = math.floor(STOP_AFTER / THREADS)
    if tid < STOP_AFTER % THREADS then stop_at = stop_at + 1 end
  end
  if RATE > 0 then interval = THREADS / RATE end
end

function request()
  position = position + 1
  if position > n then
    position = 1
    wraps = wraps + 1
  end
  sent = sent + 1
  return requests[position]
end

function response(status, headers, body)
  responses = responses + 1
  if status == 200 then
    if body == SUCCESS then
      success = success + 1
    else
      non_success_200 = non_success_200 + 1
    end
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
  if stop_at > 0 and responses == stop_at then
    -- wrk's main thread sleeps for all of -d; SIGINT ends the run now (wrk then calls done()).
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

-- Paced mode: each thread keeps a schedule of send slots `interval` apart; a connection that becomes
-- free takes the next slot and waits for it. A slot already past when taken means every connection
-- was busy: that send is late (coordinated omission), counted in `late` and `max_lag_ms`.
if RATE > 0 then
  function delay()
    local now = now_s()
    if next_slot == nil then next_slot = now end
    local slot = next_slot
    next_slot = next_slot + interval
    local wait = slot - now
    if wait < 0 then
      late = late + 1
      if -wait * 1000 > max_lag_ms then max_lag_ms = -wait * 1000 end
      return 0
    end
    return math.floor(wait * 1000 + 0.5)
  end
end

local function json_value(value)
  local kind = type(value)
  if kind == "table" and #value > 0 then
    local items = {}
    for i, v in ipairs(value) do items[i] = json_value(v) end
    return "[" .. table.concat(items, ",") .. "]"
  elseif kind == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, string.format("%q:%s", tostring(k), json_value(v)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then return "null" end
    return string.format("%.17g", value)
  elseif kind == "boolean" then
    return tostring(value)
  elseif value == nil then
    return "null"
  end
  return string.format("%q", tostring(value))
end

function done(summary, latency, requests_stats)
  local per_thread = {}
  for i, thread in ipairs(threads) do
    per_thread[i] = {
      tid = thread:get("tid"),
      sent = thread:get("sent"),
      responses = thread:get("responses"),
      success = thread:get("success"),
      non_success_200 = thread:get("non_success_200"),
      wraps = thread:get("wraps"),
      late = thread:get("late"),
      max_lag_ms = thread:get("max_lag_ms"),
      statuses = thread:get("statuses"),
    }
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    percentiles[tostring(p)] = latency:percentile(p)
  end
  local out = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = summary.errors,
    latency_us = {
      min = latency.min,
      max = latency.max,
      mean = latency.mean,
      stdev = latency.stdev,
      percentiles = percentiles,
    },
    threads = per_thread,
  }
  io.write("WRKJSON ", json_value(out), "\n")
end
