-- Take the lowest free source blocks for a room: KEYS pool_free, pool_owned(room);
-- ARGV policy, room, count. Returns the blocks, or false when too few are free.
local free_key, owned_key, count = KEYS[1], KEYS[2], tonumber(ARGV[3])
if count == 0 then return {} end
if redis.call('ZCARD', free_key) < count then return false end
local popped = redis.call('ZPOPMIN', free_key, count)
local blocks = {}
for i = 1, #popped, 2 do
  blocks[#blocks + 1] = popped[i]
  redis.call('RPUSH', owned_key, popped[i])
end
return blocks
