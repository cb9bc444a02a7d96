--[[ The fencer stopped a worker (its process is provably gone): what it held goes back.
  KEYS room rounds writing dead timeouts statuses stats ended pool_owned pool_free pool_leases record
  ARGV room consumer entry max_deliveries
  `entry`: '' when handing back by the room's holder field alone. The stopped worker's entry
  is acknowledged and, if it held the round, the hold ends. A live room's round is queued
  again under a new entry (at max_deliveries hand-backs it goes to the dead-letter stream
  and the room fails); an ended room is settled (blocks back, Failed due).
  Returns requeued | dead | ended | stale (nothing to redo: committed, or another entry
  carries the round) | none (the consumer held nothing here any more; nothing written).
  Fencing: it acts for `consumer` only, by name. A consumer name is a process identity (host,
  boot, pid, start time) and the fencer calls this only once that process is provably
  stopped, so whatever that name holds, under any epoch, is stale.
]]
--@include util
--@include policy
--@include fail
--@include let_go
--@include queue
--@include reply
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local consumer, entry, max_deliveries = A.consumer, A.entry, tonumber(A.max_deliveries)
local acted = false
if entry ~= '' and pending_on(K, entry, consumer) then
  redis.call('XACK', K.rounds, GROUP, entry)
  acted = true
end
if redis.call('EXISTS', K.room) == 0 then
  redis.call('ZREM', K.writing, A.room)
  return envelope(acted and 'stale' or 'none', nil, 'room record is gone', false)
end
local h = redis.call('HMGET', K.room, 'status', 'round', 'queued_round', 'holder',
  'holder_entry', 'entry', 'handbacks')
local carried = entry
if h[4] == consumer then
  carried = h[5]
  let_go(K, A.room, h[5])
  acted = true
end
if not acted then return envelope('none', nil, '', false) end
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) then
  settle(K, A.room, policy, now)
  return room_reply(K, 'ended', '', false)
end
if queued <= round or writing(K.room) or h[6] ~= carried then
  return room_reply(K, 'stale', '', false)  -- committed, or another entry carries the round
end
local handbacks = redis.call('HINCRBY', K.room, 'handbacks', 1)
if handbacks >= max_deliveries then
  redis.call('XADD', K.dead, 'MAXLEN', '~', KEPT.dead, '*', 'room', A.room, 'round', queued,
    'entry', carried, 'deliveries', handbacks, 'last_holder', consumer)
  fail(K, A.room, policy, now, 'round ' .. queued .. ' was delivered ' .. handbacks ..
    ' times without completing (limit ' .. max_deliveries .. ')', 'dead_letter')
  return room_reply(K, 'dead', '', false)
end
add_entry(K, A.room, queued, now)
return room_reply(K, 'requeued', '', false)
