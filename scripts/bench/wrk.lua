-- wrk script for scripts/bench.sh: small-file PUT and GET against the DistStore HTTP API.
--
-- Usage (after wrk's own options):
--   wrk ... -s wrk.lua URL -- put PREFIX [ROOT]        PUT a new 4 KiB file per request under
--                                   ROOT PREFIX/ (ROOT defaults to /api/v1/files/; / for the
--                                   SeaweedFS filer the benchmark compares with)
--   wrk ... -s wrk.lua URL -- get PREFIX COUNT [ROOT]  GET PREFIX/0 .. PREFIX/(COUNT-1), round robin
--   wrk ... -s wrk.lua URL -- s3put FILE THREADS  PUT a new 4 KiB object per request to the
--                                   presigned paths in FILE (each thread its own share)
--   wrk ... -s wrk.lua URL -- s3get FILE          GET the presigned paths in FILE, round robin
--
-- PUT uses a distinct name AND distinct content for every request: same-content bodies would
-- deduplicate to one chunk, and the run would then only measure the metadata path, not the
-- hashing, encryption and chunk write that a real upload pays for. The filler is random
-- bytes, not text: a server that compresses (SeaweedFS gzips compressible uploads) would
-- otherwise store and write less than the 4 KiB a user's random or compressed file costs.
--
-- At the end it prints one machine-readable line that bench.sh parses:
--   WRK_RESULT requests=N duration_us=N non2xx=N connect=N read=N write=N timeout=N p50_us=N p99_us=N
-- non2xx is wrk's "Non-2xx or 3xx responses" count: anything but 201 (PUT) or 200 (GET) is a
-- failure for this API, and no 3xx is expected from it.

local BODY_SIZE = 4096

-- Runs in the main Lua state once per thread, before the threads start: give each a number so
-- that names from different threads never collide.
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
end

-- `n` random bytes (seeded per thread, so threads' bodies differ too).
function random_bytes(n)
  math.randomseed(os.time() + id * 104729)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- Runs in each thread's own Lua state; `id` was set by setup().
function init(args)
  mode = args[1] or "put"
  prefix = args[2] or ("bench-" .. tostring(os.time()))
  counter = 0
  if mode == "put" then
    root = args[3] or "/api/v1/files/"
    -- A random filler per thread; each request overwrites its start with its own name, so
    -- bodies differ.
    filler = random_bytes(BODY_SIZE)
    put_headers = { ["Content-Type"] = "application/octet-stream" }
  elseif mode == "get" then
    local count = tonumber(args[3] or "1000")
    local root = args[4] or "/api/v1/files/"
    -- Requests are built once: request() then costs the load generator (which shares the
    -- machine's 2 cores with the node) almost nothing.
    requests = {}
    for i = 0, count - 1 do
      requests[#requests + 1] = wrk.format("GET", root .. prefix .. "/" .. i)
    end
    -- Threads start at different places in the list so they don't walk it in lock step.
    math.randomseed(os.time() + id * 7919)
    counter = math.random(count) - 1
  elseif mode == "s3put" or mode == "s3get" then
    -- Presigned by scripts/bench/presign.py: the node checks each signature as it would any
    -- SigV4 request, and wrk need not sign.
    local threads = tonumber(args[3] or "1")
    local all = {}
    for line in io.lines(args[2]) do all[#all + 1] = line end
    requests = {}
    for i, path in ipairs(all) do
      if mode == "s3get" or (i - 1) % threads == id - 1 then requests[#requests + 1] = path end
    end
    filler = random_bytes(BODY_SIZE)
    math.randomseed(os.time() + id * 7919)
    counter = mode == "s3get" and math.random(#requests) - 1 or 0
  else
    error("wrk.lua: unknown mode " .. tostring(mode) .. " (want put, get, s3put or s3get)")
  end
end

-- (wrk calls this once more than it sends on thread 1, to check the request parses; so name
-- t1-1 is never uploaded. Harmless: names only need to be distinct.)
function request()
  if mode == "get" then
    counter = counter + 1
    return requests[(counter % #requests) + 1]
  end
  if mode == "s3get" then
    counter = counter + 1
    return wrk.format("GET", requests[(counter % #requests) + 1])
  end
  if mode == "s3put" then
    counter = counter + 1
    -- Past the end of its share a thread overwrites its first objects, with new bytes.
    local tag = string.format("t%d-%d\n", id, counter)
    return wrk.format("PUT", requests[((counter - 1) % #requests) + 1], nil, tag .. filler:sub(#tag + 1))
  end
  counter = counter + 1
  local name = string.format("%s/t%d-%d", prefix, id, counter)
  local tag = name .. "\n"
  local body = tag .. filler:sub(#tag + 1)
  return wrk.format("PUT", root .. name, put_headers, body)
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
