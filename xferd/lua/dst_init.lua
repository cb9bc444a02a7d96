-- A destination session sent init: KEYS room, session, stream, timeouts, release;
-- ARGV policy, room, session_id, endpoint, dst_indices, required_dst_info_num, allocated,
-- one_round ('1': the 6-frame init, everything in one round into these blocks).
local room_key, session_key, stream_key, timeouts_key, release_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local session, required = ARGV[3], tonumber(ARGV[6])
local status = ensure_room(room_key)
if status == 0 then return failed_reply(room_key) end
local k = find_dst(room_key, session)
if k then
  local d = 'dst' .. k .. '.'
  if redis.call('HGET', room_key, d .. 'dst_indices') == ARGV[5]
      and redis.call('HGET', room_key, d .. 'allocated_tokens') == ARGV[7] then
    return {status, 'duplicate init ignored'}
  end
  fail(room_key, timeouts_key, release_key,
    'conflicting second init from session ' .. session .. ' with other blocks or allocation')
  return failed_reply(room_key)
end
local reason
local known_required, count = num(room_key, 'required_dst_info_num'), num(room_key, 'dst_count')
if redis.call('EXISTS', session_key) == 0 then
  reason = 'init from unregistered session ' .. session
elseif redis.call('HEXISTS', session_key, 'failed') == 1 then
  reason = 'session ' .. session .. ' is marked failed (' ..
    redis.call('HGET', session_key, 'failed') .. '); it must register again'
elseif known_required ~= 0 and known_required ~= required then
  reason = 'required_dst_info_num ' .. required .. ' disagrees with ' .. known_required ..
    ' from an earlier init'
elseif count >= required then
  reason = 'init from a session beyond required_dst_info_num ' .. required
end
if reason then
  fail(room_key, timeouts_key, release_key, reason)
  return failed_reply(room_key)
end
local d = 'dst' .. count .. '.'
redis.call('HSET', room_key, 'required_dst_info_num', required, 'dst_count', count + 1,
  d .. 'session', session, d .. 'endpoint', ARGV[4], d .. 'dst_indices', ARGV[5],
  d .. 'allocated_tokens', ARGV[7], d .. 'sent_tokens', 0, d .. 'ready_round', 1,
  d .. 'init_at', NOW, 'updated_at', NOW)
if ARGV[8] == '1' then redis.call('HSET', room_key, d .. 'one_round', 1) end
if count + 1 == required then
  redis.call('HSET', room_key, 'ready_at', NOW)
  if status < 2 then set_status(room_key, 2) end
end
maybe_enqueue(room_key, stream_key)
refresh_deadline(room_key, timeouts_key)
return {num(room_key, 'status'), 'ok'}
