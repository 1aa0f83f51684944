-- wrk script for the governed call: POST /v1/runs/{run_id}/actions.
--
--   WARDEN_LOAD_RUNS=FILE WARDEN_LOAD_KEY=KEY WARDEN_LOAD_DENY_EVERY=K \
--       wrk -t N -c N -s actions.lua URL
--
-- (Environment variables, not script arguments: wrk runs setup() before any thread
-- exists, where script arguments are not available.)
--
-- One connection per wrk thread and one run per thread, so every run has at most one call
-- in flight (as an agent's run does). DENY_EVERY: 0 = allow path only (x >= 0, no rule
-- matches); 1 = deny path only (x < 0 matches `negative_amounts`); k > 1 = every k-th call
-- is a deny (the soak mix). Every response is checked: a 2xx whose decision is not the
-- expected one counts as a mismatch (see response()). done() prints one line "WRKJSON {...}" for bench.py.

local threads = {}
local next_index = 1
local run_ids = {}

local function read_ids(path)
   local ids = {}
   for line in io.lines(path) do
      if #line > 0 then ids[#ids + 1] = line end
   end
   return ids
end

function setup(thread)
   -- Runs in the main Lua state, once per thread, before the threads start.
   if #run_ids == 0 then
      run_ids = read_ids(os.getenv("WARDEN_LOAD_RUNS"))
   end
   local id = run_ids[next_index]
   if id == nil then
      error("not enough run ids in $WARDEN_LOAD_RUNS for " .. next_index .. " threads")
   end
   thread:set("run_id", id)
   thread:set("index", next_index)
   next_index = next_index + 1
   table.insert(threads, thread)
end

local path, headers
local deny_every = 0
local n = 0
local expect = {}

allowed_ok, denied_ok, mismatch, non2xx = 0, 0, 0, 0
first_bad = ""

function init(args)
   local key = os.getenv("WARDEN_LOAD_KEY")
   deny_every = tonumber(os.getenv("WARDEN_LOAD_DENY_EVERY") or "0")
   path = "/v1/runs/" .. run_id .. "/actions"
   headers = {
      ["Authorization"] = "Bearer " .. key,
      ["Content-Type"] = "application/json",
   }
end

local function is_deny(i)
   if deny_every == 0 then return false end
   if deny_every == 1 then return true end
   return i % deny_every == 0
end

function request()
   n = n + 1
   local x
   -- Distinct arguments on every call (a real agent does not repeat itself); the run's
   -- identical-call cap is out of reach anyway.
   if is_deny(n) then
      x = -n
   else
      x = n
   end
   local body = string.format(
      '{"tool":"noop","args":{"x":%d,"account":"acct_%d","region":"eu"}}', x, index)
   return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
      return
   end
   -- wrk gives response() no handle on its request, so the decision is checked against
   -- the path: allow-only must be "allowed", deny-only must be denied by the rule, and
   -- the mix must be one of the two.
   local allowed = string.find(body, '"status":"allowed"', 1, true) ~= nil
   local denied = not allowed
      and string.find(body, '"status":"denied"', 1, true) ~= nil
      and string.find(body, '"rules":["negative_amounts"]', 1, true) ~= nil
   if allowed and deny_every ~= 1 then
      allowed_ok = allowed_ok + 1
      return
   end
   if denied and deny_every ~= 0 then
      denied_ok = denied_ok + 1
      return
   end
   mismatch = mismatch + 1
   if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
end

local function json_string(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local a, d, m, b = 0, 0, 0, 0
   local bad = ""
   for _, t in ipairs(threads) do
      a = a + t:get("allowed_ok")
      d = d + t:get("denied_ok")
      m = m + t:get("mismatch")
      b = b + t:get("non2xx")
      local fb = t:get("first_bad")
      if bad == "" and fb ~= nil and fb ~= "" then bad = fb end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
      '"allowed":%d,"denied":%d,"mismatch":%d,"non2xx":%d,' ..
      '"lat_min":%d,"lat_mean":%.1f,"lat_max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,' ..
      '"first_bad":%s}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      a, d, m, b,
      latency.min, latency.mean, latency.max,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
      latency:percentile(99.9), json_string(bad)))
end
