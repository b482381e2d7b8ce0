-- Release a lock, only by its holder; optionally hand it straight to the
-- next waiter (direct handoff, see store.h).
-- KEYS: lock, hold[, fence, q, qt] (the last three only with next_token)
-- ARGV: channel, key, token[, next_token, next_owner, next_ttl_ms, fencing floor (epoch.lua)]
-- Reply: {1, owner, fencing} released; {1, owner, fencing, next_fencing,
--        next_ttl_ms} released and granted to next_token;
--        {0, holder_owner, holder_fencing} when the token does not hold the
--        key ('' and 0 when nobody does).
-- next_token is granted under acquire.lua's rule for a plain key: the lock is
-- free (it was just deleted) and, dead entries purged, the token heads the
-- queue. It is never enqueued here.
-- A device of a multi-device pool grant releases the whole grant in this one
-- step (every device: RELEASED with its own fencing), whichever device is named.
local now, now_us = b_now()
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[3] then
  local owner, fencing = b_holder(KEYS[2])
  b_grant_peers(KEYS[1], KEYS[2], ARGV[2], function(lock, hold, k)
    b_end_peer(lock, hold, k, ARGV[3], ARGV[1], 'RELEASED', now)
  end)
  redis.call('DEL', KEYS[1], KEYS[2])
  b_publish(ARGV[1], 'RELEASED', fencing, now, ARGV[2], owner)
  local nt = ARGV[4]
  if nt then
    b_purge(KEYS[4], KEYS[5], now)
    if b_head(KEYS[4], KEYS[5]) == nt then
      local ttl = tonumber(ARGV[6])
      local f = b_grant(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], nt, ARGV[5], ttl, now,
                        now_us, tonumber(ARGV[7] or '0'))
      return {1, owner, fencing, f, ttl}
    end
  end
  return {1, owner, fencing}
end
-- A share of a shared device (and of every device of its grant): RELEASED
-- with the share's fencing; the device stays held while other shares live.
-- (No handoff: the device may not be free.)
if cur == B_SHARED and b_has_share(KEYS[1], ARGV[2], ARGV[3]) then
  local sh = b_share_rec(KEYS[1], ARGV[2], 'sh', ARGV[3])
  local owner, fencing = b_holder(sh)
  b_grant_peers(KEYS[1], sh, ARGV[2], function(lock, hold, k)
    b_end_share(lock, k, ARGV[3], ARGV[1], 'RELEASED', now)
  end)
  b_end_share(KEYS[1], ARGV[2], ARGV[3], ARGV[1], 'RELEASED', now)
  return {1, owner, fencing}
end
if not cur then
  b_reap_hold(KEYS[2], ARGV[1], ARGV[2], now)
  return {0, '', 0}
end
local owner, fencing = b_holder(KEYS[2])
return {0, owner, fencing}
