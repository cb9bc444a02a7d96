-- A terminal room once no write of it is in flight: its published source blocks go back
-- (an unpublished allocation waits: its encoder may still be writing into it) and the
-- record expires after the retention period. False while a write may still read the
-- blocks: the holder's end, or the fencer, settles the room then.
--@include holder blocks
--@keys room pool_owned pool_free pool_leases
local function settle(K, room, policy, now)
  if writing(K.room) then return false end
  if redis.call('HEXISTS', K.room, 'total_tokens') == 1 then give_back_blocks(K, room) end
  if redis.call('HEXISTS', K.room, 'drained_at') == 0 then
    redis.call('HSET', K.room, 'drained_at', now)
  end
  redis.call('PEXPIRE', K.room, policy.retention)
  return true
end
