-- The holder of a round, still writing it, renews its lease: KEYS room keys;
-- ARGV room, entry_id, consumer, epoch, lease_ms.
-- Resets the entry's idle time (XCLAIM JUSTID: no delivery counted) and pushes the lease
-- deadline the fencer watches. Kept up whatever happened to the room meanwhile: its blocks
-- stay held while the write runs. Returns {'ok', status}, or {'lost', why} when
-- (consumer, epoch) no longer holds the round (nothing is changed then).
local entry, consumer, epoch, lease_ms = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local held, why = holding(consumer, epoch)
if not held then return {'lost', why} end
redis.call('XCLAIM', STREAM, GROUP, consumer, 0, entry, 'JUSTID')
redis.call('HSET', ROOM_KEY, 'lease_until', NOW + lease_ms)
redis.call('ZADD', WRITING, NOW + lease_ms, ROOM)
return {'ok', num('status')}
