-- Histograms kept in the stats hash (metrics.py reads them): one field per bucket, counted
-- where the event happens, so every process's observations add up exactly. The sum is kept
-- in whole milliseconds (Redis's clock is in ms), by HINCRBY: HINCRBYFLOAT costs three
-- times as much.
--@keys stats
local function observe(stats_key, name, ms)
  local seconds, le = ms / 1000, '+Inf'
  for _, bound in ipairs(BUCKETS) do
    if seconds <= bound then le = tostring(bound); break end
  end
  redis.call('HINCRBY', stats_key, 'hist:' .. name .. ':' .. le, 1)
  redis.call('HINCRBY', stats_key, 'hist:' .. name .. ':sum_ms', ms)
end
