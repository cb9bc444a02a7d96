-- Return every source block a room holds; idempotent (a second call finds none).
-- KEYS pool_free, pool_owned(room), pool_leases; ARGV policy, room. Returns the number released.
local free_key, owned_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
redis.call('ZREM', leases_key, ROOM)
return give_back_blocks(free_key, owned_key)
