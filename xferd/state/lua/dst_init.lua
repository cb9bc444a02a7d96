--[[ A destination session sent init for a room.
  KEYS room rounds timeouts statuses stats ended pool_owned pool_free pool_leases record sessions...
  ARGV room session endpoint dst_indices required allocated one_round
  `sessions`: the one session that sent it. `one_round` '1': the 6-frame init, everything
  in one round into these blocks.
  Returns ok | ignored (a duplicate, or a room already ended) | failed (a bad init: the
  room failed, its reason in the note). A rejection writes only the room's failure.
]]
--@include util
--@include policy
--@include reject
--@include deadline
--@include queue
--@include reply
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local session_key, session, required = K.sessions[1], A.session, tonumber(A.required)
local status = num(K.room, 'status') or STATUS.Bootstrapping
if terminal(status) then
  -- a late or repeated init changes nothing; only Failed (once drained) is repeated
  return room_reply(K, 'ignored', 'init for a room that is ' .. STATUS_NAME[status] .. ' ignored', false)
end
local k = find_dst(K.room, session)
if k then
  local d = 'dst' .. k .. '.'
  if redis.call('HGET', K.room, d .. 'dst_indices') == A.dst_indices
      and redis.call('HGET', K.room, d .. 'allocated_tokens') == A.allocated then
    return room_reply(K, 'ignored', 'duplicate init ignored', false)
  end
  return reject(K, A.room, policy, now, 'conflicting second init from session ' .. session ..
    ' with other blocks or allocation')
end
local known_required, count = num(K.room, 'required_dst_info_num') or 0, num(K.room, 'dst_count') or 0
local reason
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
if reason then return reject(K, A.room, policy, now, reason) end
ensure_room(K.room, A.room, now)
local d = 'dst' .. count .. '.'
redis.call('HSET', K.room, 'required_dst_info_num', required, 'dst_count', count + 1,
  d .. 'session', session, d .. 'endpoint', A.endpoint, d .. 'dst_indices', A.dst_indices,
  d .. 'allocated_tokens', A.allocated, d .. 'sent_tokens', 0, d .. 'ready_round', 1,
  d .. 'init_at', now, 'updated_at', now)
if A.one_round == '1' then redis.call('HSET', K.room, d .. 'one_round', 1) end
redis.call('PEXPIRE', session_key, policy.session_retention)  -- a session lives a retention after its last use
if count + 1 == required then
  redis.call('HSET', K.room, 'ready_at', now)
  if status == STATUS.Bootstrapping then set_status(K, A.room, status, STATUS.WaitingForInput, now) end
end
maybe_enqueue(K, A.room, now)
refresh_deadline(K, A.room, policy)
return room_reply(K, 'ok', 'ok', false)
