-- The node's policy, from the node record (written by `xferd serve`), in ms by name: no
-- client can give a room other deadlines than the operator set. Without one, the script's
-- refusal, before anything is written.
--@include envelope
--@keys record
local function read_policy(record_key)
  local names = {}
  for i, name in ipairs(POLICY_FIELDS) do names[i] = name .. '_ms' end
  local values, policy = redis.call('HMGET', record_key, unpack(names)), {}
  for i, name in ipairs(POLICY_FIELDS) do
    if not values[i] then
      return nil, refuse('the node record ' .. record_key .. ' has no policy: is xferd serve running for the node?')
    end
    policy[name] = tonumber(values[i])
  end
  return policy
end
