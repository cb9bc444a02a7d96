-- The node's work stream: one entry per queued round.
--@include room
--@keys room rounds

-- The work entry of one round (Store.round_from reads it); the room remembers it as the
-- entry that carries its queued round, so any other entry for that round is stale.
-- `sessions`: the destinations' session ids, in order (nil: read from the room); `...`:
-- more fields and values of the room to write with the entry's.
local function add_entry(K, room, round, now, sessions, ...)
  local id = redis.call('XADD', K.rounds, '*', 'room', room, 'round', round,
    'sessions', table.concat(sessions or dst_values(K.room, 'session'), ','))
  redis.call('HSET', K.room, 'entry', id, 'queued_at', now, ...)
  return id
end

-- What maybe_enqueue reads of each destination.
local QUEUE_DST_FIELDS = {'session', 'sent_tokens', 'ready_round'}

-- Queue the next round once the source is known and every destination is ready for it.
-- `r`: the room's fields as they are now (those of DEADLINE_FIELDS, which the caller read
-- and kept up to date), kept up to date here (queued_round, queued_at); `dsts`: its
-- destinations' (QUEUE_DST_FIELDS; nil reads them).
local function maybe_enqueue(K, room, now, r, dsts)
  local status, required, count = tonumber(r.status), tonumber(r.required_dst_info_num), tonumber(r.dst_count)
  if terminal(status) or required == 0 or count < required or not r.total_tokens then
    return false
  end
  local total, nxt = tonumber(r.total_tokens), tonumber(r.round) + 1
  if tonumber(r.queued_round) >= nxt then return false end
  dsts = dsts or read_dsts(K.room, count, QUEUE_DST_FIELDS)
  local sessions = {}
  for k = 1, count do
    local d = dsts[k]
    if tonumber(d.sent_tokens) < total and tonumber(d.ready_round) < nxt then return false end
    sessions[k] = d.session
  end
  add_entry(K, room, nxt, now, sessions, 'queued_round', nxt, 'takes', 0, 'handbacks', 0)
  r.queued_round, r.queued_at = nxt, now
  return true
end
