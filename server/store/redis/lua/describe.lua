-- Who holds a key. Read-only.
-- KEYS: lock, hold, q
-- ARGV: channel (unused), key
-- Reply: {held, owner, fencing, ttl_ms, waiters}
local waiters = redis.call('ZCARD', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 0, 0, waiters} end
-- A shared device: its live share with the highest fencing (others: Watch).
if redis.call('GET', KEYS[1]) == B_SHARED then
  local owner, fencing = '', 0
  for _, t in ipairs(redis.call('SMEMBERS', b_share_rec(KEYS[1], ARGV[2], 'shares'))) do
    local o, f = b_holder(b_share_rec(KEYS[1], ARGV[2], 'sh', t))
    if f > fencing and b_has_share(KEYS[1], ARGV[2], t) then owner, fencing = o, f end
  end
  return {1, owner, fencing, redis.call('PTTL', KEYS[1]), waiters}
end
local owner, fencing = b_holder(KEYS[2])
return {1, owner, fencing, redis.call('PTTL', KEYS[1]), waiters}
