--[[ A request's allocation becomes its room's (the sender learns both).
  KEYS request request_owned pool_owned pool_leases
  ARGV room holder lease_ms
  `holder` is 'req:<rid>', `request_owned` its list, `pool_owned` the room's. The room's
  allocation stays leased (the encoder renews it) until publish_source. Idempotent: every
  TP rank binds the same request to the same room.
  Returns ok | refused (nothing written) when the request holds nothing (its lease ran out)
  or is bound to another room, or the room holds other blocks.
]]
--@include util
--@include envelope
local h = redis.call('HMGET', K.request, 'room', 'blocks')
if h[1] then
  if h[1] == A.room then return envelope('ok', nil, '', false) end
  return refuse('request ' .. A.holder .. ' is bound to room ' .. h[1] .. ', not ' .. A.room)
end
if not h[2] or redis.call('EXISTS', K.request_owned) == 0 then
  return refuse('request ' .. A.holder .. ' holds no source blocks (never allocated, or ' ..
    'its lease ran out and they went back)')
end
if redis.call('EXISTS', K.pool_owned) == 1 then
  return refuse('room ' .. A.room .. ' already holds source blocks')
end
redis.call('RENAME', K.request_owned, K.pool_owned)
redis.call('ZREM', K.pool_leases, A.holder)
redis.call('ZADD', K.pool_leases, now_ms() + tonumber(A.lease_ms), A.room)
redis.call('HSET', K.request, 'room', A.room)
return envelope('ok', nil, '', false)
