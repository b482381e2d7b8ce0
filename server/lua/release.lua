-- Release a lock, only by its holder.
-- KEYS: lock, hold
-- ARGV: channel, key, token
-- Reply: {1, owner, fencing} released, or {0, holder_owner, holder_fencing}
-- when the token does not hold the key ('' and 0 when nobody does).
local now = b_now()
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[3] then
  local owner, fencing = b_holder(KEYS[2])
  redis.call('DEL', KEYS[1], KEYS[2])
  b_publish(ARGV[1], 'RELEASED', fencing, now, ARGV[2], owner)
  return {1, owner, fencing}
end
if not cur then
  b_reap(KEYS[1], KEYS[2], ARGV[1], ARGV[2], now)
  return {0, '', 0}
end
local owner, fencing = b_holder(KEYS[2])
return {0, owner, fencing}
