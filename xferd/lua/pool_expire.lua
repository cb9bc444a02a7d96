-- An allocation lease ran out: KEYS room keys; ARGV policy, room. A lease still in
-- pool:leases was never published (publish_source removes it in the step that names the
-- blocks), so the blocks go back. Returns the number of blocks released.
local expires_at = redis.call('ZSCORE', LEASES, ROOM)
if not expires_at or tonumber(expires_at) > NOW then return 0 end
return give_back_blocks()
