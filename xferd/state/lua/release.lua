--[[ The encoder gives an ended room's blocks back now.
  KEYS room pool_owned pool_free pool_leases
  ARGV room
  `room` may be a request's allocation ('req:<rid>'). Unpublished blocks go back too: the
  encoder calling this is done with them.
  Returns ok, data {released} | refused while the room is live or a write of it is in
  flight (nothing written).
]]
--@include room
--@include holder
--@include blocks
--@include envelope
local status = num(K.room, 'status')
if status and not terminal(status) then
  return refuse('room ' .. A.room .. ' is ' .. STATUS_NAME[status] .. ': abort it first')
end
if status and writing(K.room) then
  return refuse('room ' .. A.room .. ': a write from its blocks may still be in flight')
end
return envelope('ok', status, '', false, {}, {give_back_blocks(K, A.room)})
