-- Take the lowest free source blocks for a room: KEYS pool_free, pool_owned(room), pool_leases;
-- ARGV policy, room, count. Returns {expires_at, blocks...}, or false when too few are free.
-- The allocation is leased: a room not published by expires_at (the encoder died between
-- allocating and publishing) has its blocks returned by the janitor (pool_expire).
local free_key, owned_key, leases_key, count = KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[3])
local expires_at = NOW + ALLOC_MS
if count == 0 then return {expires_at} end
if redis.call('ZCARD', free_key) < count then return false end
local popped = redis.call('ZPOPMIN', free_key, count)
local out = {expires_at}
for i = 1, #popped, 2 do
  out[#out + 1] = popped[i]
  redis.call('RPUSH', owned_key, popped[i])
end
redis.call('ZADD', leases_key, expires_at, ROOM)
return out
