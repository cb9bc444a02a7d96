-- An allocation lease ran out: KEYS room keys; ARGV room (or 'req:<rid>'). A lease
-- still in pool:leases was never published (publish_source removes it in the step that
-- names the blocks), nor renewed by its encoder: the encoder stopped, so the blocks go
-- back, and a live room that was waiting for them fails now (its language side is told)
-- rather than at its waiting timeout.
-- Returns {released}, or {released, status, note, notify, endpoints...} when a room failed.
local expires_at = redis.call('ZSCORE', LEASES, ROOM)
if not expires_at or tonumber(expires_at) > NOW then return {0} end
local released = give_back_blocks()
local status = num('status')
if status and not terminal(status) and redis.call('HEXISTS', ROOM_KEY, 'total_tokens') == 0 then
  fail('the encoder stopped: it allocated ' .. released .. ' source blocks for the room but neither ' ..
    'published nor renewed them before their lease ran out', 'aborted')
  local out = reply('', false)
  table.insert(out, 1, released)
  return out
end
return {released}
