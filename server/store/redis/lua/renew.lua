-- Extend a lock's TTL, only for its holder.
-- KEYS: lock, hold
-- ARGV: channel, key, token, ttl_ms
-- Reply: {1, ttl_ms} renewed, or {0, holder_owner, holder_fencing} when the
-- token does not hold the key ('' and 0 when nobody does).
-- A device of a multi-device pool grant renews every device of the grant. If
-- one of them is no longer the token's (its TTL ran out on its own), the
-- grant is broken: the rest end as EXPIRED too, never left partial, and the
-- reply is {0, '', 0}.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[3] then
  local locks, broken = {KEYS[1]}, false
  b_grant_peers(KEYS[1], KEYS[2], ARGV[2], function(lock, hold, k)
    if redis.call('GET', lock) == ARGV[3] then locks[#locks + 1] = lock else broken = true end
  end)
  if broken then
    local now = b_now()
    b_grant_peers(KEYS[1], KEYS[2], ARGV[2], function(lock, hold, k)
      b_end_peer(lock, hold, k, ARGV[3], ARGV[1], 'EXPIRED', now)
    end)
    local owner, fencing = b_holder(KEYS[2])
    redis.call('DEL', KEYS[1], KEYS[2])
    b_publish(ARGV[1], 'EXPIRED', fencing, now, ARGV[2], owner)
    return {0, '', 0}
  end
  for _, lock in ipairs(locks) do redis.call('PEXPIRE', lock, ARGV[4]) end
  return {1, tonumber(ARGV[4])}
end
-- A share: the same, on the share records; a device's sentinel lock is kept
-- at least as long as each of its shares.
if cur == B_SHARED and b_has_share(KEYS[1], ARGV[2], ARGV[3]) then
  local sh = b_share_rec(KEYS[1], ARGV[2], 'sh', ARGV[3])
  local devs, broken = {{KEYS[1], ARGV[2]}}, false
  b_grant_peers(KEYS[1], sh, ARGV[2], function(lock, hold, k)
    if b_has_share(lock, k, ARGV[3]) then devs[#devs + 1] = {lock, k} else broken = true end
  end)
  if broken then
    local now = b_now()
    b_grant_peers(KEYS[1], sh, ARGV[2], function(lock, hold, k)
      b_end_share(lock, k, ARGV[3], ARGV[1], 'EXPIRED', now)
    end)
    b_end_share(KEYS[1], ARGV[2], ARGV[3], ARGV[1], 'EXPIRED', now)
    return {0, '', 0}
  end
  local ttl = tonumber(ARGV[4])
  for _, d in ipairs(devs) do
    redis.call('PEXPIRE', b_share_rec(d[1], d[2], 'share', ARGV[3]), ARGV[4])
    if redis.call('PTTL', d[1]) < ttl then redis.call('PEXPIRE', d[1], ARGV[4]) end
  end
  return {1, ttl}
end
if not cur then
  b_reap_hold(KEYS[2], ARGV[1], ARGV[2], b_now())
  return {0, '', 0}
end
local owner, fencing = b_holder(KEYS[2])
return {0, owner, fencing}
