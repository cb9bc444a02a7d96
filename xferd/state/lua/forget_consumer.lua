-- Forget a consumer of the node's group whose process is gone, only if nothing is pending on
-- it now: KEYS stream; ARGV group, consumer. Checked and deleted in one step, because
-- XGROUP DELCONSUMER drops the consumer's pending entries, and a read the dead process had
-- left blocked in Redis can still be served to it between a separate check and the delete
-- (its round would then be lost). Returns 1 when deleted, 0 when something is pending.
-- (No prelude: not a room script.)
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
