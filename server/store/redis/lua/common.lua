-- Prelude of every Baton script: store_redis.c prepends this file to each
-- script before SCRIPT LOAD / EVAL. Local helpers only, no side effects.
-- Every Redis key a script touches arrives in KEYS; ARGV[1] is always the
-- events channel where a script publishes. B_CLUSTER (set by the store in a
-- line before this file) is true on a Redis Cluster: events go out with
-- SPUBLISH on the channel of the keys' slot, and names hash by their tag
-- (cluster_map.h has the layout). Integers are formatted with %d:
-- Lua's own tostring would print 16-digit fencing tokens as 1.7e+15.

-- Redis time as (milliseconds, microseconds).
local function b_now()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec * 1000000 + usec
end

local function b_int(v)
  if type(v) == 'string' then return v end
  return string.format('%d', v)
end

-- "<TYPE> <fencing> <at_unix_ms> <key> <owner>" (see store.h)
local function b_publish(chan, typ, fencing, at, key, owner)
  redis.call(B_CLUSTER and 'SPUBLISH' or 'PUBLISH', chan, typ .. ' ' .. b_int(fencing) .. ' ' .. b_int(at) .. ' ' .. key .. ' ' .. (owner or ''))
end

-- Owner and fencing recorded in a hold hash ('' and 0 when there is none).
local function b_holder(hold)
  local h = redis.call('HMGET', hold, 'owner', 'fencing')
  return h[1] or '', tonumber(h[2] or '0')
end

-- The lock is known to be gone (the caller read it): a hold left behind
-- expired, so publish EXPIRED once and delete it. Returns true when it reaped.
local function b_reap_hold(hold, chan, key, now)
  if redis.call('EXISTS', hold) == 0 then return false end
  local owner, fencing = b_holder(hold)
  redis.call('DEL', hold)
  b_publish(chan, 'EXPIRED', fencing, now, key, owner)
  return true
end

-- The same when the lock has not been read yet.
local function b_reap(lock, hold, chan, key, now)
  return redis.call('EXISTS', lock) == 0 and b_reap_hold(hold, chan, key, now)
end

