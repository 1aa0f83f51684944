-- wrk script for the model proxies: POST /v1/chat/completions, one conversation per
-- connection (one wrk thread each), every answer checked.
--
--   BENCH_KEY=KEY BENCH_MODEL=gpt-4o BENCH_PATH=/v1/chat/completions BENCH_TAG=x \
--       wrk -t N -c N -s chat.lua URL
--
-- The body asks for a short non-streamed completion (max_tokens 64). Each connection
-- names its own conversation (X-Warden-Conversation: LiteLLM and the fake ignore it), so
-- Warden keeps one run per connection, as it does for an agent's conversation. A 2xx
-- whose body is not a chat.completion counts as a mismatch. done() prints "WRKJSON {...}".

local threads = {}
local next_index = 1

function setup(thread)
   thread:set("index", next_index)
   next_index = next_index + 1
   table.insert(threads, thread)
end

local path, headers, body
ok, mismatch, non2xx = 0, 0, 0
first_bad = ""

function init(args)
   path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
   headers = {
      ["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none"),
      ["Content-Type"] = "application/json",
      ["X-Warden-Conversation"] = (os.getenv("BENCH_TAG") or "c") .. "-" .. index,
   }
   body = string.format(
      '{"model":"%s","messages":[{"role":"system","content":"You are a terse assistant."},' ..
      '{"role":"user","content":"Say ok. (connection %d)"}],"max_tokens":64}',
      os.getenv("BENCH_MODEL") or "gpt-4o", index)
end

function request()
   return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, resp)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(resp or "", 1, 300) end
      return
   end
   if string.find(resp, '"chat.completion"', 1, true) ~= nil then
      ok = ok + 1
   else
      mismatch = mismatch + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(resp or "", 1, 300) end
   end
end

local function json_string(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local a, m, b = 0, 0, 0
   local bad = ""
   for _, t in ipairs(threads) do
      a = a + t:get("ok")
      m = m + t:get("mismatch")
      b = b + t:get("non2xx")
      local fb = t:get("first_bad")
      if bad == "" and fb ~= nil and fb ~= "" then bad = fb end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
      '"ok":%d,"mismatch":%d,"non2xx":%d,' ..
      '"lat_min":%d,"lat_mean":%.1f,"lat_max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,' ..
      '"first_bad":%s}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      a, m, b,
      latency.min, latency.mean, latency.max,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
      latency:percentile(99.9), json_string(bad)))
end
