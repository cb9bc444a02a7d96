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
--@include status
--@include deadline
--@include queue
--@include reply
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local session_key, session, required = K.sessions[1], A.session, tonumber(A.required)
local r = read_fields(K.room, DEADLINE_FIELDS)
local status = tonumber(r.status) or STATUS.Bootstrapping
if terminal(status) then
  -- a late or repeated init changes nothing; only Failed (once drained) is repeated
  return room_reply(K, 'ignored', 'init for a room that is ' .. STATUS_NAME[status] .. ' ignored', false)
end
local count = tonumber(r.dst_count) or 0
local dsts = read_dsts(K.room, count, {'session', 'dst_indices', 'allocated_tokens', 'sent_tokens', 'ready_round'})
for _, dst in ipairs(dsts) do
  if dst.session == session then
    if dst.dst_indices == A.dst_indices and dst.allocated_tokens == A.allocated then
      return room_reply(K, 'ignored', 'duplicate init ignored', false)
    end
    return reject(K, A.room, policy, now, 'conflicting second init from session ' .. session ..
      ' with other blocks or allocation')
  end
end
local known_required = tonumber(r.required_dst_info_num) or 0
local registered = redis.call('HMGET', session_key, 'session', 'failed')
local reason
if not registered[1] and not registered[2] then
  reason = 'init from unregistered session ' .. session
elseif registered[2] then
  reason = 'session ' .. session .. ' is marked failed (' .. registered[2] .. '); it must register again'
elseif known_required ~= 0 and known_required ~= required then
  reason = 'required_dst_info_num ' .. required .. ' disagrees with ' .. known_required ..
    ' from an earlier init'
elseif count >= required then
  reason = 'init from a session beyond required_dst_info_num ' .. required
end
if reason then return reject(K, A.room, policy, now, reason) end
if not r.status then create_room(K.room, A.room, now, r) end
local d = 'dst' .. count .. '.'
local fields = {'required_dst_info_num', required, 'dst_count', count + 1,
  d .. 'session', session, d .. 'endpoint', A.endpoint, d .. 'dst_indices', A.dst_indices,
  d .. 'allocated_tokens', A.allocated, d .. 'sent_tokens', 0, d .. 'ready_round', 1,
  d .. 'init_at', now, 'updated_at', now}
if A.one_round == '1' then fields[#fields + 1] = d .. 'one_round'; fields[#fields + 1] = 1 end
if count + 1 == required then fields[#fields + 1] = 'ready_at'; fields[#fields + 1] = now end
redis.call('HSET', K.room, unpack(fields))
redis.call('PEXPIRE', session_key, policy.session_retention)  -- a session lives a retention after its last use
r.required_dst_info_num, r.dst_count = required, count + 1
dsts[count + 1] = {session = session, sent_tokens = 0, ready_round = 1}
if count + 1 == required then
  r.ready_at = now
  if status == STATUS.Bootstrapping then
    set_status(K, A.room, status, STATUS.WaitingForInput, now)
    status, r.status = STATUS.WaitingForInput, STATUS.WaitingForInput
  end
end
maybe_enqueue(K, A.room, now, r, dsts)
refresh_deadline(K, A.room, policy, r)
return envelope('ok', status, 'ok', false)
