-- The encoder published the room's source: KEYS room, stream, timeouts, release;
-- ARGV policy, room, total_tokens, src_indices, expires_at (of the block allocation; '' none).
local room_key, stream_key, timeouts_key, release_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status = ensure_room(room_key)
if ARGV[5] ~= '' and NOW >= tonumber(ARGV[5]) and not redis.call('HGET', room_key, 'total_tokens') then
  -- the janitor may have returned the blocks already: never name them in the record
  fail(room_key, timeouts_key, release_key, 'source published after its block allocation expired ('
    .. secs(ALLOC_MS) .. ' after allocating)')
  return failed_reply(room_key)
end
if status == 0 then
  -- the room already failed (abort, timeout): its blocks go straight back
  redis.call('HSET', room_key, 'total_tokens', ARGV[3], 'src_indices', ARGV[4], 'source_at', NOW)
  redis.call('ZADD', release_key, NOW, ROOM)
  return failed_reply(room_key)
end
local total = redis.call('HGET', room_key, 'total_tokens')
if total then
  if total == ARGV[3] and redis.call('HGET', room_key, 'src_indices') == ARGV[4] then
    return {status, 'duplicate publish ignored'}
  end
  fail(room_key, timeouts_key, release_key, 'source published twice with different blocks or total')
  return failed_reply(room_key)
end
redis.call('HSET', room_key, 'total_tokens', ARGV[3], 'src_indices', ARGV[4], 'source_at', NOW,
  'updated_at', NOW)
maybe_enqueue(room_key, stream_key)
refresh_deadline(room_key, timeouts_key)
return {num(room_key, 'status'), 'ok'}
