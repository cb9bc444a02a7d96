-- A room reached Success or Failed (once: terminal statuses never change): counted by
-- outcome and failure class, and logged in the capped `ended` stream (recent ends with
-- their reasons, for `xferd status`, the status page and the janitor's log line; `by`: the
-- worker whose commit ended it, which pushes the status, for lostpush.py).
--@include room metrics
--@keys room stats ended
local function record_end(K, room, status, class, reason, by, now)
  local h = redis.call('HMGET', K.room, 'created_at', 'round', 'total_tokens', 'sent_tokens', 'dst_count')
  redis.call('HINCRBY', K.stats, 'rooms_ended:' .. STATUS_NAME[status] .. ':' .. class, 1)
  if status == STATUS.Success then observe(K.stats, 'room_seconds', now - tonumber(h[1])) end
  redis.call('XADD', K.ended, 'MAXLEN', '~', KEPT.ended, '*', 'room', room, 'status', STATUS_NAME[status],
    'class', class, 'reason', reason, 'rounds', h[2], 'total_tokens', h[3] or '', 'sent_tokens', h[4],
    'destinations', h[5], 'duration_ms', now - tonumber(h[1]), 'by', by or '')
end
