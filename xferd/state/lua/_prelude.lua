-- Prepended to every xferd script (Redis scripts cannot import).
-- KEYS[1..12] are one room's keys, always in this order (Store._keys): room, rounds stream,
-- timeouts, writing, pool:free, pool:owned:<room>, pool:leases, dead, stats, ended, statuses,
-- the node record; a script that reads sessions takes their keys after these. Every key
-- carries the node's hash tag. ARGV[1] = room.
local unpack = unpack or table.unpack
local ROOM_KEY, STREAM, TIMEOUTS, WRITING, FREE, OWNED, LEASES, DEAD, STATS, ENDED, STATUSES, RECORD =
  unpack(KEYS, 1, 12)
local SESSIONS = 13  -- the first session key
local STATUSES_KEPT = 10000  -- keys.py: the statuses stream's bound
local GROUP = 'workers'  -- keys.GROUP
-- The node's policy is the node record's (settings.POLICY_FIELDS), whoever runs the script:
-- no client can give a room other deadlines than the operator set.
local POLICY = redis.call('HMGET', RECORD, 'bootstrap_timeout_ms', 'waiting_timeout_ms', 'transfer_timeout_ms',
  'round_timeout_ms', 'retention_ms', 'alloc_timeout_ms', 'session_retention_ms')
for i = 1, 7 do
  if not POLICY[i] then
    return redis.error_reply('the node record ' .. RECORD .. ' has no policy: is xferd serve running for the node?')
  end
  POLICY[i] = tonumber(POLICY[i])
end
local BOOTSTRAP_MS, WAITING_MS, TRANSFER_MS, ROUND_MS, RETENTION_MS, ALLOC_MS, SESSION_RETENTION_MS = unpack(POLICY)
local ROOM = ARGV[1]
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NAMES = {[0] = 'Failed', [1] = 'Bootstrapping', [2] = 'WaitingForInput',
               [3] = 'Transferring', [4] = 'Success'}

local function num(field)
  local value = redis.call('HGET', ROOM_KEY, field)
  if value then return tonumber(value) end
  return nil
end

local function terminal(status) return status == 0 or status == 4 end

local function ensure_room()
  if redis.call('EXISTS', ROOM_KEY) == 0 then
    redis.call('HSET', ROOM_KEY, 'room', ROOM, 'status', 1, 'status_name', 'Bootstrapping',
      'created_at', NOW, 'updated_at', NOW, 'required_dst_info_num', 0, 'dst_count', 0,
      'round', 0, 'queued_round', 0, 'sent_tokens', 0, 'epoch', 0)
  end
  return num('status')
end

-- Histograms kept in the stats hash (metrics.py reads them): one field per bucket, counted
-- where the event happens, so every process's observations add up exactly.
local BUCKETS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
local function observe(name, seconds)
  local le = '+Inf'
  for _, bound in ipairs(BUCKETS) do
    if seconds <= bound then le = tostring(bound); break end
  end
  redis.call('HINCRBY', STATS, 'hist:' .. name .. ':' .. le, 1)
  redis.call('HINCRBYFLOAT', STATS, 'hist:' .. name .. ':sum', seconds)
end

-- A room reached Success or Failed (once: terminal statuses never change): counted by
-- outcome and failure class, and logged in the capped `ended` stream (recent ends with
-- their reasons, for `xferd status`, the status page and the janitor's log line; `by`: the
-- worker whose commit ended it, which pushes the status, for lostpush.py).
local function ended(status, class, reason, by)
  local h = redis.call('HMGET', ROOM_KEY, 'created_at', 'round', 'total_tokens', 'sent_tokens', 'dst_count')
  local seconds = (NOW - tonumber(h[1])) / 1000
  redis.call('HINCRBY', STATS, 'rooms_ended:' .. NAMES[status] .. ':' .. class, 1)
  if status == 4 then observe('room_seconds', seconds) end
  redis.call('XADD', ENDED, 'MAXLEN', '~', 1000, '*', 'room', ROOM, 'status', NAMES[status],
    'class', class, 'reason', reason, 'rounds', h[2], 'total_tokens', h[3] or '', 'sent_tokens', h[4],
    'destinations', h[5], 'duration_ms', NOW - tonumber(h[1]), 'by', by or '')
