--[[ Queue a live room's pending round again after its stream entry was lost (the consumer
  group or the stream was deleted).
  KEYS room rounds timeouts record
  ARGV room
  A holder still writing keeps the round (the new entry yields to it at begin_round).
  Returns requeued | ignored (no queued round to redo; nothing written).
]]
--@include util
--@include policy
--@include deadline
--@include queue
--@include envelope
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local h = redis.call('HMGET', K.room, 'status', 'round', 'queued_round')
if not h[1] then return envelope('ignored', nil, 'room record is gone', false) end
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) or queued <= round then return envelope('ignored', status, 'no round to redo', false) end
add_entry(K, A.room, queued, now_ms())
refresh_deadline(K, A.room, policy)
return envelope('requeued', status, '', false)
