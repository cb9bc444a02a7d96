--[[ The holder of a round, still writing it, renews its lease.
  KEYS room rounds writing
  ARGV room entry consumer epoch lease_ms
  Resets the entry's idle time (XCLAIM JUSTID: no delivery counted) and pushes the lease
  deadline the fencer watches. Kept up whatever happened to the room meanwhile: its blocks
  stay held while the write runs.
  Returns ok (status: the room's), or stale with nothing written when (consumer, epoch) no
  longer holds the round.
]]
--@include util
--@include room
--@include holder
--@include envelope
local held, why = holding(K.room, A.consumer, A.epoch)
if not held then return envelope('stale', nil, why, false) end
local until_ms = now_ms() + tonumber(A.lease_ms)
redis.call('XCLAIM', K.rounds, GROUP, A.consumer, 0, A.entry, 'JUSTID')
redis.call('HSET', K.room, 'lease_until', until_ms)
redis.call('ZADD', K.writing, until_ms, A.room)
return envelope('ok', num(K.room, 'status'), '', false)
