-- wrk's script for the HTTP rows of `billing-engine bench` (bench/http.py runs it): a fixed
-- number of requests of one kind over a block of fresh people, then one JSON line of results.
--
-- Environment: BENCH_KIND (top_up, wallet, start_call, end_call, heartbeat, floor), BENCH_FIRST (the
-- first payer), BENCH_PEOPLE (payers; their listeners follow them), BENCH_REQUESTS (in all),
-- BENCH_THREADS and BENCH_CONNECTIONS (wrk's -t and -c), BENCH_TAG (makes idempotency keys unique per row), BENCH_CALLS
-- (end_call: a file of call ids, one a line), BENCH_OUT (the prefix of the files each thread
-- writes: the ids it started, and when it began and ended), BENCH_KEY (the API key, if any).
local kind = os.getenv("BENCH_KIND")
local first = tonumber(os.getenv("BENCH_FIRST"))
local people = tonumber(os.getenv("BENCH_PEOPLE"))
local total = tonumber(os.getenv("BENCH_REQUESTS"))
local tag = os.getenv("BENCH_TAG") or "t"
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local json = { ["Content-Type"] = "application/json" }
local plain = {}
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  json["Authorization"] = "Bearer " .. key
  plain["Authorization"] = "Bearer " .. key
end

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local function now_ns()
  local clock = io.popen("date +%s%N")
  local ns = clock:read("*l")
  clock:close()
  return ns
end

function init(args)
  started_ns = now_ns()
  sent, answered, refused, spares = 0, 0, 0, 0
  spares_wait = math.floor(4 * tonumber(os.getenv("BENCH_CONNECTIONS")) / nthreads)
  finished = false
  budget = math.floor(total / nthreads) + ((tid < total % nthreads) and 1 or 0)
  if kind == "end_call" then
    calls = {}
    local i = 0
    for line in io.lines(os.getenv("BENCH_CALLS")) do
      if i % nthreads == tid then table.insert(calls, line) end
      i = i + 1
    end
    budget = math.min(budget, #calls)
  elseif kind == "start_call" then
    out = io.open(os.getenv("BENCH_OUT") .. "." .. tid, "w")
  end
end

-- The k-th request of this thread (k from 0) names person `first + index`; listeners are
-- drawn by a fixed permutation, so a start finds both parties on one shard 1 time in `shards`.
local function person(k)
  return first + (k * nthreads + tid) % people
end

-- What a connection sends once this thread has sent its budget: wrk keeps every connection
-- busy, and a request past the budget would start a call a second time or end one twice.
-- Its answer is told apart by its body and counted nowhere (the latency histogram aside).
-- wrk now and then builds a request it never sends (a connection that it opens again): once
-- each connection has had a few spares answered, nothing real is in flight any more.
local SPARE_BODY = '{"status":"ok"}'

function request()
  local k = sent
  sent = sent + 1
  if k >= budget and kind ~= "floor" then
    return wrk.format("GET", "/healthz")
  end
  if kind == "top_up" then
    local body = '{"amount": 10, "idempotency_key": "' .. tag .. "-" .. tid .. "-" .. k .. '"}'
    return wrk.format("POST", "/v1/wallets/" .. person(k) .. "/top-ups", json, body)
  elseif kind == "wallet" then
    return wrk.format("GET", "/v1/wallets/" .. person(k), plain)
  elseif kind == "floor" then
    return wrk.format("GET", nil, plain)
  elseif kind == "heartbeat" then
    return wrk.format("POST", "/v1/presence/" .. person(k) .. "/heartbeat", plain)
  elseif kind == "start_call" then
    local u = person(k)
    local v = first + people + ((u - first) * 7919) % people
    local body = '{"user_id": ' .. u .. ', "listener_id": ' .. v .. '}'
    return wrk.format("POST", "/v1/calls", json, body)
  else
    local c = calls[(k % #calls) + 1]
    return wrk.format("POST", "/v1/calls/" .. c .. "/end", json, '{"reason": "hangup"}')
  end
end

function response(status, headers, body)
  if kind ~= "floor" and body == SPARE_BODY then
    spares = spares + 1
    if spares == spares_wait then finish() end
    return
  end
  answered = answered + 1
  if status >= 300 then refused = refused + 1 end
  if kind == "start_call" and status < 300 then
    local id = string.match(body, '"call_id":%s*(%d+)')
    if id and out then out:write(id, "\n") end
  end
  if answered == budget then finish() end
end

function finish()
  if finished then return end
  finished = true
  -- wrk runs for its -d whatever happens: the file says this thread is done, and when, and
  -- bench/http.py ends wrk (SIGINT) once every thread's is there.
  if out then out:close(); out = nil end
  local mark = io.open(os.getenv("BENCH_OUT") .. ".done." .. tid, "w")
  mark:write(started_ns, " ", now_ns(), " ", answered, " ", refused, "\n")
  mark:close()
  wrk.thread:stop()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
