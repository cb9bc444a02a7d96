-- A worker still writing a round keeps its claim: KEYS room, stream;
-- ARGV policy, room, round, entry_id, group, consumer, write_lease_ms.
-- Re-claims the entry with JUSTID (resets its idle time without counting a delivery, so no
-- other worker reclaims it) and extends the write lease on the source blocks.
-- Returns {'ok'}, or why the claim is lost: {'ended', why} (the room is over: the entry
-- is of no use to anyone) or {'taken', why} (another worker has the round now).
local room_key, stream_key = KEYS[1], KEYS[2]
local h = redis.call('HMGET', room_key, 'status', 'write_round', 'write_owner')
if not h[1] then return {'ended', 'room record is gone'} end
local status = tonumber(h[1])
if status == 0 or status == 4 then return {'ended', 'room is ' .. NAMES[status]} end
if h[3] ~= ARGV[6] or tonumber(h[2]) ~= tonumber(ARGV[3]) then
  return {'taken', 'round ' .. ARGV[3] .. ' was taken over by ' .. tostring(h[3])}
end
local pending = redis.call('XPENDING', stream_key, ARGV[5], ARGV[4], ARGV[4], 1)
if #pending == 0 or pending[1][2] ~= ARGV[6] then
  return {'taken', 'entry ' .. ARGV[4] .. ' is no longer pending on this worker'}
end
redis.call('XCLAIM', stream_key, ARGV[5], ARGV[6], 0, ARGV[4], 'JUSTID')
redis.call('HSET', room_key, 'write_until', NOW + tonumber(ARGV[7]))
return {'ok'}
