-- Who holds a key. Read-only.
-- KEYS: lock, hold, q
-- ARGV: channel (unused), key (unused)
-- Reply: {held, owner, fencing, ttl_ms, waiters}
local waiters = redis.call('ZCARD', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', 0, 0, waiters} end
local owner, fencing = b_holder(KEYS[2])
return {1, owner, fencing, redis.call('PTTL', KEYS[1]), waiters}
