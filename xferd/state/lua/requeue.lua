-- Queue a live room's pending round again after its stream entry was lost (the consumer
-- group or the stream was deleted): KEYS room keys; ARGV room.
-- Returns 1 when an entry was added, 0 when the room has no queued round to redo. A holder
-- still writing keeps the round (the new entry yields to it at begin_round).
local h = redis.call('HMGET', ROOM_KEY, 'status', 'round', 'queued_round')
if not h[1] then return 0 end
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) or queued <= round then return 0 end
add_entry(queued)
refresh_deadline()
return 1
