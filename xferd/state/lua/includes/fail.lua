-- Fail a live room (creating a failed record if none exists); false if already terminal.
-- Redis says Failed at once, so nothing new starts; the blocks wait for a write in flight.
-- `class` names the kind of failure for metrics (room.py's FAILURE_CLASSES; Store.fail_room
-- refuses any other, and a test holds the scripts' own to the declaration).
--@include room status ended settle
--@keys room statuses stats ended timeouts pool_owned pool_free pool_leases
local function fail(K, room, policy, now, reason, class)
  local status = ensure_room(K.room, room, now)
  if terminal(status) then return false end
  set_status(K, room, status, STATUS.Failed, now)
  redis.call('HSET', K.room, 'failure', reason, 'failure_class', class, 'failed_at', now)
  record_end(K, room, STATUS.Failed, class, reason, nil, now)
  redis.call('HDEL', K.room, 'deadline', 'deadline_reason')
  redis.call('ZREM', K.timeouts, room)
  settle(K, room, policy, now)
  return true
end
