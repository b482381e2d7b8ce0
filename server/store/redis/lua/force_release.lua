-- Administrative release of the hold with a given fencing token.
-- KEYS: lock, hold
-- ARGV: channel, key, fencing (decimal)
-- Reply: {1, owner, fencing} released, or {0, holder_owner, holder_fencing}
-- when the key is not held with that fencing ('' and 0 when not held).
local now = b_now()
if redis.call('EXISTS', KEYS[1]) == 0 then
  b_reap_hold(KEYS[2], ARGV[1], ARGV[2], now)
  return {0, '', 0}
end
-- A shared device: the share with that fencing (and its grant's other devices).
if redis.call('GET', KEYS[1]) == B_SHARED then
  for _, t in ipairs(redis.call('SMEMBERS', b_share_rec(KEYS[1], ARGV[2], 'shares'))) do
    local sh = b_share_rec(KEYS[1], ARGV[2], 'sh', t)
    local owner, fencing = b_holder(sh)
    if b_int(fencing) == ARGV[3] and b_has_share(KEYS[1], ARGV[2], t) then
      b_grant_peers(KEYS[1], sh, ARGV[2], function(lock, hold, k)
        b_end_share(lock, k, t, ARGV[1], 'FORCE_RELEASED', now)
      end)
      b_end_share(KEYS[1], ARGV[2], t, ARGV[1], 'FORCE_RELEASED', now)
      return {1, owner, fencing}
    end
  end
  return {0, '', 0}
end
local owner, fencing = b_holder(KEYS[2])
if b_int(fencing) ~= ARGV[3] then return {0, owner, fencing} end
-- One device of a multi-device pool grant: the whole grant goes (each device
-- FORCE_RELEASED with its own fencing); a grant is never left partial.
local token = redis.call('GET', KEYS[1])
b_grant_peers(KEYS[1], KEYS[2], ARGV[2], function(lock, hold, k)
  b_end_peer(lock, hold, k, token, ARGV[1], 'FORCE_RELEASED', now)
end)
redis.call('DEL', KEYS[1], KEYS[2])
b_publish(ARGV[1], 'FORCE_RELEASED', fencing, now, ARGV[2], owner)
return {1, owner, fencing}
