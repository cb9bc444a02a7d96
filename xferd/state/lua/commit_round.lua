-- The holder commits a written round by compare-and-set: KEYS room keys; ARGV room,
-- round, entry_id, consumer, epoch, the bytes the round wrote, then each destination's
-- sent_tokens after the round (dst0, dst1, ...). Acknowledges the entry, lets go of the round and, on Success, gives
-- the source blocks back, all in this one step. A room that failed meanwhile is settled
-- instead (its blocks back, Failed due). Every rule is checked before anything is written.
-- Returns {'ok' | 'ended', reply...} (see the prelude's reply), or {'stale', why} with
-- nothing changed when (consumer, epoch) does not hold the round. A retried commit whose
-- first reply was lost finds its own work done and gets the same answer.
local entry_round, entry, consumer, epoch = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local held, why = holding(consumer, epoch)
if not held then
  if let_go_already(epoch) then
    if num('status') == 0 then return {'ended', unpack(reply('', false))} end
    return {'ok', unpack(reply('committed', true))}
  end
  return {'stale', why}
end
local h = redis.call('HMGET', ROOM_KEY, 'status', 'round', 'queued_round', 'total_tokens', 'dst_count')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if status == 0 then  -- failed while we wrote: our write was the last one in flight
  let_go(entry)
  settle()
  return {'ended', unpack(reply('', false))}
end
if round ~= entry_round - 1 or queued ~= entry_round then
  return redis.error_reply('holder of round ' .. entry_round .. ' commits, but the room is at round ' ..
    round .. ' with round ' .. queued .. ' queued')
end
local total, count = tonumber(h[4]), tonumber(h[5])
if #ARGV - 6 ~= count then
  return redis.error_reply('commit names ' .. (#ARGV - 6) .. ' destinations, room has ' .. count)
end
local done, min_sent = true, total
for k = 0, count - 1 do
  local field = 'dst' .. k .. '.sent_tokens'
  local sent, before = tonumber(ARGV[7 + k]), num(field)
  if sent < before or sent > total then
    return redis.error_reply('commit would move ' .. field .. ' from ' .. before .. ' to ' .. sent)
  end
  if sent < total then done = false end
  if sent < min_sent then min_sent = sent end
end
for k = 0, count - 1 do redis.call('HSET', ROOM_KEY, 'dst' .. k .. '.sent_tokens', ARGV[7 + k]) end
redis.call('HINCRBY', STATS, 'rounds', 1)
redis.call('HINCRBY', STATS, 'bytes_written', ARGV[6])
observe('round_seconds', (NOW - num('queued_at')) / 1000)  -- queued (init, resume) to committed
let_go(entry)
redis.call('HSET', ROOM_KEY, 'round', entry_round, 'sent_tokens', min_sent, 'committed_at', NOW)
if done then
  set_status(4)
  ended(4, '', '', consumer)  -- who must push Success (lostpush.py watches it do so)
  refresh_deadline()
  settle()
else
  set_status(3)
  refresh_deadline()
end
return {'ok', unpack(reply('committed', true))}
