-- Extend a lock's TTL, only for its holder.
-- KEYS: lock, hold
-- ARGV: channel, key, token, ttl_ms
-- Reply: {1, ttl_ms} renewed, or {0, holder_owner, holder_fencing} when the
-- token does not hold the key ('' and 0 when nobody does).
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1, tonumber(ARGV[4])}
end
if not cur then
  b_reap_hold(KEYS[2], ARGV[1], ARGV[2], b_now())
  return {0, '', 0}
end
local owner, fencing = b_holder(KEYS[2])
return {0, owner, fencing}
