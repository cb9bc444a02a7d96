-- Prepended to every xferd script (Redis scripts cannot import).
-- ARGV[1] = policy "bootstrap_ms,waiting_ms,transfer_ms,round_ms,retention_ms,alloc_ms",
-- ARGV[2] = room.
local unpack = unpack or table.unpack
local POLICY = {}
for value in string.gmatch(ARGV[1], '[^,]+') do POLICY[#POLICY + 1] = tonumber(value) end
local BOOTSTRAP_MS, WAITING_MS, TRANSFER_MS, ROUND_MS, RETENTION_MS, ALLOC_MS = unpack(POLICY)
local ROOM = ARGV[2]
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NAMES = {[0] = 'Failed', [1] = 'Bootstrapping', [2] = 'WaitingForInput',
               [3] = 'Transferring', [4] = 'Success'}

local function num(key, field)
  local value = redis.call('HGET', key, field)
  if value then return tonumber(value) end
  return nil
end

local function ensure_room(room_key)
  if redis.call('EXISTS', room_key) == 0 then
    redis.call('HSET', room_key, 'room', ROOM, 'status', 1, 'status_name', 'Bootstrapping',
      'created_at', NOW, 'updated_at', NOW, 'required_dst_info_num', 0, 'dst_count', 0,
      'round', 0, 'queued_round', 0, 'sent_tokens', 0)
  end
  return num(room_key, 'status')
end

local function set_status(room_key, status)
  redis.call('HSET', room_key, 'status', status, 'status_name', NAMES[status], 'updated_at', NOW)
end

local function endpoints(room_key)
  local out = {}
  for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
    out[#out + 1] = redis.call('HGET', room_key, 'dst' .. k .. '.endpoint')
  end
  return out
end

local function find_dst(room_key, session)
  for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
    if redis.call('HGET', room_key, 'dst' .. k .. '.session') == session then return k end
  end
  return nil
end

local function secs(ms) return tostring(ms / 1000) .. 's' end

-- The one deadline a live room has, by phase; the janitor fails the room when it passes.
local function refresh_deadline(room_key, timeouts_key)
  local h = redis.call('HMGET', room_key, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round', 'created_at', 'ready_at', 'committed_at', 'queued_at')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  local round, queued = tonumber(h[5]), tonumber(h[6])
  local deadline, reason
  if status == 0 or status == 4 then
    redis.call('HDEL', room_key, 'deadline', 'deadline_reason')
    redis.call('ZREM', timeouts_key, ROOM)
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
  redis.call('HSET', room_key, 'deadline', deadline, 'deadline_reason', reason)
  redis.call('ZADD', timeouts_key, deadline, ROOM)
end

-- When an ended room's source blocks may go back: once no write from them can be in flight
-- (the write lease, if one is held). nil when no source was published, so nothing is held.
local function release_at(room_key)
  if redis.call('HEXISTS', room_key, 'total_tokens') == 0 then return nil end
  return math.max(NOW, num(room_key, 'write_until') or 0)
end

-- 1 when the caller may return the blocks itself right away, else 0 (the janitor will).
local function release_now(room_key)
  return release_at(room_key) == NOW and 1 or 0
end

-- Terminal bookkeeping: no deadline, source blocks queued for release, record kept for the
-- retention period.
local function finish(room_key, timeouts_key, release_key)
  redis.call('HDEL', room_key, 'deadline', 'deadline_reason')
  redis.call('ZREM', timeouts_key, ROOM)
  local at = release_at(room_key)
  if at then redis.call('ZADD', release_key, at, ROOM) end
  redis.call('PEXPIRE', room_key, RETENTION_MS)
end

-- Fail a live room (creating a failed record if none exists); false if already terminal.
local function fail(room_key, timeouts_key, release_key, reason)
  local status = ensure_room(room_key)
  if status == 0 or status == 4 then return false end
  set_status(room_key, 0)
  redis.call('HSET', room_key, 'failure', reason, 'failed_at', NOW)
  finish(room_key, timeouts_key, release_key)
  return true
end

-- {0, reason, release_now, endpoints...}
local function failed_reply(room_key)
  return {0, redis.call('HGET', room_key, 'failure') or 'failed', release_now(room_key),
    unpack(endpoints(room_key))}
end

-- The work entry of one round (Store.round_from reads it), stamped in the room as queued now.
local function add_entry(room_key, stream_key, round, sessions)
  redis.call('XADD', stream_key, '*', 'room', ROOM, 'round', round,
    'sessions', table.concat(sessions, ','))
  redis.call('HSET', room_key, 'queued_at', NOW)
end

-- Put every block the room holds back on the free list; returns how many.
local function give_back_blocks(free_key, owned_key)
  local blocks = redis.call('LRANGE', owned_key, 0, -1)
  for _, block in ipairs(blocks) do redis.call('ZADD', free_key, tonumber(block), block) end
  redis.call('DEL', owned_key)
  return #blocks
end

-- Queue the next round once the source is known and every destination is ready for it.
local function maybe_enqueue(room_key, stream_key)
  local h = redis.call('HMGET', room_key, 'status', 'required_dst_info_num', 'dst_count',
    'total_tokens', 'round', 'queued_round')
  local status, required, count = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if status == 0 or status == 4 or required == 0 or count < required or not h[4] then
    return false
  end
  local total, nxt = tonumber(h[4]), tonumber(h[5]) + 1
  if tonumber(h[6]) >= nxt then return false end
  local sessions = {}
  for k = 0, count - 1 do
    local d = redis.call('HMGET', room_key, 'dst' .. k .. '.sent_tokens',
      'dst' .. k .. '.ready_round', 'dst' .. k .. '.session')
    if tonumber(d[1]) < total and tonumber(d[2]) < nxt then return false end
    sessions[#sessions + 1] = d[3]
  end
  add_entry(room_key, stream_key, nxt, sessions)
  redis.call('HSET', room_key, 'queued_round', nxt)
  return true
end
