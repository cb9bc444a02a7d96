--[[ Forget a consumer of the node's group whose process is gone, only if nothing is
  pending on it now.
  KEYS rounds
  ARGV consumer
  Checked and deleted in one step, because XGROUP DELCONSUMER drops the consumer's pending
  entries, and a read the dead process had left blocked in Redis can still be served to it
  between a separate check and the delete (its round would then be lost).
  Returns ok (deleted) | ignored (something is pending on it; nothing written).
]]
--@include envelope
local pending = redis.call('XPENDING', K.rounds, GROUP, '-', '+', 1, A.consumer)
if #pending > 0 then return envelope('ignored', nil, 'entries pending', false) end
redis.call('XGROUP', 'DELCONSUMER', K.rounds, GROUP, A.consumer)
return envelope('ok', nil, '', false)
