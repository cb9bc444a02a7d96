-- An encoder renews the leases of the allocations it still writes into: KEYS[1]
-- pool:leases; ARGV lease_ms, then the holders (rooms, or 'req:<rid>').
-- Returns the holders whose lease is gone (published, released, or run out: their blocks
-- may belong to another room now, so the encoder must not write into them).
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i]) == 0
      and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
