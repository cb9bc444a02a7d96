-- Histograms kept in the stats hash (metrics.py reads them): one field per bucket, counted
-- where the event happens, so every process's observations add up exactly.
--@keys stats
local function observe(stats_key, name, seconds)
  local le = '+Inf'
  for _, bound in ipairs(BUCKETS) do
    if seconds <= bound then le = tostring(bound); break end
  end
  redis.call('HINCRBY', stats_key, 'hist:' .. name .. ':' .. le, 1)
  redis.call('HINCRBYFLOAT', stats_key, 'hist:' .. name .. ':sum', seconds)
end
