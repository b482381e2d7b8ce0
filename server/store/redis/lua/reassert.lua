-- Re-create a STREAM hold that a change of primary lost (store.h: reassert).
-- KEYS: lock, hold, fence
-- ARGV: channel, key, token, owner, fencing, ttl_ms
-- Reply: as renew.lua: {1, ttl_ms}, or {0, holder_owner, holder_fencing}
-- when another token holds the key.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {1, tonumber(ARGV[6])}
end
if cur then
  local owner, fencing = b_holder(KEYS[2])
  return {0, owner, fencing}
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[6])
redis.call('HSET', KEYS[2], 'token', ARGV[3], 'owner', ARGV[4], 'fencing', ARGV[5])
-- The key's next grant must go above this hold's token even where the floor
-- (epoch.lua) did not move.
local f = tonumber(redis.call('GET', KEYS[3]) or '0')
if f < tonumber(ARGV[5]) then redis.call('SET', KEYS[3], ARGV[5]) end
return {1, tonumber(ARGV[6])}
