-- The one reply envelope (scripts.Reply): {verdict, status (-1: no record), note, notify,
-- {endpoints}, {data}}; the verdict one of records.Verdict (Python refuses any other).
local function envelope(verdict, status, note, notify, endpoints, data)
  return {verdict, status or -1, note or '', notify and 1 or 0, endpoints or {}, data or {}}
end

-- A call that breaks the script's rules, answered before anything is written.
local function refuse(note) return envelope('refused', nil, note, false) end
