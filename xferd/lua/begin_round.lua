-- A worker starts a round: KEYS room, stream, session keys (one per destination, in order);
-- ARGV policy, room, round, entry_id, group, consumer, lease_ms.
-- Returns {'ok' | 'redo', room fields, session fields...} (only what planning reads, as
-- flat name/value pairs) with a write lease taken ('redo':
-- another worker began this round and never committed it), or {'stale', why}
-- with the entry acknowledged (committed already, superseded, or the room ended).
local room_key, stream_key = KEYS[1], KEYS[2]
local entry_round = tonumber(ARGV[3])
local function stale(reason)
  redis.call('XACK', stream_key, ARGV[5], ARGV[4])
  return {'stale', reason}
end
if redis.call('EXISTS', room_key) == 0 then return stale('room record is gone') end
local h = redis.call('HMGET', room_key, 'status', 'round', 'queued_round')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if status == 0 or status == 4 then return stale('room is ' .. NAMES[status]) end
if round >= entry_round then return stale('round ' .. entry_round .. ' is already committed') end
if queued ~= entry_round then return stale('round ' .. entry_round .. ' is not the queued one') end
local before = redis.call('HMGET', room_key, 'write_round', 'write_owner')
local verdict = 'ok'
if tonumber(before[1]) == entry_round and before[2] and before[2] ~= ARGV[6] then
  verdict = 'redo'
  redis.call('HINCRBY', room_key, 'rewrites', 1)
end
redis.call('HSET', room_key, 'write_round', entry_round, 'write_owner', ARGV[6],
  'write_until', NOW + tonumber(ARGV[7]))
local function pick(key, fields)
  local values, flat = redis.call('HMGET', key, unpack(fields)), {}
  for i, field in ipairs(fields) do
    if values[i] then flat[#flat + 1] = field; flat[#flat + 1] = values[i] end
  end
  return flat
end
local fields = {'dst_count', 'total_tokens', 'src_indices'}
for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
  for _, name in ipairs({'session', 'dst_indices', 'allocated_tokens', 'sent_tokens', 'one_round'}) do
    fields[#fields + 1] = 'dst' .. k .. '.' .. name
  end
end
local out = {verdict, pick(room_key, fields)}
for i = 3, #KEYS do out[#out + 1] = pick(KEYS[i], {'ptrs', 'lens', 'failed'}) end
return out
