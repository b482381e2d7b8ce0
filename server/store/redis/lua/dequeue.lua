-- Leave a queue (a key's or a pool's).
-- KEYS: q, qt[, qc (a pool: its waiters' device counts)]
-- ARGV: channel, key or pool name, event type ('WAKE' or 'WAKE_POOL'), token
-- Reply: 1 if the token was queued, else 0.
-- When the token was the head and others remain, the new head may now be
-- able to take the lock: publish WAKE / WAKE_POOL for it.
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
local removed = redis.call('ZREM', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[4])
-- A pool waiter's device count (acquire.lua's qc).
if ARGV[3] == 'WAKE_POOL' then redis.call('HDEL', KEYS[3], ARGV[4]) end
if removed == 1 and head == ARGV[4] and redis.call('EXISTS', KEYS[1]) == 1 then
  b_publish(ARGV[1], ARGV[3], 0, b_now(), ARGV[2], '')
end
return removed
