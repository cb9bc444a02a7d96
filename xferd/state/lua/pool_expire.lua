--[[ An allocation lease ran out.
  KEYS room statuses stats ended timeouts pool_owned pool_free pool_leases record
  ARGV room
  `room` may be a request's allocation ('req:<rid>'). A lease still in pool:leases was
  never published (publish_source removes it in the step that names the blocks), nor
  renewed by its encoder: the encoder stopped, so the blocks go back, and a live room that
  was waiting for them fails now (its language side is told) rather than at its waiting
  timeout.
  Returns ok, data {released} (the room's status and failure with it when it failed now) |
  ignored (not due; nothing written).
]]
--@include util
--@include policy
--@include fail
--@include reply
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local expires_at = redis.call('ZSCORE', K.pool_leases, A.room)
if not expires_at or tonumber(expires_at) > now then return envelope('ignored', nil, 'not due', false, {}, {0}) end
local released = give_back_blocks(K, A.room)
local status = num(K.room, 'status')
if status and not terminal(status) and redis.call('HEXISTS', K.room, 'total_tokens') == 0 then
  fail(K, A.room, policy, now, 'the encoder stopped: it allocated ' .. released .. ' source blocks for the ' ..
    'room but neither published nor renewed them before their lease ran out', 'aborted')
  return room_reply(K, 'failed', '', false, {released})
end
return envelope('ok', nil, '', false, {}, {released})
