-- An allocation lease ran out: KEYS pool_free, pool_owned(room), pool_leases;
-- ARGV policy, room, published ('1': the room record holds its source, so the room's own
-- end returns the blocks; '0': never published, the blocks go back now).
-- Acts only while the lease is still expired; returns the number of blocks released.
-- Safe against a late publish: publish_source refuses once the lease has expired.
local free_key, owned_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local expires_at = redis.call('ZSCORE', leases_key, ROOM)
if not expires_at or tonumber(expires_at) > NOW then return 0 end
redis.call('ZREM', leases_key, ROOM)
if ARGV[3] == '1' then return 0 end
return give_back_blocks(free_key, owned_key)
