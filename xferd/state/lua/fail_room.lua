--[[ Fail a room with a reason.
  KEYS room rounds writing timeouts statuses stats ended pool_owned pool_free pool_leases record
  ARGV room reason mode class consumer epoch entry
  `class`: the kind of failure, for metrics. `consumer`, `epoch`, `entry`: mode 'holder'
  only ('' otherwise).
  mode '': an abort or a bad message. Redis says Failed at once; the blocks and the Failed
    push wait until no write of the room is in flight.
  mode 'expired': only if the room's deadline has passed, with the deadline's reason
    (class timeout).
  mode 'encoder': the encoder's own abort; an allocation it never published goes back now
    (it will not write into it any more).
  mode 'holder': the worker holding the round fails it (its write is over): lets go,
    acknowledges the entry. Changes nothing unless (consumer, epoch) holds the round; a
    retry whose first reply was lost gets the same answer.
  Returns failed (failed now) | ignored (already ended, or nothing due: the note says) |
  stale (mode holder: (consumer, epoch) does not hold the round; nothing written).
]]
--@include util
--@include policy
--@include fail
--@include let_go
--@include reply
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local reason, mode, class = A.reason, A.mode, A.class
if mode == 'expired' then
  class = 'timeout'
  if redis.call('EXISTS', K.room) == 0 then
    redis.call('ZREM', K.timeouts, A.room)
    return envelope('ignored', nil, 'room record is gone', false)
  end
  local deadline = num(K.room, 'deadline')
  if not deadline or deadline > now then
    if deadline then redis.call('ZADD', K.timeouts, deadline, A.room)
    else redis.call('ZREM', K.timeouts, A.room) end
    return envelope('ignored', nil, 'not due', false)
  end
  reason = redis.call('HGET', K.room, 'deadline_reason')
elseif mode == 'holder' then
  local h = read_fields(K.room, {'holder', 'epoch', 'done_epoch', 'status'})
  local held, why = held_by(h.holder, h.epoch, A.consumer, A.epoch)
  if not held then
    if let_go_already(h.holder, h.done_epoch, A.epoch) then return room_reply(K, 'ignored', '', false) end
    return envelope('stale', tonumber(h.status), why, false)
  end
  let_go(K, A.room, A.entry)
  if fail(K, A.room, policy, now, reason, class) then return room_reply(K, 'failed', '', false) end
  settle(K, A.room, policy, now)
  return room_reply(K, 'ignored', '', false)
end
local failed_now = fail(K, A.room, policy, now, reason, class)
if mode == 'encoder' and not writing(K.room) then give_back_blocks(K, A.room) end
if failed_now then return room_reply(K, 'failed', '', false) end
return room_reply(K, 'ignored', 'already ' .. STATUS_NAME[num(K.room, 'status')], false)
