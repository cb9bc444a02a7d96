-- Every status change goes through here: only a declared transition (room.py's
-- TRANSITIONS), and into the capped `statuses` stream, which encoders block on.
--@keys room statuses
-- `current`: the status the caller read; staying there writes nothing (a room's later
-- rounds commit Transferring again: no change for an encoder to hear of).
local function set_status(K, room, current, status, now)
  if current == status then return end
  if not MOVES[current .. '>' .. status] then
    error('room ' .. room .. ': no transition from ' .. STATUS_NAME[current] .. ' to ' .. STATUS_NAME[status])
  end
  redis.call('HSET', K.room, 'status', status, 'status_name', STATUS_NAME[status], 'updated_at', now)
  redis.call('XADD', K.statuses, 'MAXLEN', '~', KEPT.statuses, '*', 'room', room, 'status', status)
end
