-- One acquire attempt on a key or a pool (semantics: store.h).
-- ARGV: channel, key or pool name, token, owner, ttl_ms, enqueue ('1'/'0'),
--       liveness_ms, devices ('0' for a plain key), fencing floor (epoch.lua)
-- KEYS, plain key: lock, hold, fence, q, qt, qs
-- KEYS, pool of n devices: pool q, pool qt, pool qs, then for device i
--       (0-based, key "<pool>/<i>") lock, hold, fence, q, qt at 4+5i .. 8+5i,
--       then pool qn (the device count the pool's waiters use) at 4+5n
-- Reply: granted     {1, device (-1 for a plain key), fencing, ttl_ms}
--        refused     {2, n of the waiters}: a pool request whose device count
--                    differs from that of the pool's waiters (one queue serves
--                    them all, and a head that cannot use the free device
--                    would hold back everyone behind it)
--        not granted {0, position (0 = not queued), queue_len, holder_owner,
--                     holder_fencing, retry_ms (-1 = none), head_token}
--        head_token: the queue head's token when the head could be granted
--        right now (a plain key: the lock is free; a pool: some device is free
--        and its own queue is empty) but the caller is not the head; else ''.
local chan, name, token, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, enqueue, liveness = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local floor = tonumber(ARGV[9] or '0')
local now, now_us = b_now()

-- The target's queue, and the lockable keys ("devices") it may be granted.
-- A plain key is a single device whose own queue is the target queue.
local tq, tqt, tqs
local devs = {}
if n == 0 then
  tq, tqt, tqs = KEYS[4], KEYS[5], KEYS[6]
  devs[1] = {lock = KEYS[1], hold = KEYS[2], fence = KEYS[3], key = name, index = -1}
else
  tq, tqt, tqs = KEYS[1], KEYS[2], KEYS[3]
  for i = 0, n - 1 do
    local b = 4 + 5 * i
    devs[i + 1] = {lock = KEYS[b], hold = KEYS[b + 1], fence = KEYS[b + 2], q = KEYS[b + 3],
                   qt = KEYS[b + 4], key = name .. '/' .. i, index = i}
  end
end
local wake_type = (n == 0) and 'WAKE' or 'WAKE_POOL'
local tqn = (n > 0) and KEYS[4 + 5 * n] or nil

-- Idempotent by token: a repeated attempt reports the grant it already has.
for _, d in ipairs(devs) do
  d.holder = redis.call('GET', d.lock)
  if d.holder == token then
    local f = redis.call('HGET', d.hold, 'fencing')
    if f then return {1, d.index, tonumber(f), redis.call('PTTL', d.lock)} end
  end
end

-- Report expired holds; drop dead waiters (a device's own queue too: its
-- direct waiters go before the pool, but dead ones must not block it).
local purged = 0
for _, d in ipairs(devs) do
  if not d.holder then b_reap_hold(d.hold, chan, d.key, now) end
  if d.q then
    local dev_head = b_head(d.q, d.qt)
    if b_purge(d.q, d.qt, now) > 0 and not d.holder then
      local new_head = b_head(d.q, d.qt)
      if new_head and new_head ~= dev_head then b_publish(chan, 'WAKE', 0, now, d.key, '') end
    end
  end
end
-- The common case, a free plain key that nobody waits for: grant it without
-- the queue steps below (same outcome, a third of the Redis commands).
-- (EXISTS rather than the ZRANGE below moved up: with its array reply an
-- uncontended cycle cost Redis 5k instructions more, in callgrind, than the
-- EXISTS costs a contended acquire.)
if n == 0 and not devs[1].holder and redis.call('EXISTS', tq) == 0 then
  local d = devs[1]
  return {1, -1, b_grant(d.lock, d.hold, d.fence, nil, nil, chan, d.key, token, owner, ttl, now, now_us, floor), ttl}
end

local old_head = redis.call('ZRANGE', tq, 0, 0)[1]
purged = b_purge(tq, tqt, now)
local head = b_head(tq, tqt)

-- A pool's live waiters fix its device count (checked after the purge, so
-- dead ones do not): refuse another count, before any grant or enqueue.
local qn = tqn and head and tonumber(redis.call('GET', tqn))
if qn and qn ~= n then return {2, qn} end

-- Grant iff the token heads the queue (or it is empty): the lowest free
-- device whose own queue is empty.
if not head or head == token then
  for _, d in ipairs(devs) do
    if not d.holder and (not d.q or redis.call('EXISTS', d.q) == 0) then
      local f = b_grant(d.lock, d.hold, d.fence, tq, tqt, chan, d.key, token, owner, ttl, now, now_us, floor)
      if n > 0 and redis.call('EXISTS', tq) == 1 then b_publish(chan, 'WAKE_POOL', 0, now, name, '') end
      return {1, d.index, f, ttl}
    end
  end
end

-- Not granted: join or stay in the queue.
if enqueue then
  if tqn and not qn then redis.call('SET', tqn, n) end -- first waiter (or one from before qn)
  if not redis.call('ZSCORE', tq, token) then
    redis.call('ZADD', tq, 'NX', b_int(redis.call('INCR', tqs)), token)
  end
  redis.call('ZADD', tqt, b_int(now + liveness), token)
end
head = redis.call('ZRANGE', tq, 0, 0)[1]

-- When to try again without an event: the soonest holder TTL, or the soonest
-- moment a waiter ahead of a free device can be purged.
local retry = -1
local function sooner(ms)
  if ms < 0 then ms = 0 end
  if retry < 0 or ms < retry then retry = ms end
end
local holder_owner, holder_fencing, holder_ttl = '', 0, -1
local any_free = false
local grantable = false -- the head would be granted if it attempted now
for _, d in ipairs(devs) do
  if d.holder then
    local pttl = redis.call('PTTL', d.lock)
    if pttl >= 0 then sooner(pttl) end
    if holder_ttl < 0 or (pttl >= 0 and pttl < holder_ttl) then
      holder_owner, holder_fencing = b_holder(d.hold)
      holder_ttl = pttl
    end
  else
    any_free = true
    local dh = d.q and redis.call('ZRANGE', d.q, 0, 0)[1]
    if dh then
      sooner(tonumber(redis.call('ZSCORE', d.qt, dh)) - now)
    else
      grantable = true
    end
  end
end
if any_free and head and head ~= token then
  sooner(tonumber(redis.call('ZSCORE', tqt, head)) - now)
  -- Dead entries ahead were dropped: the new head may be waiting elsewhere.
  if purged > 0 and head ~= old_head then b_publish(chan, wake_type, 0, now, name, '') end
end

-- Name the head that could take it now: its batond may order its local
-- waiters differently from this queue (entries purged and re-added at the
-- tail, Redis data lost) and would otherwise only try the wrong one.
local head_token = ''
if grantable and head and head ~= token then head_token = head end

local rank = redis.call('ZRANK', tq, token)
local position = rank and (rank + 1) or 0
return {0, position, redis.call('ZCARD', tq), holder_owner, holder_fencing, retry, head_token}
