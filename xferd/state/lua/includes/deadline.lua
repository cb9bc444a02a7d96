-- The one deadline a live room has, by phase (room.py's DEADLINES, tested in their order);
-- the janitor fails the room when it passes.
--@include room util
--@keys room timeouts
local function refresh_deadline(K, room, policy)
  local h = redis.call('HMGET', K.room, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local round, queued = tonumber(h[5]), tonumber(h[6])
  local phase
  if terminal(status) then
    redis.call('HDEL', K.room, 'deadline', 'deadline_reason')
    redis.call('ZREM', K.timeouts, room)
    return
  elseif queued > round then phase = 'round'
  elseif status == STATUS.Transferring then phase = 'transferring'
  elseif required == 0 or count < required then phase = 'bootstrap'
  elseif not h[4] then phase = 'waiting'
  else return end
  local d = DEADLINES[phase]
  local limit = policy[d.policy]
  local deadline = tonumber(redis.call('HGET', K.room, d.start)) + limit
  local values = {limit = secs(limit), queued_round = queued, round = round, dst_count = count,
                  required_dst_info_num = required}
  local reason = string.gsub(d.reason, '{([%w_]+)}', values)
  redis.call('HSET', K.room, 'deadline', deadline, 'deadline_reason', reason)
  redis.call('ZADD', K.timeouts, deadline, room)
end
