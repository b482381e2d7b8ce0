-- Push queue entries' liveness deadlines to now + liveness_ms, only where an
-- entry still exists (ZADD XX never re-creates a purged entry).
-- KEYS: qt (one target's liveness zset)
-- ARGV: channel (unused), liveness_ms, token... (at most 200 per call)
-- Reply: 0
local now = b_now()
local deadline = b_int(now + tonumber(ARGV[2]))
local args = {}
for i = 3, #ARGV do
  args[#args + 1] = deadline
  args[#args + 1] = ARGV[i]
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
return 0
