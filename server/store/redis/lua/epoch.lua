-- The fencing floor of the Redis batond has just connected to.
-- KEYS: epoch (a hash: run_id, floor, moved_at)
-- ARGV: that Redis' run_id (INFO server)
-- Reply: {floor as a decimal string, ms since the floor last moved for a
--        change of Redis (-1: never; a brand-new record does not count)}
-- A Redis whose run_id differs from the one recorded (a promoted replica, a
-- restart, a restore from a snapshot) may hold fencing counters older than
-- tokens already given out; the floor then moves up to this Redis' clock in
-- microseconds, and every grant's token goes above it (b_next_fencing).
-- The same Redis seen again (a reconnect) keeps its floor. moved_at lets a
-- batond that starts just after such a change keep the rest of its
-- failover grace (conn_cmd.c on_epoch).
local now_ms, now_us = b_now()
local cur = redis.call('HGET', KEYS[1], 'run_id')
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
if cur ~= ARGV[1] then
  if now_us > floor then floor = now_us end
  redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'floor', b_int(floor))
  if cur then redis.call('HSET', KEYS[1], 'moved_at', b_int(now_ms)) end
end
local moved = tonumber(redis.call('HGET', KEYS[1], 'moved_at') or '-1')
local since = -1
if moved >= 0 then since = math.max(0, now_ms - moved) end
return {b_int(floor), since}
