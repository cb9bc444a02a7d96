-- Fail a room with a reason: KEYS room keys; ARGV room, reason, mode, class (the
-- kind of failure, for metrics: the prelude's fail), then for mode 'holder': consumer,
-- epoch, entry_id.
-- mode '': an abort or a bad message. Redis says Failed at once; the blocks and the Failed
--   push wait until no write of the room is in flight.
-- mode 'expired': only if the room's deadline has passed, with the deadline's reason
--   (class timeout).
-- mode 'encoder': the encoder's own abort; an allocation it never published goes back now
--   (it will not write into it any more).
-- mode 'holder': the worker holding the round fails it (its write is over): lets go,
--   acknowledges the entry. Changes nothing unless (consumer, epoch) holds the round; a
--   retry whose first reply was lost gets the same answer.
-- Returns the prelude's reply {status, note, notify, endpoints...}; {-1, why, 0} when
-- nothing was due.
local reason, mode, class = ARGV[2], ARGV[3], ARGV[4]
if mode == 'expired' then
  class = 'timeout'
  if redis.call('EXISTS', ROOM_KEY) == 0 then
    redis.call('ZREM', TIMEOUTS, ROOM)
    return {-1, 'room record is gone', 0}
  end
  local deadline = num('deadline')
  if not deadline or deadline > NOW then
    if deadline then redis.call('ZADD', TIMEOUTS, deadline, ROOM)
    else redis.call('ZREM', TIMEOUTS, ROOM) end
    return {-1, 'not due', 0}
  end
  reason = redis.call('HGET', ROOM_KEY, 'deadline_reason')
elseif mode == 'holder' then
  local held, why = holding(ARGV[5], ARGV[6])
  if not held then
    if let_go_already(ARGV[6]) then return reply('', false) end
    return {num('status') or -1, why, 0}
  end
  let_go(ARGV[7])
  if not fail(reason, class) then settle() end
  return reply('', false)
end
local failed_now = fail(reason, class)
if mode == 'encoder' and not writing() then give_back_blocks() end
return reply(failed_now and '' or 'already ' .. NAMES[num('status')], false)
