-- Put every block the holder (a room, or 'req:<rid>') holds back on the free list;
-- returns how many.
--@keys pool_owned pool_free pool_leases
local function give_back_blocks(K, holder)
  local blocks = redis.call('LRANGE', K.pool_owned, 0, -1)
  for first = 1, #blocks, 1000 do  -- one ZADD per thousand blocks (a call costs more than a member)
    local members = {}
    for i = first, math.min(first + 999, #blocks) do
      members[#members + 1] = blocks[i]
      members[#members + 1] = blocks[i]
    end
    redis.call('ZADD', K.pool_free, unpack(members))
  end
  redis.call('DEL', K.pool_owned)
  redis.call('ZREM', K.pool_leases, holder)
  return #blocks
end
