--[[ Take the lowest free source blocks for a room.
  KEYS pool_owned pool_free pool_leases record
  ARGV room count
  The allocation is leased: a room not published by its expiry (the encoder died between
  allocating and publishing) has its blocks returned by the janitor (pool_expire).
  Idempotent: a retried call whose first reply was lost gets the same blocks, never a
  second set.
  Returns ok, data {expires_at, blocks...} | short (too few free; nothing written) |
  refused (the room holds other blocks already).
]]
--@include util
--@include policy
--@include envelope
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local count = tonumber(A.count)
local held = redis.call('LRANGE', K.pool_owned, 0, -1)
if #held > 0 then
  local expires = redis.call('ZSCORE', K.pool_leases, A.room)
  if #held ~= count or not expires then
    return refuse('room ' .. A.room .. ' already holds ' .. #held ..
      ' source blocks; another allocation for it would leak them')
  end
  return envelope('ok', nil, '', false, {}, {tonumber(expires), unpack(held)})
end
local expires_at = now_ms() + policy.alloc_timeout
if count == 0 then return envelope('ok', nil, '', false, {}, {expires_at}) end
if redis.call('ZCARD', K.pool_free) < count then return envelope('short', nil, '', false) end
local popped = redis.call('ZPOPMIN', K.pool_free, count)
local out, blocks = {expires_at}, {}
for i = 1, #popped, 2 do
  out[#out + 1] = popped[i]
  blocks[#blocks + 1] = popped[i]
end
for first = 1, #blocks, 1000 do  -- one RPUSH per thousand blocks
  redis.call('RPUSH', K.pool_owned, unpack(blocks, first, math.min(first + 999, #blocks)))
end
redis.call('ZADD', K.pool_leases, expires_at, A.room)
return envelope('ok', nil, '', false, {}, out)
