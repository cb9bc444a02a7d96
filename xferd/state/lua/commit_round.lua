--[[ The holder commits a written round by compare-and-set.
  KEYS room rounds writing timeouts statuses stats ended pool_owned pool_free pool_leases record
  ARGV room round entry consumer epoch written sent_after...
  `written`: the bytes the round wrote; `sent_after`: each destination's sent_tokens after
  the round (dst0, dst1, ...). Acknowledges the entry, lets go of the round and, on Success,
  gives the source blocks back, all in this one step.
  Returns ok (committed: Transferring or Success, to be pushed) | ended (the room failed
  while it wrote: settled now, Failed due) | stale (nothing written: (consumer, epoch) does
  not hold the round) | refused (the commit breaks a rule; nothing written). A retried
  commit whose first reply was lost finds its own work done and gets the same answer.
]]
--@include util
--@include policy
--@include holder
--@include let_go
--@include status
--@include ended
--@include deadline
--@include settle
--@include reply
--@include metrics
local policy, refusal = read_policy(K.record)
if refusal then return refusal end
local now = now_ms()
local entry_round, entry, consumer, epoch = tonumber(A.round), A.entry, A.consumer, A.epoch
local held, why = holding(K.room, consumer, epoch)
if not held then
  if let_go_already(K.room, epoch) then
    if num(K.room, 'status') == STATUS.Failed then return room_reply(K, 'ended', '', false) end
    return room_reply(K, 'ok', 'committed', true)
  end
  return envelope('stale', nil, why, false)
end
local h = redis.call('HMGET', K.room, 'status', 'round', 'queued_round', 'total_tokens', 'dst_count', 'queued_at')
local status, round, queued = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if status == STATUS.Failed then  -- failed while we wrote: our write was the last one in flight
  let_go(K, A.room, entry)
  settle(K, A.room, policy, now)
  return room_reply(K, 'ended', '', false)
end
if round ~= entry_round - 1 or queued ~= entry_round then
  return refuse('holder of round ' .. entry_round .. ' commits, but the room is at round ' ..
    round .. ' with round ' .. queued .. ' queued')
end
local total, count = tonumber(h[4]), tonumber(h[5])
if #A.sent_after ~= count then
  return refuse('commit names ' .. #A.sent_after .. ' destinations, room has ' .. count)
end
local done, min_sent = true, total
for k = 0, count - 1 do
  local field = 'dst' .. k .. '.sent_tokens'
  local sent, before = tonumber(A.sent_after[k + 1]), num(K.room, field)
  if sent < before or sent > total then
    return refuse('commit would move ' .. field .. ' from ' .. before .. ' to ' .. sent)
  end
  if sent < total then done = false end
  if sent < min_sent then min_sent = sent end
end
for k = 0, count - 1 do redis.call('HSET', K.room, 'dst' .. k .. '.sent_tokens', A.sent_after[k + 1]) end
redis.call('HINCRBY', K.stats, 'rounds', 1)
redis.call('HINCRBY', K.stats, 'bytes_written', A.written)
observe(K.stats, 'round_seconds', (now - tonumber(h[6])) / 1000)  -- queued (init, resume) to committed
let_go(K, A.room, entry)
redis.call('HSET', K.room, 'round', entry_round, 'sent_tokens', min_sent, 'committed_at', now)
if done then
  set_status(K, A.room, status, STATUS.Success, now)
  record_end(K, A.room, STATUS.Success, '', '', consumer, now)  -- who must push Success (lostpush.py watches it do so)
  refresh_deadline(K, A.room, policy)
  settle(K, A.room, policy, now)
else
  set_status(K, A.room, status, STATUS.Transferring, now)
  refresh_deadline(K, A.room, policy)
end
return room_reply(K, 'ok', 'committed', true)