-- Drops queue entries whose liveness deadline passed (and, for a pool, their
-- device counts in qc, which may be nil). Returns how many.
local function b_purge(q, qt, now, qc)
  local dead = redis.call('ZRANGEBYSCORE', qt, '-inf', '(' .. b_int(now))
  for i = 1, #dead, 500 do
    local chunk = {unpack(dead, i, math.min(i + 499, #dead))}
    redis.call('ZREM', q, unpack(chunk))
    redis.call('ZREM', qt, unpack(chunk))
    if qc then redis.call('HDEL', qc, unpack(chunk)) end
  end
  return #dead
end

-- Head token of a queue, or nil. An entry without a liveness deadline cannot
-- be purged and would block the queue forever, so it is dropped here.
local function b_head(q, qt)
  while true do
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if not head or redis.call('ZSCORE', qt, head) then return head end
    redis.call('ZREM', q, head)
  end
end

-- Next fencing token of a key. A missing counter (new key, or Redis lost its
-- data) is seeded from the clock in microseconds, so tokens keep rising.
-- (INCR makes a missing counter 1; a live one is far above that.)
-- floor: the fencing floor of this primary (epoch.lua): a counter at or
-- below it may be older than tokens given out before a failover or a
-- restore, so the token goes above the floor instead. Tokens are seeded from
-- the clock and rise by one per grant, so none given out before the floor
-- was taken is above it.
local function b_next_fencing(fence, now_us, floor)
  local f = redis.call('INCR', fence)
  if f == 1 then
    f = now_us + 1
  elseif f <= floor then
    f = floor + 1
  else
    return f
  end
  redis.call('SET', fence, b_int(f))
  return f
end

-- Grants a free lock to token: the next fencing token, the lock with its TTL,
-- the hold record, the token out of its target queue (q, qt; both nil when
-- the caller knows the queue is empty), ACQUIRED.
-- The one grant step of acquire.lua and of release.lua's direct handoff.
-- Returns the fencing token.
local function b_grant(lock, hold, fence, q, qt, chan, key, token, owner, ttl, now, now_us, floor)
  local f = b_next_fencing(fence, now_us, floor)
  redis.call('SET', lock, token, 'PX', b_int(ttl))
  redis.call('HSET', hold, 'token', token, 'owner', owner, 'fencing', b_int(f), 'at', b_int(now))
  if q then
    redis.call('ZREM', q, token)
    redis.call('ZREM', qt, token)
  end
  b_publish(chan, 'ACQUIRED', f, now, key, owner)
  return f
end

-- Multi-device grants. A pool grant of several devices is one hold under one
-- token: each device key gets its own lock, hold and fencing as a single grant
-- would, and each hold records the whole grant in its field 'grant' (the
-- device keys, space-separated). Renew, release and force-release of any one
-- of them act on all (b_grant_peers), so a grant is never left partial.
-- The other devices' records are found by name: "<prefix>{<key>}:<rec>", the
-- prefix taken from the record of the key the script was called for. (Pools
-- already need a standalone Redis, see store.h.)

-- The Redis key of record `rec` of lock key k, given `lock` = the :lock
-- record of lock key `key`.
-- (Both layouts put 7 bytes around a key: '{', '}' and ':lock'.)
local function b_rec(lock, key, k, rec)
  local prefix = string.sub(lock, 1, #lock - #key - 7)
  local slash = B_CLUSTER and string.find(k, '/', 2, true)
  if slash then
    return prefix .. '{' .. string.sub(k, 1, slash - 1) .. '}' .. string.sub(k, slash) .. ':' .. rec
  end
  return prefix .. '{' .. k .. '}:' .. rec
end

-- Calls fn(lock, hold, k) for every other device key of the grant recorded in
-- `hold` (the hold of lock key `key`, record `lock`); nothing for a
-- single-device grant. Call before the hold is deleted.
local function b_grant_peers(lock, hold, key, fn)
  local g = redis.call('HGET', hold, 'grant')
  if not g then return end
  for k in string.gmatch(g, '%S+') do
    if k ~= key then fn(b_rec(lock, key, k, 'lock'), b_rec(lock, key, k, 'hold'), k) end
  end
end

-- Ends token's hold of one peer device with event `typ` (RELEASED,
-- FORCE_RELEASED, EXPIRED). A peer no longer held by token is left alone
-- (an expired lock's hold is reaped: EXPIRED, once).
local function b_end_peer(lock, hold, k, token, chan, typ, now)
  local cur = redis.call('GET', lock)
  if cur == token then
    local owner, fencing = b_holder(hold)
    redis.call('DEL', lock, hold)
    b_publish(chan, typ, fencing, now, k, owner)
  elseif not cur then
    b_reap_hold(hold, chan, k, now)
  end
end

-- Shared devices (a pool with capacity > 1, requests with a weight below it).
-- A device held by shares has the sentinel B_SHARED as its lock (no token is
-- ever that), whose TTL is kept at least as long as every live share's, so a
-- free lock means no live share, and plain-key and whole-device acquires see
-- the device as held. Per share, records of device key k:
--   {k}:shares        set     tokens of the device's shares (live or dead)
--   {k}:share:<token> string  the share's weight, PX = its TTL (exists <=> live)
--   {k}:sh:<token>    hash    token, owner, fencing, weight[, grant] (as a
--                             hold: outlives an expired share until reaped)
local B_SHARED = '~shared'

local function b_share_rec(lock, k, what, token)
  return b_rec(lock, k, k, token and (what .. ':' .. token) or what)
end

-- Sum of the weights of device k's live shares (`lock` = its :lock record);
-- dead shares are reaped (EXPIRED, once). With no live share left, a sentinel
-- lock is deleted.
local function b_shares_load(lock, k, chan, now)
  local set = b_share_rec(lock, k, 'shares')
  local load = 0
  for _, t in ipairs(redis.call('SMEMBERS', set)) do
    local w = redis.call('GET', b_share_rec(lock, k, 'share', t))
    if w then
      load = load + tonumber(w)
    else
      b_reap_hold(b_share_rec(lock, k, 'sh', t), chan, k, now)
      redis.call('SREM', set, t)
    end
  end
  if load == 0 and redis.call('GET', lock) == B_SHARED then redis.call('DEL', lock) end
  return load
end

-- Grants token a share of weight w of device k for ttl ms; returns the
-- device's next fencing token (above the primary's floor, as b_grant's).
local function b_grant_share(lock, fence, k, token, owner, w, ttl, chan, now, now_us, floor)
  local f = b_next_fencing(fence, now_us, floor)
  redis.call('SET', b_share_rec(lock, k, 'share', token), b_int(w), 'PX', b_int(ttl))
  redis.call('SADD', b_share_rec(lock, k, 'shares'), token)
  redis.call('HSET', b_share_rec(lock, k, 'sh', token), 'token', token, 'owner', owner, 'fencing', b_int(f),
             'weight', b_int(w))
  if redis.call('PTTL', lock) < ttl then redis.call('SET', lock, B_SHARED, 'PX', b_int(ttl)) end
  b_publish(chan, 'ACQUIRED', f, now, k, owner)
  return f
end

-- Ends token's share of device k with event `typ` (EXPIRED when it was no
-- longer live). Returns true when the share was live.
local function b_end_share(lock, k, token, chan, typ, now)
  local sk, sh = b_share_rec(lock, k, 'share', token), b_share_rec(lock, k, 'sh', token)
  local live = redis.call('EXISTS', sk) == 1
  if redis.call('EXISTS', sh) == 1 then
    local owner, fencing = b_holder(sh)
    b_publish(chan, live and typ or 'EXPIRED', fencing, now, k, owner)
  end
  redis.call('DEL', sk, sh)
  redis.call('SREM', b_share_rec(lock, k, 'shares'), token)
  if redis.call('GET', lock) == B_SHARED then b_shares_load(lock, k, chan, now) end
  return live
end

-- 1 when token holds a live share of device k.
local function b_has_share(lock, k, token)
  return redis.call('EXISTS', b_share_rec(lock, k, 'share', token)) == 1
end
