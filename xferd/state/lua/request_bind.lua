-- A request's allocation becomes its room's (the sender learns both): KEYS room keys of the
-- room, then KEYS[13] the request's hash, KEYS[14] its owned list (pool:owned:req:<rid>);
-- ARGV room, 'req:<rid>', lease_ms.
-- Returns 'ok'; an error when the request holds nothing (its lease ran out) or the room
-- holds other blocks. Idempotent: every TP rank binds the same request to the same room.
-- The room's allocation stays leased (the encoder renews it) until publish_source.
local REQUEST, REQUEST_OWNED = KEYS[13], KEYS[14]
local holder, lease_ms = ARGV[2], tonumber(ARGV[3])
local h = redis.call('HMGET', REQUEST, 'room', 'blocks')
if h[1] then
  if h[1] == ROOM then return 'ok' end
  return redis.error_reply('request ' .. holder .. ' is bound to room ' .. h[1] .. ', not ' .. ROOM)
end
if not h[2] or redis.call('EXISTS', REQUEST_OWNED) == 0 then
  return redis.error_reply('request ' .. holder .. ' holds no source blocks (never allocated, or ' ..
    'its lease ran out and they went back)')
end
if redis.call('EXISTS', OWNED) == 1 then
  return redis.error_reply('room ' .. ROOM .. ' already holds source blocks')
end
redis.call('RENAME', REQUEST_OWNED, OWNED)
redis.call('ZREM', LEASES, holder)
redis.call('ZADD', LEASES, NOW + lease_ms, ROOM)
redis.call('HSET', REQUEST, 'room', ROOM)
return 'ok'
