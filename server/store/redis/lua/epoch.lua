-- The fencing floor of the Redis batond has just connected to.
-- KEYS: epoch (a hash: run_id, floor)
-- ARGV: that Redis' run_id (INFO server)
-- Reply: the floor, as a decimal string.
-- A Redis whose run_id differs from the one recorded (a promoted replica, a
-- restart, a restore from a snapshot) may hold fencing counters older than
-- tokens already given out; the floor then moves up to this Redis' clock in
-- microseconds, and every grant's token goes above it (b_next_fencing).
-- The same Redis seen again (a reconnect) keeps its floor.
local _, now_us = b_now()
local cur = redis.call('HGET', KEYS[1], 'run_id')
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
if cur ~= ARGV[1] then
  if now_us > floor then floor = now_us end
  redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'floor', b_int(floor))
end
return b_int(floor)
