-- The encoder gives an ended room's blocks back now: KEYS room keys; ARGV room.
-- Returns the number released, or an error while the room is live or a write of it is in
-- flight. Unpublished blocks go back too: the encoder calling this is done with them.
local status = num('status')
if status and not terminal(status) then
  return redis.error_reply('room ' .. ROOM .. ' is ' .. NAMES[status] .. ': abort it first')
end
if status and writing() then
  return redis.error_reply('room ' .. ROOM .. ': a write from its blocks may still be in flight')
end
return give_back_blocks()
