-- The holder's write is over: the round is no longer anyone's. Acknowledges its entry and
-- records the epoch that let go, so that a retried commit or fail by the same holder finds
-- its own work done.
--@keys room rounds writing
local function let_go(K, room, entry)
  if entry and entry ~= '' then redis.call('XACK', K.rounds, GROUP, entry) end
  redis.call('HSET', K.room, 'done_epoch', redis.call('HGET', K.room, 'epoch'))
  redis.call('HDEL', K.room, 'holder', 'holder_entry', 'lease_until')
  redis.call('ZREM', K.writing, room)
end

-- Whether `entry` is pending on `consumer` (delivered to it, not acknowledged).
local function pending_on(K, entry, consumer)
  local p = redis.call('XPENDING', K.rounds, GROUP, entry, entry, 1)
  return #p == 1 and p[1][2] == consumer
end
