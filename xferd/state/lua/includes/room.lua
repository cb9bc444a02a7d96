-- Reading a room's hash.
--@keys room
local function num(room_key, field)
  local value = redis.call('HGET', room_key, field)
  if value then return tonumber(value) end
  return nil
end

local function terminal(status) return status == STATUS.Failed or status == STATUS.Success end

-- The room's status, creating its record (Bootstrapping) if none exists.
local function ensure_room(room_key, room, now)
  if redis.call('EXISTS', room_key) == 0 then
    redis.call('HSET', room_key, 'room', room, 'status', STATUS.Bootstrapping, 'status_name', 'Bootstrapping',
      'created_at', now, 'updated_at', now, 'required_dst_info_num', 0, 'dst_count', 0,
      'round', 0, 'queued_round', 0, 'sent_tokens', 0, 'epoch', 0)
  end
  return num(room_key, 'status')
end

-- One field of every destination, in order (endpoint, session, ...).
local function dst_values(room_key, name)
  local out = {}
  for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
    out[#out + 1] = redis.call('HGET', room_key, 'dst' .. k .. '.' .. name)
  end
  return out
end

local function find_dst(room_key, session)
  for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
    if redis.call('HGET', room_key, 'dst' .. k .. '.session') == session then return k end
  end
  return nil
end
