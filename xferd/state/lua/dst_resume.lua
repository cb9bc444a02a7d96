-- A destination session asked for the next round: KEYS room keys, session;
-- ARGV room, session_id, endpoint, dst_indices, required, sent, allocated.
local session_key = KEYS[SESSIONS]
local session = ARGV[2]
if redis.call('EXISTS', ROOM_KEY) == 0 then
  fail('resume for unknown room ' .. ROOM, 'bad_input')
  return reply('', false)
end
local status = num('status')
if terminal(status) then
  return reply('resume for a room that is ' .. NAMES[status] .. ' ignored', false)
end
local k = find_dst(session)
local reason
if not k then
  fail('resume from session ' .. session .. ' which never sent init for this room', 'bad_input')
  return reply('', false)
end
local d = 'dst' .. k .. '.'
local signature = ARGV[6] .. '|' .. ARGV[7] .. '|' .. ARGV[4]
if redis.call('HGET', ROOM_KEY, d .. 'last_resume') == signature then
  return reply('duplicate resume ignored', false)
end
local round, queued = num('round'), num('queued_round')
local recorded_sent = num(d .. 'sent_tokens')
if redis.call('EXISTS', session_key) == 0 then
  reason = 'resume from unregistered session ' .. session
elseif redis.call('HEXISTS', session_key, 'failed') == 1 then
  reason = 'session ' .. session .. ' is marked failed; it must register again'
elseif status ~= 3 then
  reason = 'resume while the room is ' .. NAMES[status] .. '; resume follows Transferring'
elseif tonumber(ARGV[5]) ~= num('required_dst_info_num') then
  reason = 'resume required_dst_info_num ' .. ARGV[5] .. ' disagrees with the record'
elseif queued > round then
  reason = 'resume while round ' .. queued .. ' is still in flight'
elseif tonumber(ARGV[6]) ~= recorded_sent then
  reason = 'resume sent_tokens ' .. ARGV[6] .. ' disagrees with the record (' ..
    recorded_sent .. ' sent to ' .. session .. ')'
elseif num(d .. 'ready_round') > round then
  reason = 'second resume from ' .. session .. ' for round ' .. (round + 1)
end
if reason then
  fail(reason, 'bad_input')
  return reply('', false)
end
redis.call('HSET', ROOM_KEY, d .. 'dst_indices', ARGV[4], d .. 'allocated_tokens', ARGV[7],
  d .. 'ready_round', round + 1, d .. 'last_resume', signature, d .. 'endpoint', ARGV[3],
  d .. 'resumed_at', NOW, 'updated_at', NOW)
redis.call('PEXPIRE', session_key, SESSION_RETENTION_MS)  -- a session lives a retention after its last use
maybe_enqueue()
refresh_deadline()
return reply('ok', false)
