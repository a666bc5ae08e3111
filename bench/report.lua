-- wrk script for bench/run.sh: headers come from -H; this only prints one machine-readable line.
-- non2xx = answers with status >= 400 (wrk's "Non-2xx or 3xx responses"); sockerr = connect,
-- read, write and timeout errors.
done = function(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
