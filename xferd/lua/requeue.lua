-- Queue a live room's pending round again after its stream entry was lost (the consumer
-- group or the stream was deleted): KEYS room, stream, timeouts; ARGV policy, room.
-- Returns 1 when an entry was added, 0 when the room has no queued round to redo.
local room_key, stream_key, timeouts_key = KEYS[1], KEYS[2], KEYS[3]
local h = redis.call('HMGET', room_key, 'status', 'round', 'queued_round', 'dst_count')
if not h[1] then return 0 end
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if status == 0 or status == 4 or queued <= round then return 0 end
local sessions = {}
for k = 0, tonumber(h[4]) - 1 do
  sessions[#sessions + 1] = redis.call('HGET', room_key, 'dst' .. k .. '.session')
end
add_entry(room_key, stream_key, queued, sessions)
refresh_deadline(room_key, timeouts_key)
return 1
