--[[ The encoder published the room's source: its total tokens and source blocks.
  KEYS room rounds timeouts statuses stats ended pool_owned pool_free pool_leases record
  ARGV room total_tokens src_indices
  The blocks must be the room's own allocation (pool_alloc), checked here in the same step
  that stops its lease, so a publish racing the lease's expiry either keeps every block or
  names none.
  Returns ok | ignored (a duplicate, or a second publish for an ended room) | failed (a bad
  publish: the room failed, and the blocks it did allocate went back). A rejection writes
  only that failure and the return of the blocks; a publish for a room that failed
  meanwhile returns the blocks (the encoder is done with them).
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
local total, src = A.total_tokens, A.src_indices
local r = read_fields(K.room, DEADLINE_FIELDS)
local status = tonumber(r.status) or STATUS.Bootstrapping
local recorded = r.total_tokens
if recorded then
  if recorded == total and redis.call('HGET', K.room, 'src_indices') == src then
    return room_reply(K, 'ignored', 'duplicate publish ignored', false)
  end
  if terminal(status) then
    return room_reply(K, 'ignored', 'second publish with other blocks or total ignored', false)
  end
  return reject(K, A.room, policy, now, 'source published twice with different blocks or total')
end
local owned, problem = {}, nil
for _, block in ipairs(redis.call('LRANGE', K.pool_owned, 0, -1)) do owned[block] = true end
if next(owned) == nil then
  problem = 'source blocks ' .. src .. ' are not allocated to this room (never allocated, or ' ..
    'not published within ' .. secs(policy.alloc_timeout) .. ' of allocating, so they went back)'
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
if problem or status == STATUS.Failed then
  -- nothing of it is named in the record; the encoder is done with what it did allocate
  give_back_blocks(K, A.room)
  if problem and not terminal(status) then
    return reject(K, A.room, policy, now, 'bad publish: ' .. problem)
  end
  return room_reply(K, 'ignored', problem or 'publish for a failed room: its blocks went back', false)
end
if not r.status then create_room(K.room, A.room, now, r) end
redis.call('ZREM', K.pool_leases, A.room)  -- published: the room's end returns the blocks
redis.call('HSET', K.room, 'total_tokens', total, 'src_indices', src, 'source_at', now, 'updated_at', now)
r.total_tokens = total
maybe_enqueue(K, A.room, now, r)
refresh_deadline(K, A.room, policy, r)
return envelope('ok', status, 'ok', false)
