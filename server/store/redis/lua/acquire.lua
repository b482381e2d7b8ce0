-- One acquire attempt on a key or a pool (semantics: store.h).
-- ARGV: channel, key or pool name, token, owner, ttl_ms, enqueue ('1'/'0'),
--       liveness_ms, devices ('0' for a plain key), fencing floor (epoch.lua)[,
--       count (pool: devices granted together, all or nothing; absent = 1)[,
--       weight (pool: the share of each device's capacity; absent or 0 = the
--       whole device), capacity (pool: of each device)[, grace_ms]]]
--       grace_ms > 0: batond's failover grace (redis.failover_grace_ms) has
--       that long to run: nothing free is granted (a token's existing grant is
--       still reported); the request queues as usual and retry_ms is at most
--       grace_ms. ARGV 10-12 come at their defaults (1, 0, 1) then.
-- KEYS, plain key: lock, hold, fence, q, qt, qs
-- KEYS, pool of n devices: pool q, pool qt, pool qs, then for device i
--       (0-based, key "<pool>/<i>") lock, hold, fence, q, qt at 4+5i .. 8+5i,
--       then pool qn (the device count the pool's waiters use) at 4+5n,
--       then pool qc (hash: waiter token -> its count, when above 1) at 5+5n
-- Reply: granted     {1, device (-1 for a plain key), fencing, ttl_ms}, for a
--                    pool followed by {device, fencing} of every device
--                    granted, lowest first (the first pair repeats the head)
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
local count = tonumber(ARGV[10] or '1')
if count < 1 then count = 1 end
local weight, capacity = tonumber(ARGV[11] or '0'), tonumber(ARGV[12] or '1')
if weight >= capacity then weight = 0 end -- the whole device
local grace = tonumber(ARGV[13] or '0')
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
local tqc = (n > 0) and KEYS[5 + 5 * n] or nil

-- The grant reply for the devices `got` (a pool: every device and fencing).
local function granted(got, ttl_ms)
  local r = {1, got[1].index, got[1].f, ttl_ms}
  if n > 0 then
    for _, d in ipairs(got) do
      r[#r + 1] = d.index
      r[#r + 1] = d.f
    end
  end
  return r
end

-- Idempotent by token: a repeated attempt reports the grant it already has
-- (all its devices: they were granted in one step).
local mine = {}
for _, d in ipairs(devs) do
  d.holder = redis.call('GET', d.lock)
  if d.holder == token then
    local f = redis.call('HGET', d.hold, 'fencing')
    if f then
      d.f = tonumber(f)
      mine[#mine + 1] = d
    end
  elseif d.holder == B_SHARED and weight > 0 and b_has_share(d.lock, d.key, token) then
    d.f = tonumber(redis.call('HGET', b_share_rec(d.lock, d.key, 'sh', token), 'fencing'))
    mine[#mine + 1] = d
  end
end
if #mine > 0 then
  local first = mine[1]
  local rec = weight > 0 and b_share_rec(first.lock, first.key, 'share', token) or first.lock
  return granted(mine, redis.call('PTTL', rec))
end

-- Report expired holds; drop dead waiters (a device's own queue too: its
-- direct waiters go before the pool, but dead ones must not block it).
local purged = 0
for _, d in ipairs(devs) do
  if not d.holder then b_reap_hold(d.hold, chan, d.key, now) end
  -- Shared devices: the load of live shares; dead ones are reaped (and a
  -- sentinel without live shares goes: the device is free).
  if d.holder == B_SHARED or (capacity > 1 and not d.holder) then
    d.load = b_shares_load(d.lock, d.key, chan, now)
    if d.holder == B_SHARED and d.load == 0 then d.holder = nil end
  end
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
if n == 0 and grace == 0 and not devs[1].holder and redis.call('EXISTS', tq) == 0 then
  local d = devs[1]
  return {1, -1, b_grant(d.lock, d.hold, d.fence, nil, nil, chan, d.key, token, owner, ttl, now, now_us, floor), ttl}
end

local old_head = redis.call('ZRANGE', tq, 0, 0)[1]
purged = b_purge(tq, tqt, now, tqc)
local head = b_head(tq, tqt)

-- A pool's live waiters fix its device count (checked after the purge, so
-- dead ones do not): refuse another count, before any grant or enqueue.
local qn = tqn and head and tonumber(redis.call('GET', tqn))
if qn and qn ~= n then return {2, qn} end

-- The devices a grant of weight w (0 = whole devices) may take now: free, or
-- shared with room for w; and nobody waits on their own key.
local function usable_for(w)
  local u = {}
  for _, d in ipairs(devs) do
    local room = not d.holder or (w > 0 and d.holder == B_SHARED and d.load + w <= capacity)
    if room and (not d.q or redis.call('EXISTS', d.q) == 0) then u[#u + 1] = d end
  end
  return u
end
local usable = usable_for(weight)

-- Grant iff the token heads the queue (or it is empty) and `count` devices
-- are usable: the lowest ones, all in this one step or none (strict FIFO: a
-- head that needs more devices than are free keeps everyone behind it waiting,
-- so it is never starved by smaller requests; see store.h).
if grace == 0 and (not head or head == token) and #usable >= count then
  local got, keys = {}, {}
  for i = 1, count do
    got[i] = usable[i]
    keys[i] = usable[i].key
  end
  for i, d in ipairs(got) do
    if weight > 0 then
      d.f = b_grant_share(d.lock, d.fence, d.key, token, owner, weight, ttl, chan, now, now_us, floor)
      if count > 1 then
        redis.call('HSET', b_share_rec(d.lock, d.key, 'sh', token), 'grant', table.concat(keys, ' '))
      end
    else
      d.f = b_grant(d.lock, d.hold, d.fence, nil, nil, chan, d.key, token, owner, ttl, now, now_us, floor)
      if count > 1 then redis.call('HSET', d.hold, 'grant', table.concat(keys, ' ')) end
    end
  end
  redis.call('ZREM', tq, token)
  redis.call('ZREM', tqt, token)
  if n > 0 then
    if redis.call('EXISTS', tq) == 1 then
      redis.call('HDEL', tqc, token)
      b_publish(chan, 'WAKE_POOL', 0, now, name, '')
    else
      redis.call('DEL', tqc)
    end
  end
  return granted(got, ttl)
end

-- Not granted: join or stay in the queue.
if enqueue then
  if tqn and not qn then redis.call('SET', tqn, n) end -- first waiter (or one from before qn)
  if not redis.call('ZSCORE', tq, token) then
    redis.call('ZADD', tq, 'NX', b_int(redis.call('INCR', tqs)), token)
    if tqc and (count > 1 or weight > 0) then redis.call('HSET', tqc, token, count .. ' ' .. weight) end
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
if grace > 0 then sooner(grace) end -- the head is granted when the grace is over
local holder_owner, holder_fencing, holder_ttl = '', 0, -1
local any_free = false
-- The head would be granted if it attempted now: enough usable devices for
-- the count it waits for.
local grantable = #usable >= count
if tqc and head and head ~= token then
  local hc, hw = string.match(redis.call('HGET', tqc, head) or '1 0', '^(%d+) (%d+)$')
  grantable = #usable_for(tonumber(hw or '0')) >= tonumber(hc or '1')
end
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
    if dh then sooner(tonumber(redis.call('ZSCORE', d.qt, dh)) - now) end
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
if grace == 0 and grantable and head and head ~= token then head_token = head end

local rank = redis.call('ZRANK', tq, token)
local position = rank and (rank + 1) or 0
return {0, position, redis.call('ZCARD', tq), holder_owner, holder_fencing, retry, head_token}
