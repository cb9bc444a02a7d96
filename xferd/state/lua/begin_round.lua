--[[ A worker takes a round to write it.
  KEYS room rounds writing sessions...
  ARGV room round entry consumer lease_ms
  `sessions`: one session key per destination, in order. The entry must be pending on this
  worker. Taking bumps the room's fencing epoch: from now on only (consumer, epoch) may
  renew, commit or acknowledge the round, and the room's source blocks stay held until
  that holder lets go or the fencer stops it.
  Returns ok | redo (an earlier taker never completed it), data {epoch, {room fields},
  {session fields}...} (only what planning reads, as flat name/value pairs); or stale, with
  the entry acknowledged when it is this worker's to acknowledge and nothing else written.
]]
--@include util
--@include room
--@include holder
--@include let_go
--@include envelope
local entry_round, entry, consumer = tonumber(A.round), A.entry, A.consumer
if not pending_on(K, entry, consumer) then
  return envelope('stale', nil, 'entry ' .. entry .. ' is not pending on this worker', false)
end
local function stale(reason)
  redis.call('XACK', K.rounds, GROUP, entry)
  return envelope('stale', nil, reason, false)
end
if redis.call('EXISTS', K.room) == 0 then return stale('room record is gone') end
local h = redis.call('HMGET', K.room, 'status', 'round', 'queued_round', 'entry', 'holder',
  'holder_entry', 'epoch', 'takes')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) then return stale('room is ' .. STATUS_NAME[status]) end
if round >= entry_round then return stale('round ' .. entry_round .. ' is already committed') end
if queued ~= entry_round then return stale('round ' .. entry_round .. ' is not the queued one') end
local epoch, takes
if h[5] == consumer and h[6] == entry then
  epoch, takes = tonumber(h[7]), tonumber(h[8])  -- a retried begin: the same take
elseif h[5] then
  -- a second entry for a round someone holds (queued again after a lost group): it
  -- yields, and the holder's entry stays the round's own
  redis.call('HSET', K.room, 'entry', h[6])
  return envelope('stale', nil, 'round ' .. entry_round .. ' is held by ' .. h[5], false)
elseif h[4] ~= entry then
  return envelope('stale', nil, 'entry ' .. entry .. ' was superseded by ' .. tostring(h[4]), false)
else
  local now, lease_ms = now_ms(), tonumber(A.lease_ms)
  epoch = redis.call('HINCRBY', K.room, 'epoch', 1)
  takes = redis.call('HINCRBY', K.room, 'takes', 1)
  if takes > 1 then redis.call('HINCRBY', K.room, 'rewrites', 1) end
  redis.call('HSET', K.room, 'holder', consumer, 'holder_entry', entry, 'taken_at', now,
    'lease_until', now + lease_ms)
  redis.call('ZADD', K.writing, now + lease_ms, A.room)
  redis.call('XCLAIM', K.rounds, GROUP, consumer, 0, entry, 'JUSTID')  -- the lease starts now
end
local function pick(key, fields)
  local values, flat = redis.call('HMGET', key, unpack(fields)), {}
  for i, field in ipairs(fields) do
    if values[i] then flat[#flat + 1] = field; flat[#flat + 1] = values[i] end
  end
  return flat
end
local fields = {'dst_count', 'total_tokens', 'src_indices'}
for k = 0, (num(K.room, 'dst_count') or 0) - 1 do
  for _, name in ipairs({'session', 'dst_indices', 'allocated_tokens', 'sent_tokens', 'one_round'}) do
    fields[#fields + 1] = 'dst' .. k .. '.' .. name
  end
end
local data = {epoch, pick(K.room, fields)}
for _, key in ipairs(K.sessions) do data[#data + 1] = pick(key, {'ptrs', 'lens', 'failed', 'registered_at'}) end
return envelope(takes > 1 and 'redo' or 'ok', status, '', false, {}, data)
