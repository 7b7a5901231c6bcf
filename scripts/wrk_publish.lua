-- wrk script for the publish row of scripts/bench.sh: authenticated
-- single-job publishes over keep-alive connections, each to one of 64 lanes.
-- TOKEN comes from the environment; `done` prints one summary line that the
-- bench parses (non-2xx replies are `errors_status`).
local token = os.getenv("TOKEN")
local counter = 0

function request()
  counter = counter + 1
  local body = '{"payload":{"n":' .. counter .. '},"key":"k' .. (counter % 64) .. '"}'
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("wrk-summary requests=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
