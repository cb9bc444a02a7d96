-- Reading a room's hash.
--@keys room
local function num(room_key, field)
  local value = redis.call('HGET', room_key, field)
  if value then return tonumber(value) end
  return nil
end

local function terminal(status) return status == STATUS.Failed or status == STATUS.Success end

-- A new room's record (Bootstrapping); `r`, a caller's copy of the room's fields, if
-- given, takes what was written.
local function create_room(room_key, room, now, r)
  local fields = {room = room, status = STATUS.Bootstrapping, status_name = 'Bootstrapping', created_at = now,
    updated_at = now, required_dst_info_num = 0, dst_count = 0, round = 0, queued_round = 0, sent_tokens = 0,
    epoch = 0}
  local flat = {}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
    if r then r[name] = value end
  end
  redis.call('HSET', room_key, unpack(flat))
end

-- The room's status, creating its record if none exists.
local function ensure_room(room_key, room, now)
  if redis.call('EXISTS', room_key) == 0 then create_room(room_key, room, now) end
  return num(room_key, 'status')
end

-- The fields a script needs, read in one HMGET: field -> value (false where absent). A
-- redis.call costs about as much as a short script's own work, so a hot script reads its
-- room once and passes the values on.
local function read_fields(key, fields)
  local values, out = redis.call('HMGET', key, unpack(fields)), {}
  for i, field in ipairs(fields) do out[field] = values[i] end
  return out
end

-- Fields of every destination in one HMGET: dsts[k + 1][name] for destination k.
local function read_dsts(room_key, count, names)
  local fields = {}
  for k = 0, count - 1 do
    for _, name in ipairs(names) do fields[#fields + 1] = 'dst' .. k .. '.' .. name end
  end
  if #fields == 0 then return {} end
  local values, dsts, i = redis.call('HMGET', room_key, unpack(fields)), {}, 0
  for k = 1, count do
    local d = {}
    for _, name in ipairs(names) do i = i + 1; d[name] = values[i] end
    dsts[k] = d
  end
  return dsts
end

-- One field of every destination, in order (endpoint, session, ...).
local function dst_values(room_key, name)
  local out = {}
  for k = 0, (num(room_key, 'dst_count') or 0) - 1 do
    out[#out + 1] = redis.call('HGET', room_key, 'dst' .. k .. '.' .. name)
  end
  return out
end

