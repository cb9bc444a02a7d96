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
-- the room read once: the round, its hold, and what planning reads
local r = read_fields(K.room, {'status', 'round', 'queued_round', 'entry', 'holder', 'holder_entry', 'epoch',
  'takes', 'dst_count', 'total_tokens', 'src_indices'})
if not r.status then return stale('room record is gone') end
local status, round, queued = tonumber(r.status), tonumber(r.round), tonumber(r.queued_round)
if terminal(status) then return stale('room is ' .. STATUS_NAME[status]) end
if round >= entry_round then return stale('round ' .. entry_round .. ' is already committed') end
if queued ~= entry_round then return stale('round ' .. entry_round .. ' is not the queued one') end
local epoch, takes
if r.holder == consumer and r.holder_entry == entry then
  epoch, takes = tonumber(r.epoch), tonumber(r.takes)  -- a retried begin: the same take
elseif r.holder then
  -- a second entry for a round someone holds (queued again after a lost group): it
  -- yields, and the holder's entry stays the round's own
  redis.call('HSET', K.room, 'entry', r.holder_entry)
  return envelope('stale', nil, 'round ' .. entry_round .. ' is held by ' .. r.holder, false)
elseif r.entry ~= entry then
  return envelope('stale', nil, 'entry ' .. entry .. ' was superseded by ' .. tostring(r.entry), false)
else
  local now, lease_ms = now_ms(), tonumber(A.lease_ms)
  epoch, takes = tonumber(r.epoch or 0) + 1, tonumber(r.takes or 0) + 1
  redis.call('HSET', K.room, 'epoch', epoch, 'takes', takes, 'holder', consumer, 'holder_entry', entry,
    'taken_at', now, 'lease_until', now + lease_ms)
  if takes > 1 then redis.call('HINCRBY', K.room, 'rewrites', 1) end
  redis.call('ZADD', K.writing, now + lease_ms, A.room)
  redis.call('XCLAIM', K.rounds, GROUP, consumer, 0, entry, 'JUSTID')  -- the lease starts now
end
-- what planning reads, as flat name/value pairs of the fields present
local function add(flat, name, value)
  if value then flat[#flat + 1] = name; flat[#flat + 1] = value end
end
local room = {}
for _, name in ipairs({'dst_count', 'total_tokens', 'src_indices'}) do add(room, name, r[name]) end
local dst_names = {'session', 'dst_indices', 'allocated_tokens', 'sent_tokens', 'one_round'}
for k, dst in ipairs(read_dsts(K.room, tonumber(r.dst_count) or 0, dst_names)) do
  for _, name in ipairs(dst_names) do add(room, 'dst' .. (k - 1) .. '.' .. name, dst[name]) end
end
local data = {epoch, room}
local session_names = {'ptrs', 'lens', 'failed', 'registered_at'}
for _, key in ipairs(K.sessions) do
  local fields, session = read_fields(key, session_names), {}
  for _, name in ipairs(session_names) do add(session, name, fields[name]) end
  data[#data + 1] = session
end
return envelope(takes > 1 and 'redo' or 'ok', status, '', false, {}, data)
