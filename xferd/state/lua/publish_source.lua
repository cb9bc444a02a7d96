-- The encoder published the room's source: KEYS room keys; ARGV room, total_tokens,
-- src_indices. The blocks must be the room's own allocation (pool_alloc), checked here in
-- the same step that stops its lease, so a publish racing the lease's expiry either keeps
-- every block or names none.
local total, src = ARGV[2], ARGV[3]
local status = ensure_room()
local recorded = redis.call('HGET', ROOM_KEY, 'total_tokens')
if recorded then
  if recorded == total and redis.call('HGET', ROOM_KEY, 'src_indices') == src then
    return reply('duplicate publish ignored', false)
  end
  if not terminal(status) then fail('source published twice with different blocks or total', 'bad_input') end
  return reply('second publish with other blocks or total ignored', false)
end
local owned, problem = {}, nil
for _, block in ipairs(redis.call('LRANGE', OWNED, 0, -1)) do owned[block] = true end
if next(owned) == nil then
  problem = 'source blocks ' .. src .. ' are not allocated to this room (never allocated, or ' ..
    'not published within ' .. secs(ALLOC_MS) .. ' of allocating, so they went back)'
else
  local seen = {}
  for _, block in ipairs(split(src)) do
    if not owned[block] then
      problem = 'source block ' .. block .. ' is not allocated to this room'
      break
    elseif seen[block] then
      problem = 'source block ' .. block .. ' is named twice'
      break
    end
    seen[block] = true
  end
end
if problem or status == 0 then
  -- nothing of it is named in the record; the encoder is done with what it did allocate
  give_back_blocks()
  if problem and not terminal(status) then fail('bad publish: ' .. problem, 'bad_input') end
  return reply(problem or 'publish for a failed room: its blocks went back', false)
end
redis.call('ZREM', LEASES, ROOM)  -- published: the room's end returns the blocks
redis.call('HSET', ROOM_KEY, 'total_tokens', total, 'src_indices', src, 'source_at', NOW,
  'updated_at', NOW)
maybe_enqueue()
refresh_deadline()
return reply('ok', false)
