-- Held locks: one bounded walk of SCAN (never KEYS) over P{K}:lock keys.
-- Read-only. The keys are found, not passed in KEYS: on a Redis Cluster the
-- store runs it on every primary in turn, with the flag allow-cross-slot-keys.
-- KEYS: none
-- ARGV: channel (unused), key prefix P, key prefix filter, limit, cursor, budget
-- Reply: {next_cursor, key1, owner1, fencing1, ttl_ms1, held_for_ms1, waiters1, key2, ...}
-- Stops at the end of the walk, once `limit` locks are found, or once SCAN
-- has been asked for `budget` keys, whichever comes first; a SCAN call's
-- matches are all returned (the cursor cannot stop inside one).
local kp, prefix = ARGV[2], ARGV[3]
local limit, cursor, budget = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local now = b_now()
-- Keys and prefixes are [A-Za-z0-9_-.:/@+=]: nothing a glob pattern treats specially.
-- On a Cluster a key "T/R" is P{T}/R:lock (b_rec), so a prefix with a '/'
-- puts its brace there.
local pattern = kp .. '{' .. prefix .. '*}:lock'
if B_CLUSTER then
  local slash = string.find(prefix, '/', 2, true)
  if slash then
    pattern = kp .. '{' .. string.sub(prefix, 1, slash - 1) .. '}' .. string.sub(prefix, slash) .. '*:lock'
  else
    pattern = kp .. '{' .. prefix .. '*:lock'
  end
end
local out = {''}
local found, asked = 0, 0
repeat
  local count = math.max(10, math.min(1000, limit - found))
  local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', count)
  cursor = r[1]
  asked = asked + count
  for _, lk in ipairs(r[2]) do
    -- pcall: on a Cluster a key of a slot moving away may be gone by now
    -- ("non local key"); it is skipped, as a lock released meanwhile.
    local ttl = redis.pcall('PTTL', lk)
    if type(ttl) == 'number' and ttl ~= -2 then
      -- P{T}R:lock -> the key T R (no key has a brace).
      local key = string.gsub(string.sub(lk, #kp + 2, #lk - 5), '}', '', 1)
      local h = redis.pcall('HMGET', b_rec(lk, key, key, 'hold'), 'owner', 'fencing', 'at')
      local waiters = redis.pcall('ZCARD', b_rec(lk, key, key, 'q'))
      if type(waiters) == 'number' and not h.err then
        local at = tonumber(h[3] or '0')
        local held = 0
        if at > 0 and now > at then held = now - at end
        out[#out + 1] = key
        out[#out + 1] = h[1] or ''
        out[#out + 1] = b_int(tonumber(h[2] or '0'))
        out[#out + 1] = ttl
        out[#out + 1] = held
        out[#out + 1] = waiters
        found = found + 1
      end
    end
  end
until cursor == '0' or found >= limit or asked >= budget
out[1] = cursor
return out
