-- A worker takes a round to write it: KEYS room keys, then one session key per destination
-- (in order); ARGV room, round, entry_id, consumer, lease_ms.
-- The entry must be pending on this worker. Taking bumps the room's fencing epoch: from now
-- on only (consumer, epoch) may renew, commit or acknowledge the round, and the room's
-- source blocks stay held until that holder lets go or the fencer stops it.
-- Returns {'ok' | 'redo', epoch, room fields, session fields...} (only what planning reads,
-- as flat name/value pairs; 'redo': an earlier taker never completed it), or
-- {'stale', why} (the entry acknowledged when it is this worker's to acknowledge).
local entry_round, entry, consumer = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease_ms = tonumber(ARGV[5])
if not pending_on(entry, consumer) then
  return {'stale', 'entry ' .. entry .. ' is not pending on this worker'}
end
local function stale(reason)
  redis.call('XACK', STREAM, GROUP, entry)
  return {'stale', reason}
end
if redis.call('EXISTS', ROOM_KEY) == 0 then return stale('room record is gone') end
local h = redis.call('HMGET', ROOM_KEY, 'status', 'round', 'queued_round', 'entry', 'holder',
  'holder_entry', 'epoch', 'takes')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) then return stale('room is ' .. NAMES[status]) end
if round >= entry_round then return stale('round ' .. entry_round .. ' is already committed') end
if queued ~= entry_round then return stale('round ' .. entry_round .. ' is not the queued one') end
local epoch, takes
if h[5] == consumer and h[6] == entry then
  epoch, takes = tonumber(h[7]), tonumber(h[8])  -- a retried begin: the same take
elseif h[5] then
  -- a second entry for a round someone holds (queued again after a lost group): it
  -- yields, and the holder's entry stays the round's own
  redis.call('HSET', ROOM_KEY, 'entry', h[6])
  return stale('round ' .. entry_round .. ' is held by ' .. h[5])
elseif h[4] ~= entry then
  return stale('entry ' .. entry .. ' was superseded by ' .. tostring(h[4]))
else
  epoch = redis.call('HINCRBY', ROOM_KEY, 'epoch', 1)
  takes = redis.call('HINCRBY', ROOM_KEY, 'takes', 1)
  if takes > 1 then redis.call('HINCRBY', ROOM_KEY, 'rewrites', 1) end
  redis.call('HSET', ROOM_KEY, 'holder', consumer, 'holder_entry', entry, 'taken_at', NOW,
    'lease_until', NOW + lease_ms)
  redis.call('ZADD', WRITING, NOW + lease_ms, ROOM)
  redis.call('XCLAIM', STREAM, GROUP, consumer, 0, entry, 'JUSTID')  -- the lease starts now
end
local function pick(key, fields)
  local values, flat = redis.call('HMGET', key, unpack(fields)), {}
  for i, field in ipairs(fields) do
    if values[i] then flat[#flat + 1] = field; flat[#flat + 1] = values[i] end
  end
  return flat
end
local fields = {'dst_count', 'total_tokens', 'src_indices'}
for k = 0, (num('dst_count') or 0) - 1 do
  for _, name in ipairs({'session', 'dst_indices', 'allocated_tokens', 'sent_tokens', 'one_round'}) do
    fields[#fields + 1] = 'dst' .. k .. '.' .. name
  end
end
local out = {takes > 1 and 'redo' or 'ok', epoch, pick(ROOM_KEY, fields)}
for i = SESSIONS, #KEYS do out[#out + 1] = pick(KEYS[i], {'ptrs', 'lens', 'failed', 'registered_at'}) end
return out