end

-- Every status change goes through here, and into the capped `statuses` stream, which
-- encoders block on instead of polling their rooms.
local function set_status(status)
  redis.call('HSET', ROOM_KEY, 'status', status, 'status_name', NAMES[status], 'updated_at', NOW)
  redis.call('XADD', STATUSES, 'MAXLEN', '~', STATUSES_KEPT, '*', 'room', ROOM, 'status', status)
end

-- One field of every destination, in order (endpoint, session, ...).
local function dst_values(name)
  local out = {}
  for k = 0, (num('dst_count') or 0) - 1 do
    out[#out + 1] = redis.call('HGET', ROOM_KEY, 'dst' .. k .. '.' .. name)
  end
  return out
end

local function find_dst(session)
  for k = 0, (num('dst_count') or 0) - 1 do
    if redis.call('HGET', ROOM_KEY, 'dst' .. k .. '.session') == session then return k end
  end
  return nil
end

local function secs(ms) return tostring(ms / 1000) .. 's' end

local function split(text)
  local out = {}
  for item in string.gmatch(text, '[^,]+') do out[#out + 1] = item end
  return out
end

-- The one deadline a live room has, by phase; the janitor fails the room when it passes.
local function refresh_deadline()
  local h = redis.call('HMGET', ROOM_KEY, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round', 'created_at', 'ready_at', 'committed_at', 'queued_at')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local round, queued = tonumber(h[5]), tonumber(h[6])
  local deadline, reason
  if terminal(status) then
    redis.call('HDEL', ROOM_KEY, 'deadline', 'deadline_reason')
    redis.call('ZREM', TIMEOUTS, ROOM)
    return
  elseif queued > round then
    deadline = tonumber(h[10]) + ROUND_MS
    reason = 'round ' .. queued .. ' was queued but not completed within ' .. secs(ROUND_MS)
  elseif status == 3 then
    deadline = tonumber(h[9]) + TRANSFER_MS
    reason = 'transferring timeout: no resume within ' .. secs(TRANSFER_MS) .. ' of round ' .. round
  elseif required == 0 or count < required then
    deadline = tonumber(h[7]) + BOOTSTRAP_MS
    reason = 'bootstrap timeout: ' .. count .. ' of ' .. required ..
      ' destination sessions sent init within ' .. secs(BOOTSTRAP_MS)
  elseif not h[4] then
    deadline = tonumber(h[8]) + WAITING_MS
    reason = 'waiting timeout: no source published within ' .. secs(WAITING_MS) ..
      ' of every destination being ready'
  else
    return
  end
  redis.call('HSET', ROOM_KEY, 'deadline', deadline, 'deadline_reason', reason)
  redis.call('ZADD', TIMEOUTS, deadline, ROOM)
end

-- Put every block the room holds back on the free list; returns how many.
local function give_back_blocks()
  local blocks = redis.call('LRANGE', OWNED, 0, -1)
  for first = 1, #blocks, 1000 do  -- one ZADD per thousand blocks (a call costs more than a member)
    local members = {}
    for i = first, math.min(first + 999, #blocks) do
      members[#members + 1] = blocks[i]
      members[#members + 1] = blocks[i]
    end
    redis.call('ZADD', FREE, unpack(members))
  end
  redis.call('DEL', OWNED)
  redis.call('ZREM', LEASES, ROOM)
  return #blocks
end

-- Whether a write of this room may be in flight: a holder took its round and has not let
-- go (its write returned) nor been stopped by the fencer.
local function writing() return redis.call('HEXISTS', ROOM_KEY, 'holder') == 1 end

-- Whether (consumer, epoch) holds the round now; if not, also why, for the reply.
local function holding(consumer, epoch)
  local h = redis.call('HMGET', ROOM_KEY, 'holder', 'epoch')
  if h[1] == consumer and h[2] == epoch then return true end
  return false, 'epoch ' .. epoch .. ' of ' .. consumer .. ' no longer holds the round (epoch ' ..
    tostring(h[2]) .. ', holder ' .. tostring(h[1]) .. ')'
end

-- Whether the holder of `epoch` has let go already: a retried commit or fail whose first
-- reply was lost finds its own work done (a later take would have set a holder, and its
-- end a newer done_epoch).
local function let_go_already(epoch)
  local h = redis.call('HMGET', ROOM_KEY, 'holder', 'done_epoch')
  return not h[1] and h[2] == epoch
end

-- The holder's write is over: the round is no longer anyone's. Records the epoch that let
-- go, so that a retried commit or fail by the same holder finds its own work done.
local function let_go(entry)
  if entry and entry ~= '' then redis.call('XACK', STREAM, GROUP, entry) end
  redis.call('HSET', ROOM_KEY, 'done_epoch', redis.call('HGET', ROOM_KEY, 'epoch'))
  redis.call('HDEL', ROOM_KEY, 'holder', 'holder_entry', 'lease_until')
  redis.call('ZREM', WRITING, ROOM)
end

-- A terminal room once no write of it is in flight: its published source blocks go back
-- (an unpublished allocation waits: its encoder may still be writing into it) and the
-- record expires after the retention period. False while a write may still read the
-- blocks: the holder's end, or the fencer, settles the room then.
local function settle()
  if writing() then return false end
  if redis.call('HEXISTS', ROOM_KEY, 'total_tokens') == 1 then give_back_blocks() end
  if redis.call('HEXISTS', ROOM_KEY, 'drained_at') == 0 then
    redis.call('HSET', ROOM_KEY, 'drained_at', NOW)
  end
  redis.call('PEXPIRE', ROOM_KEY, RETENTION_MS)
  return true
end

-- Fail a live room (creating a failed record if none exists); false if already terminal.
-- Redis says Failed at once, so nothing new starts; the blocks wait for a write in flight.
-- Fail a live room: `class` names the kind of failure for metrics (bad_input, timeout,
-- aborted, write_error, not_replicated, dead_letter, internal).
local function fail(reason, class)
  if terminal(ensure_room()) then return false end
  set_status(0)
  redis.call('HSET', ROOM_KEY, 'failure', reason, 'failure_class', class, 'failed_at', NOW)
  ended(0, class, reason)
  redis.call('HDEL', ROOM_KEY, 'deadline', 'deadline_reason')
  redis.call('ZREM', TIMEOUTS, ROOM)
  settle()
  return true
end

-- What a transition did: {status, note, notify, endpoints...}. notify 1: the caller pushes
-- the status to the endpoints now. A round's end is pushed by its holder (notify given);
-- Failed is pushed by whoever sees it once no write of the room is in flight (the drain
-- acknowledgment, SPEC §3), and never while one is.
local function reply(note, notify)
  local status = num('status')
  if status == 0 then
    notify = not writing()
    note = redis.call('HGET', ROOM_KEY, 'failure') or note
  end
  if not notify then return {status, note, 0} end
  return {status, note, 1, unpack(dst_values('endpoint'))}
end

-- The work entry of one round (Store.round_from reads it); the room remembers it as the
-- entry that carries its queued round, so any other entry for that round is stale.
local function add_entry(round)
  local id = redis.call('XADD', STREAM, '*', 'room', ROOM, 'round', round,
    'sessions', table.concat(dst_values('session'), ','))
  redis.call('HSET', ROOM_KEY, 'entry', id, 'queued_at', NOW)
  return id
end

-- Queue the next round once the source is known and every destination is ready for it.
local function maybe_enqueue()
  local h = redis.call('HMGET', ROOM_KEY, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if terminal(status) or required == 0 or count < required or not h[4] then
    return false
  end
  local total, nxt = tonumber(h[4]), tonumber(h[5]) + 1
  if tonumber(h[6]) >= nxt then return false end
  for k = 0, count - 1 do
    local d = redis.call('HMGET', ROOM_KEY, 'dst' .. k .. '.sent_tokens', 'dst' .. k .. '.ready_round')
    if tonumber(d[1]) < total and tonumber(d[2]) < nxt then return false end
  end
  redis.call('HSET', ROOM_KEY, 'queued_round', nxt, 'takes', 0, 'handbacks', 0)
  add_entry(nxt)
  return true
end

-- Whether `entry` is pending on `consumer` (delivered to it, not acknowledged).
local function pending_on(entry, consumer)
  local p = redis.call('XPENDING', STREAM, GROUP, entry, entry, 1)
  return #p == 1 and p[1][2] == consumer
end
