-- The envelope of a room transition. notify: the caller pushes the status to the room's
-- endpoints now. A round's end is pushed by its holder (notify given); Failed is pushed by
-- whoever sees it once no write of the room is in flight (the drain acknowledgment), and
-- never while one is.
--@include envelope
--@include room
--@include holder
--@keys room
local function room_reply(K, verdict, note, notify, data)
  local status = num(K.room, 'status')
  if status == STATUS.Failed then
    notify = not writing(K.room)
    note = redis.call('HGET', K.room, 'failure') or note
  end
  local endpoints = {}
  if notify then endpoints = dst_values(K.room, 'endpoint') end
  return envelope(verdict, status, note, notify, endpoints, data)
end
