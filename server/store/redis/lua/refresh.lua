-- Push queue entries' liveness deadlines to now + liveness_ms, only where an
-- entry still exists (ZADD XX never re-creates a purged entry), and name the
-- tokens that have none: purged as dead while their batond stalled, or lost
-- with Redis' data. Their batond then queues them again (store.h on_missing).
-- KEYS: qt (one target's liveness zset)
-- ARGV: channel (unused), liveness_ms, token... (at most 200 per call)
-- Reply: the tokens without an entry
local now = b_now()
local deadline = b_int(now + tonumber(ARGV[2]))
-- (ZSCORE per token: ZMSCORE would need Redis 6.2.)
local args, missing = {}, {}
for i = 3, #ARGV do
  local t = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], t) then
    args[#args + 1] = deadline
    args[#args + 1] = t
  else
    missing[#missing + 1] = t
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
return missing
