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
-- the room read once: the hold, the round, and what the deadline and the reply need
local r = read_fields(K.room, {'holder', 'epoch', 'done_epoch', 'status', 'round', 'queued_round',
  'total_tokens', 'dst_count', 'queued_at', 'required_dst_info_num'})
local held, why = held_by(r.holder, r.epoch, consumer, epoch)
if not held then
  if let_go_already(r.holder, r.done_epoch, epoch) then
    if tonumber(r.status) == STATUS.Failed then return room_reply(K, 'ended', '', false) end
    return room_reply(K, 'ok', 'committed', true)
  end
  return envelope('stale', nil, why, false)
end
local status, round, queued = tonumber(r.status), tonumber(r.round), tonumber(r.queued_round)
if status == STATUS.Failed then  -- failed while we wrote: our write was the last one in flight
  let_go(K, A.room, entry)
  settle(K, A.room, policy, now)
  return room_reply(K, 'ended', '', false)
end
if round ~= entry_round - 1 or queued ~= entry_round then
  return refuse('holder of round ' .. entry_round .. ' commits, but the room is at round ' ..
    round .. ' with round ' .. queued .. ' queued')
end
local total, count = tonumber(r.total_tokens), tonumber(r.dst_count)
if #A.sent_after ~= count then
  return refuse('commit names ' .. #A.sent_after .. ' destinations, room has ' .. count)
end
local dsts = read_dsts(K.room, count, {'sent_tokens', 'endpoint'})
local done, min_sent, fields, endpoints = true, total, {}, {}
for k = 0, count - 1 do
  local field = 'dst' .. k .. '.sent_tokens'
  local sent, before = tonumber(A.sent_after[k + 1]), tonumber(dsts[k + 1].sent_tokens)
  if sent < before or sent > total then
    return refuse('commit would move ' .. field .. ' from ' .. before .. ' to ' .. sent)
  end
  if sent < total then done = false end
  if sent < min_sent then min_sent = sent end
  fields[#fields + 1] = field
  fields[#fields + 1] = sent
  endpoints[k + 1] = dsts[k + 1].endpoint
end
redis.call('HINCRBY', K.stats, 'rounds', 1)
redis.call('HINCRBY', K.stats, 'bytes_written', A.written)
observe(K.stats, 'round_seconds', now - tonumber(r.queued_at))  -- queued (init, resume) to committed
let_go(K, A.room, entry)
redis.call('HSET', K.room, 'round', entry_round, 'sent_tokens', min_sent, 'committed_at', now,
  'updated_at', now, unpack(fields))
local after = done and STATUS.Success or STATUS.Transferring
set_status(K, A.room, status, after, now)
r.status, r.round, r.committed_at = after, entry_round, now
if done then
  record_end(K, A.room, STATUS.Success, '', '', consumer, now)  -- who must push Success (lostpush.py watches it do so)
  refresh_deadline(K, A.room, policy, r)
  settle(K, A.room, policy, now)
else
  refresh_deadline(K, A.room, policy, r)
end
return envelope('ok', after, 'committed', true, endpoints)
