--[[ A destination session asked for the next round (resume).
  KEYS room rounds timeouts statuses stats ended pool_owned pool_free pool_leases record sessions...
  ARGV room session endpoint dst_indices required sent allocated
  `sessions`: the one session that sent it.
  Returns ok | ignored (a duplicate, or a room already ended) | failed (a bad resume: the
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
local session_key, session = K.sessions[1], A.session
local r = read_fields(K.room, DEADLINE_FIELDS)
if not r.status then
  return reject(K, A.room, policy, now, 'resume for unknown room ' .. A.room)
end
local status = tonumber(r.status)
if terminal(status) then
  return room_reply(K, 'ignored', 'resume for a room that is ' .. STATUS_NAME[status] .. ' ignored', false)
end
local dsts = read_dsts(K.room, tonumber(r.dst_count), {'session', 'sent_tokens', 'ready_round', 'last_resume'})
local k
for i, d in ipairs(dsts) do
  if d.session == session then k = i - 1; break end
end
if not k then
  return reject(K, A.room, policy, now, 'resume from session ' .. session .. ' which never sent init for this room')
end
local dst, d = dsts[k + 1], 'dst' .. k .. '.'
local signature = A.sent .. '|' .. A.allocated .. '|' .. A.dst_indices
if dst.last_resume == signature then
  return room_reply(K, 'ignored', 'duplicate resume ignored', false)
end
local round, queued = tonumber(r.round), tonumber(r.queued_round)
local recorded_sent = tonumber(dst.sent_tokens)
local registered = redis.call('HMGET', session_key, 'session', 'failed')
local reason
if not registered[1] and not registered[2] then
  reason = 'resume from unregistered session ' .. session
elseif registered[2] then
  reason = 'session ' .. session .. ' is marked failed; it must register again'
elseif status ~= STATUS.Transferring then
  reason = 'resume while the room is ' .. STATUS_NAME[status] .. '; resume follows Transferring'
elseif tonumber(A.required) ~= tonumber(r.required_dst_info_num) then
  reason = 'resume required_dst_info_num ' .. A.required .. ' disagrees with the record'
elseif queued > round then
  reason = 'resume while round ' .. queued .. ' is still in flight'
elseif tonumber(A.sent) ~= recorded_sent then
  reason = 'resume sent_tokens ' .. A.sent .. ' disagrees with the record (' ..
    recorded_sent .. ' sent to ' .. session .. ')'
elseif tonumber(dst.ready_round) > round then
  reason = 'second resume from ' .. session .. ' for round ' .. (round + 1)
end
if reason then return reject(K, A.room, policy, now, reason) end
redis.call('HSET', K.room, d .. 'dst_indices', A.dst_indices, d .. 'allocated_tokens', A.allocated,
  d .. 'ready_round', round + 1, d .. 'last_resume', signature, d .. 'endpoint', A.endpoint,
  d .. 'resumed_at', now, 'updated_at', now)
redis.call('PEXPIRE', session_key, policy.session_retention)  -- a session lives a retention after its last use
dst.ready_round = round + 1
maybe_enqueue(K, A.room, now, r, dsts)
refresh_deadline(K, A.room, policy, r)
return envelope('ok', status, 'ok', false)
