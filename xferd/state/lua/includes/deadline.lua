-- The one deadline a live room has, by phase (room.py's DEADLINES, tested in their order);
-- the janitor fails the room when it passes.
--@include room util
--@keys room timeouts
-- `r`: the room's fields as they are now (those of DEADLINE_FIELDS, kept up to date by a
-- caller that read them and wrote since); nil reads them.
local function refresh_deadline(K, room, policy, r)
  r = r or read_fields(K.room, DEADLINE_FIELDS)
  local status, required, count = tonumber(r.status), tonumber(r.required_dst_info_num), tonumber(r.dst_count)
  local round, queued = tonumber(r.round), tonumber(r.queued_round)
  local phase
  if terminal(status) then
    redis.call('HDEL', K.room, 'deadline', 'deadline_reason')
    redis.call('ZREM', K.timeouts, room)
    return
  elseif queued > round then phase = 'round'
  elseif status == STATUS.Transferring then phase = 'transferring'
  elseif required == 0 or count < required then phase = 'bootstrap'
  elseif not r.total_tokens then phase = 'waiting'
  else return end
  local d = DEADLINES[phase]
  local limit = policy[d.policy]
  local deadline = tonumber(r[d.start]) + limit
  local values = {limit = secs(limit), queued_round = queued, round = round, dst_count = count,
                  required_dst_info_num = required}
  local reason = string.gsub(d.reason, '{([%w_]+)}', values)
  redis.call('HSET', K.room, 'deadline', deadline, 'deadline_reason', reason)
  redis.call('ZADD', K.timeouts, deadline, room)
end
