-- An encoder scheduler allocates blocks for a request before it knows the request's room:
-- KEYS room keys of the allocation 'req:<rid>' (pool:owned:req:<rid>, pool:free,
-- pool:leases), then KEYS[13] the request's hash (request:<rid>); ARGV
-- 'req:<rid>', count, attempt, lease_ms, agree (1: remember a refusal, for TP ranks).
-- Returns {1, blocks...}, or {0, free} when the pool is short.
-- Every TP rank of one encoder calls it for the same request, numbering its own attempts
-- 1, 2, ...: attempt n gets the same answer on every rank (the first rank to ask decides,
-- and the request's hash remembers), so the ranks' schedulers never diverge, and there is
-- one allocation per request, never one per rank.
local REQUEST = KEYS[13]
local count, attempt, lease_ms, agree = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local h = redis.call('HMGET', REQUEST, 'blocks', 'attempt', 'refused', 'count')
if h[1] then
  if tonumber(h[4]) ~= count then
    return redis.error_reply('request ' .. ROOM .. ' already holds ' .. h[4] .. ' blocks, not ' .. count)
  end
  if attempt < tonumber(h[2]) then return {0, redis.call('ZCARD', FREE)} end
  return {1, unpack(split(h[1]))}
end
if attempt <= (tonumber(h[3]) or 0) then return {0, redis.call('ZCARD', FREE)} end
local free = redis.call('ZCARD', FREE)
if free < count or count == 0 then
  if agree then
    redis.call('HSET', REQUEST, 'refused', attempt)
    redis.call('PEXPIRE', REQUEST, RETENTION_MS)
  end
  return {0, free}
end
local popped = redis.call('ZPOPMIN', FREE, count)
local blocks = {}
for i = 1, #popped, 2 do blocks[#blocks + 1] = popped[i] end
redis.call('RPUSH', OWNED, unpack(blocks))
redis.call('ZADD', LEASES, NOW + lease_ms, ROOM)
redis.call('HSET', REQUEST, 'blocks', table.concat(blocks, ','), 'attempt', attempt, 'count', count,
  'allocated_at', NOW)
redis.call('PEXPIRE', REQUEST, RETENTION_MS)
return {1, unpack(blocks)}
