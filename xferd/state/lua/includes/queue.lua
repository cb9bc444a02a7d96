-- The node's work stream: one entry per queued round.
--@include room
--@keys room rounds

-- The work entry of one round (Store.round_from reads it); the room remembers it as the
-- entry that carries its queued round, so any other entry for that round is stale.
local function add_entry(K, room, round, now)
  local id = redis.call('XADD', K.rounds, '*', 'room', room, 'round', round,
    'sessions', table.concat(dst_values(K.room, 'session'), ','))
  redis.call('HSET', K.room, 'entry', id, 'queued_at', now)
  return id
end

-- Queue the next round once the source is known and every destination is ready for it.
local function maybe_enqueue(K, room, now)
  local h = redis.call('HMGET', K.room, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if terminal(status) or required == 0 or count < required or not h[4] then
    return false
  end
  local total, nxt = tonumber(h[4]), tonumber(h[5]) + 1
  if tonumber(h[6]) >= nxt then return false end
  for k = 0, count - 1 do
    local d = redis.call('HMGET', K.room, 'dst' .. k .. '.sent_tokens', 'dst' .. k .. '.ready_round')
    if tonumber(d[1]) < total and tonumber(d[2]) < nxt then return false end
  end
  redis.call('HSET', K.room, 'queued_round', nxt, 'takes', 0, 'handbacks', 0)
  add_entry(K, room, nxt, now)
  return true
end
