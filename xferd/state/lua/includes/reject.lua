-- A message that breaks a rule fails its room (the one write it makes), and is answered so:
-- verdict failed, the note the room's failure.
--@include fail reply
local function reject(K, room, policy, now, reason)
  fail(K, room, policy, now, reason, 'bad_input')
  return room_reply(K, 'failed', '', false)
end
