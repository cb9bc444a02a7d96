-- Take the lowest free source blocks for a room: KEYS room keys; ARGV room, count.
-- Returns {expires_at, blocks...}, or false when too few are free.
-- The allocation is leased: a room not published by expires_at (the encoder died between
-- allocating and publishing) has its blocks returned by the janitor (pool_expire).
-- Idempotent: a retried call whose first reply was lost gets the same blocks, never a
-- second set.
local count = tonumber(ARGV[2])
local held = redis.call('LRANGE', OWNED, 0, -1)
if #held > 0 then
  local expires = redis.call('ZSCORE', LEASES, ROOM)
  if #held ~= count or not expires then
    return redis.error_reply('room ' .. ROOM .. ' already holds ' .. #held ..
      ' source blocks; another allocation for it would leak them')
  end
  return {tonumber(expires), unpack(held)}
end
local expires_at = NOW + ALLOC_MS
if count == 0 then return {expires_at} end
if redis.call('ZCARD', FREE) < count then return false end
local popped = redis.call('ZPOPMIN', FREE, count)
local out, blocks = {expires_at}, {}
for i = 1, #popped, 2 do
  out[#out + 1] = popped[i]
  blocks[#blocks + 1] = popped[i]
end
for first = 1, #blocks, 1000 do  -- one RPUSH per thousand blocks
  redis.call('RPUSH', OWNED, unpack(blocks, first, math.min(first + 999, #blocks)))
end
redis.call('ZADD', LEASES, expires_at, ROOM)
return out
