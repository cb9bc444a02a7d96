-- The fencer stopped a worker (its process is provably gone): what it held goes back.
-- KEYS room keys; ARGV room, consumer, entry_id ('' when handing back by the room's
-- holder field alone), max_deliveries.
-- The stopped worker's entry is acknowledged and, if it held the round, the hold ends. A
-- live room's round is queued again under a new entry (at max_deliveries hand-backs it
-- goes to the dead-letter stream and the room fails); an ended room is settled (blocks
-- back, Failed due). Returns {verdict, reply...}: 'requeued', 'dead', 'ended', 'stale'
-- (nothing to redo), or {'none'} when the consumer held nothing here any more.
local consumer, entry, max_deliveries = ARGV[2], ARGV[3], tonumber(ARGV[4])
local acted = false
if entry ~= '' and pending_on(entry, consumer) then
  redis.call('XACK', STREAM, GROUP, entry)
  acted = true
end
if redis.call('EXISTS', ROOM_KEY) == 0 then
  redis.call('ZREM', WRITING, ROOM)
  return {acted and 'stale' or 'none'}
end
local h = redis.call('HMGET', ROOM_KEY, 'status', 'round', 'queued_round', 'holder',
  'holder_entry', 'entry', 'handbacks')
local carried = entry
if h[4] == consumer then
  carried = h[5]
  let_go(h[5])
  acted = true
end
if not acted then return {'none'} end
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if terminal(status) then
  settle()
  return {'ended', unpack(reply('', false))}
end
if queued <= round or writing() or h[6] ~= carried then
  return {'stale', unpack(reply('', false))}  -- committed, or another entry carries the round
end
local handbacks = redis.call('HINCRBY', ROOM_KEY, 'handbacks', 1)
if handbacks >= max_deliveries then
  redis.call('XADD', DEAD, 'MAXLEN', '~', 10000, '*', 'room', ROOM, 'round', queued,
    'entry', carried, 'deliveries', handbacks, 'last_holder', consumer)
  fail('round ' .. queued .. ' was delivered ' .. handbacks ..
    ' times without completing (limit ' .. max_deliveries .. ')', 'dead_letter')
  return {'dead', unpack(reply('', false))}
end
add_entry(queued)
return {'requeued', unpack(reply('', false))}
