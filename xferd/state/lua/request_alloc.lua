--[[ An encoder scheduler allocates blocks for a request before it knows the request's room.
  KEYS request pool_owned pool_free pool_leases record
  ARGV holder count attempt lease_ms agree
  `holder` is 'req:<rid>', `pool_owned` its list; `agree` '1': remember a refusal (TP ranks).
  Every TP rank of one encoder calls it for the same request, numbering its own attempts
  1, 2, ...: attempt n gets the same answer on every rank (the first rank to ask decides,
  and the request's hash remembers), so the ranks' schedulers never diverge, and there is
  one allocation per request, never one per rank.
  Returns ok, data {blocks...} | short, data {free} | refused (the request holds another
  count of blocks; nothing written).
]]
--@include util
--@include policy
--@include envelope
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local count, attempt, lease_ms, agree = tonumber(A.count), tonumber(A.attempt), tonumber(A.lease_ms), A.agree == '1'
local function short(free) return envelope('short', nil, '', false, {}, {free}) end
local h = redis.call('HMGET', K.request, 'blocks', 'attempt', 'refused', 'count')
if h[1] then
  if tonumber(h[4]) ~= count then
    return refuse('request ' .. A.holder .. ' already holds ' .. h[4] .. ' blocks, not ' .. count)
  end
  if attempt < tonumber(h[2]) then return short(redis.call('ZCARD', K.pool_free)) end
  return envelope('ok', nil, '', false, {}, split(h[1]))
end
if attempt <= (tonumber(h[3]) or 0) then return short(redis.call('ZCARD', K.pool_free)) end
local free = redis.call('ZCARD', K.pool_free)
if free < count or count == 0 then
  if agree then
    redis.call('HSET', K.request, 'refused', attempt)
    redis.call('PEXPIRE', K.request, policy.retention)
  end
  return short(free)
end
local now = now_ms()
local popped = redis.call('ZPOPMIN', K.pool_free, count)
local blocks = {}
for i = 1, #popped, 2 do blocks[#blocks + 1] = popped[i] end
redis.call('RPUSH', K.pool_owned, unpack(blocks))
redis.call('ZADD', K.pool_leases, now + lease_ms, A.holder)
redis.call('HSET', K.request, 'blocks', table.concat(blocks, ','), 'attempt', attempt, 'count', count,
  'allocated_at', now)
redis.call('PEXPIRE', K.request, policy.retention)
return envelope('ok', nil, '', false, {}, blocks)
