-- wrk script of `downwatch bench ingest`: one report per request, each from
-- a distinct client address behind a trusted proxy (X-Forwarded-For), most
-- of them for one service in an outage, the rest spread over the others.
--
-- Arguments (after `--`): the targets as "slug:kind|kind,slug:kind|…" (the
-- first is the service in an outage) and a base for the client addresses (so
-- every phase of a run uses addresses of its own). With DW_BENCH_RECORD_IDS
-- set to a file, the ids of 201 answers are written there (this slows wrk,
-- so only the verification phase does it).

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

function init(args)
  services = {}
  for entry in string.gmatch(args[1], "[^,]+") do
    local slug, kinds = string.match(entry, "([^:]+):(.+)")
    local list = {}
    for k in string.gmatch(kinds, "[^|]+") do
      table.insert(list, k)
    end
    table.insert(services, { path = "/api/v1/services/" .. slug .. "/reports", kinds = list })
  end
  base = tonumber(args[2]) or 0
  ids = {}
  seq = 0
  math.randomseed(tid * 7919 + base)
  places = {
    { "FR", "Paris" }, { "DE", "Berlin" }, { "GB", "London" }, { "US", "New York" },
    { "BR", "São Paulo" }, { "IN", "Mumbai" }, { "ES", "Madrid" }, { "IT", "Rome" },
    { "US", "Chicago" }, { "DE", "Munich" },
  }
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  seq = seq + 1
  -- 2^22 addresses per thread per phase, distinct across threads and phases.
  local n = base + tid * 4194304 + seq
  headers["X-Forwarded-For"] = string.format("%d.%d.%d.%d",
    11 + math.floor(n / 16777216) % 200, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
  local s
  if math.random() < 0.8 or #services == 1 then
    s = services[1]
  else
    s = services[math.random(2, #services)]
  end
  local kind = s.kinds[math.random(#s.kinds)]
  local body
  if math.random() < 0.3 then
    body = string.format('{"problem":"%s"}', kind)
  else
    local p = places[math.random(#places)]
    body = string.format('{"problem":"%s","country":"%s","city":"%s"}', kind, p[1], p[2])
  end
  return wrk.format("POST", s.path, headers, body)
end

if os.getenv("DW_BENCH_RECORD_IDS") then
  function response(status, headers, body)
    if status == 201 then
      local id = string.match(body, '"id":(%d+)')
      if id then
        table.insert(ids, id)
      end
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DW_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
  local out = os.getenv("DW_BENCH_RECORD_IDS")
  if out then
    local f = assert(io.open(out, "w"))
    for _, t in ipairs(threads) do
      for _, id in ipairs(t:get("ids")) do
        f:write(id, "\n")
      end
    end
    f:close()
  end
end
