-- wrk script: POST /api/plugin/execute greet on the Swift hello-world.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"dev.jank.plugins.hello-world","method":"greet","args":{"name":"bench"}}'

-- Count non-200 answers, so a fast run of errors cannot pass for a fast run.
local failures = 0
response = function(status, headers, body)
  if status ~= 200 then failures = failures + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("requests: %d, non-2xx or socket errors: %d, req/s: %.0f\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6)))
  for _, p in pairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("latency p%g: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
