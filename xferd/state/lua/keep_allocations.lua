--[[ An encoder renews the leases of the allocations it still writes into.
  KEYS pool_leases
  ARGV lease_ms holders...
  `holders`: rooms, or 'req:<rid>'.
  Returns ok, data {the holders whose lease is gone} (published, released, or run out:
  their blocks may belong to another room now, so the encoder must not write into them).
]]
--@include util
--@include envelope
local until_ms = now_ms() + tonumber(A.lease_ms)
local gone = {}
for _, holder in ipairs(A.holders) do
  if redis.call('ZADD', K.pool_leases, 'XX', 'CH', until_ms, holder) == 0
      and not redis.call('ZSCORE', K.pool_leases, holder) then
    gone[#gone + 1] = holder
  end
end
return envelope('ok', nil, '', false, {}, gone)
