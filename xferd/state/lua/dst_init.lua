-- A destination session sent init: KEYS room keys, session;
-- ARGV room, session_id, endpoint, dst_indices, required_dst_info_num, allocated,
-- one_round ('1': the 6-frame init, everything in one round into these blocks).
local session_key = KEYS[SESSIONS]
local session, required = ARGV[2], tonumber(ARGV[5])
local status = ensure_room()
if terminal(status) then
  -- a late or repeated init changes nothing; only Failed (once drained) is repeated
  return reply('init for a room that is ' .. NAMES[status] .. ' ignored', false)
end
local k = find_dst(session)
if k then
  local d = 'dst' .. k .. '.'
  if redis.call('HGET', ROOM_KEY, d .. 'dst_indices') == ARGV[4]
      and redis.call('HGET', ROOM_KEY, d .. 'allocated_tokens') == ARGV[6] then
    return reply('duplicate init ignored', false)
  end
  fail('conflicting second init from session ' .. session .. ' with other blocks or allocation', 'bad_input')
  return reply('', false)
end
local reason
local known_required, count = num('required_dst_info_num'), num('dst_count')
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
  fail(reason, 'bad_input')
  return reply('', false)
end
local d = 'dst' .. count .. '.'
redis.call('HSET', ROOM_KEY, 'required_dst_info_num', required, 'dst_count', count + 1,
  d .. 'session', session, d .. 'endpoint', ARGV[3], d .. 'dst_indices', ARGV[4],
  d .. 'allocated_tokens', ARGV[6], d .. 'sent_tokens', 0, d .. 'ready_round', 1,
  d .. 'init_at', NOW, 'updated_at', NOW)
if ARGV[7] == '1' then redis.call('HSET', ROOM_KEY, d .. 'one_round', 1) end
redis.call('PEXPIRE', session_key, SESSION_RETENTION_MS)  -- a session lives a retention after its last use
if count + 1 == required then
  redis.call('HSET', ROOM_KEY, 'ready_at', NOW)
  if status < 2 then set_status(2) end
end
maybe_enqueue()
refresh_deadline()
return reply('ok', false)
