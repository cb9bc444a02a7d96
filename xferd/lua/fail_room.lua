-- Fail a room with a reason: KEYS room, timeouts, release, stream;
-- ARGV policy, room, reason, entry_id ('' for none), group, mode, consumer ('' for none).
-- mode 'expired': only if the room's deadline has passed, with the deadline's reason.
-- consumer: the worker failing its own round; its write is over, so its lease goes.
-- Returns {0, reason, endpoints...} when this call failed it, else {status, note}.
local room_key, timeouts_key, release_key, stream_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local reason = ARGV[3]
if ARGV[4] ~= '' then redis.call('XACK', stream_key, ARGV[5], ARGV[4]) end
if ARGV[7] ~= '' and redis.call('HGET', room_key, 'write_owner') == ARGV[7] then
  redis.call('HDEL', room_key, 'write_round', 'write_owner', 'write_until')
end
if ARGV[6] == 'expired' then
  if redis.call('EXISTS', room_key) == 0 then
    redis.call('ZREM', timeouts_key, ROOM)
    return {-1, 'room record is gone'}
  end
  local deadline = num(room_key, 'deadline')
  if not deadline or deadline > NOW then
    if deadline then redis.call('ZADD', timeouts_key, deadline, ROOM)
    else redis.call('ZREM', timeouts_key, ROOM) end
    return {-1, 'not due'}
  end
  reason = redis.call('HGET', room_key, 'deadline_reason')
end
if fail(room_key, timeouts_key, release_key, reason) then return failed_reply(room_key) end
return {num(room_key, 'status'), 'already terminal'}
