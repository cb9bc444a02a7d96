-- Return every source block a room holds; idempotent (a second call finds none).
-- KEYS pool_free, pool_owned(room), pool_leases; ARGV policy, room. Returns the number released.
local free_key, owned_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local blocks = redis.call('LRANGE', owned_key, 0, -1)
for _, block in ipairs(blocks) do redis.call('ZADD', free_key, tonumber(block), block) end
redis.call('DEL', owned_key)
redis.call('ZREM', leases_key, ROOM)
return #blocks
