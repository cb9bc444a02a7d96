-- A destination session asked for the next round: KEYS room, session, stream, timeouts,
-- release; ARGV policy, room, session_id, endpoint, dst_indices, required, sent, allocated.
local room_key, session_key, stream_key, timeouts_key, release_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local session = ARGV[3]
if redis.call('EXISTS', room_key) == 0 then
  fail(room_key, timeouts_key, release_key, 'resume for unknown room ' .. ROOM)
  return failed_reply(room_key)
end
local status = num(room_key, 'status')
if status == 0 then return failed_reply(room_key) end
if status == 4 then return {4, 'resume for a finished room ignored'} end
local k = find_dst(room_key, session)
local reason
if not k then
  reason = 'resume from session ' .. session .. ' which never sent init for this room'
  fail(room_key, timeouts_key, release_key, reason)
  return failed_reply(room_key)
end
local d = 'dst' .. k .. '.'
local signature = ARGV[7] .. '|' .. ARGV[8] .. '|' .. ARGV[5]
if redis.call('HGET', room_key, d .. 'last_resume') == signature then
  return {status, 'duplicate resume ignored'}
end
local round, queued = num(room_key, 'round'), num(room_key, 'queued_round')
local recorded_sent = num(room_key, d .. 'sent_tokens')
if redis.call('EXISTS', session_key) == 0 then
  reason = 'resume from unregistered session ' .. session
elseif redis.call('HEXISTS', session_key, 'failed') == 1 then
  reason = 'session ' .. session .. ' is marked failed; it must register again'
elseif status ~= 3 then
  reason = 'resume while the room is ' .. NAMES[status] .. '; resume follows Transferring'
elseif tonumber(ARGV[6]) ~= num(room_key, 'required_dst_info_num') then
  reason = 'resume required_dst_info_num ' .. ARGV[6] .. ' disagrees with the record'
elseif queued > round then
  reason = 'resume while round ' .. queued .. ' is still in flight'
elseif tonumber(ARGV[7]) ~= recorded_sent then
  reason = 'resume sent_tokens ' .. ARGV[7] .. ' disagrees with the record (' ..
    recorded_sent .. ' sent to ' .. session .. ')'
elseif num(room_key, d .. 'ready_round') > round then
  reason = 'second resume from ' .. session .. ' for round ' .. (round + 1)
end
if reason then
  fail(room_key, timeouts_key, release_key, reason)
  return failed_reply(room_key)
end
redis.call('HSET', room_key, d .. 'dst_indices', ARGV[5], d .. 'allocated_tokens', ARGV[8],
  d .. 'ready_round', round + 1, d .. 'last_resume', signature, d .. 'endpoint', ARGV[4],
  d .. 'resumed_at', NOW, 'updated_at', NOW)
maybe_enqueue(room_key, stream_key)
refresh_deadline(room_key, timeouts_key)
return {status, 'ok'}
