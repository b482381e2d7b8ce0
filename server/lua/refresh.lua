-- Push a queue entry's liveness deadline to now + liveness_ms, only if the
-- entry still exists (ZADD XX never re-creates a purged entry).
-- KEYS: qt
-- ARGV: channel (unused), token, liveness_ms
-- Reply: 0
local now = b_now()
redis.call('ZADD', KEYS[1], 'XX', b_int(now + tonumber(ARGV[3])), ARGV[2])
return 0
