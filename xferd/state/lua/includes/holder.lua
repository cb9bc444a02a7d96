-- Who holds a room's round. A holder took the round (begin_round) and has not let go (its
-- write returned) nor been stopped by the fencer: while it holds, a write may be in flight.
--@keys room
local function writing(room_key) return redis.call('HEXISTS', room_key, 'holder') == 1 end

-- Whether (consumer, epoch) holds the round now; if not, also why.
local function holding(room_key, consumer, epoch)
  local h = redis.call('HMGET', room_key, 'holder', 'epoch')
  if h[1] == consumer and h[2] == epoch then return true end
  return false, 'epoch ' .. epoch .. ' of ' .. consumer .. ' no longer holds the round (epoch ' ..
    tostring(h[2]) .. ', holder ' .. tostring(h[1]) .. ')'
end

-- Whether the holder of `epoch` has let go already: a retried commit or fail whose first
-- reply was lost finds its own work done (a later take would have set a holder, and its
-- end a newer done_epoch).
local function let_go_already(room_key, epoch)
  local h = redis.call('HMGET', room_key, 'holder', 'done_epoch')
  return not h[1] and h[2] == epoch
end
