-- Commit a written round by compare-and-set, acknowledging its entry in the same step:
-- KEYS room, stream, timeouts, release; ARGV policy, room, round, entry_id, group, consumer,
-- then each destination's sent_tokens after the round (dst0, dst1, ...).
-- A redelivered or stale entry changes nothing: {'stale', status}.
-- Else {'ok', status, release_now, endpoints...} (release_now: see the prelude).
local room_key, stream_key, timeouts_key, release_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local entry_round = tonumber(ARGV[3])
redis.call('XACK', stream_key, ARGV[5], ARGV[4])
if redis.call('EXISTS', room_key) == 0 then return {'stale', -1} end
local h = redis.call('HMGET', room_key, 'status', 'round', 'queued_round', 'write_owner',
  'total_tokens', 'dst_count')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if h[4] == ARGV[6] then redis.call('HDEL', room_key, 'write_round', 'write_owner', 'write_until') end
if status == 0 or status == 4 then
  -- the room ended while we wrote (or another worker committed it): once no write lease
  -- is left, no write reads its blocks any more and they may go back now
  if h[5] and redis.call('HEXISTS', room_key, 'write_owner') == 0 then
    redis.call('ZADD', release_key, NOW, ROOM)
  end
  return {'stale', status}
end
if round ~= entry_round - 1 or queued ~= entry_round then return {'stale', status} end
local total, count = tonumber(h[5]), tonumber(h[6])
if #ARGV - 6 ~= count then
  return redis.error_reply('commit names ' .. (#ARGV - 6) .. ' destinations, room has ' .. count)
end
local done, min_sent = true, total
for k = 0, count - 1 do
  local field = 'dst' .. k .. '.sent_tokens'
  local sent, before = tonumber(ARGV[7 + k]), num(room_key, field)
  if sent < before or sent > total then
    return redis.error_reply('commit would move ' .. field .. ' from ' .. before .. ' to ' .. sent)
  end
  redis.call('HSET', room_key, field, sent)
  if sent < total then done = false end
  if sent < min_sent then min_sent = sent end
end
redis.call('HSET', room_key, 'round', entry_round, 'sent_tokens', min_sent, 'committed_at', NOW)
if done then
  set_status(room_key, 4)
  finish(room_key, timeouts_key, release_key)
else
  set_status(room_key, 3)
  refresh_deadline(room_key, timeouts_key)
end
return {'ok', done and 4 or 3, done and release_now(room_key) or 0, unpack(endpoints(room_key))}
