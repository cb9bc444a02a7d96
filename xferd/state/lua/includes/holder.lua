-- Who holds a room's round. A holder took the round (begin_round) and has not let go (its
-- write returned) nor been stopped by the fencer: while it holds, a write may be in flight.
--@keys room
local function writing(room_key) return redis.call('HEXISTS', room_key, 'holder') == 1 end

-- Whether (consumer, epoch) holds the round, given the room's `holder` and `epoch` fields;
-- if not, also why.
local function held_by(holder, held_epoch, consumer, epoch)
  if holder == consumer and held_epoch == epoch then return true end
  return false, 'epoch ' .. epoch .. ' of ' .. consumer .. ' no longer holds the round (epoch ' ..
    tostring(held_epoch) .. ', holder ' .. tostring(holder) .. ')'
end

-- Whether (consumer, epoch) holds the round now; if not, also why.
local function holding(room_key, consumer, epoch)
  local h = redis.call('HMGET', room_key, 'holder', 'epoch')
  return held_by(h[1], h[2], consumer, epoch)
end

-- Whether the holder of `epoch` has let go already: a retried commit or fail whose first
-- reply was lost finds its own work done (a later take would have set a holder, and its
-- end a newer done_epoch). `holder`, `done_epoch`: the room's fields.
local function let_go_already(holder, done_epoch, epoch)
  return not holder and done_epoch == epoch
end
