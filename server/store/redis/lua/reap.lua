-- Report an expired lock: if the lock is gone but its hold remains, publish
-- EXPIRED (owner, fencing) once and delete the hold.
-- KEYS: lock, hold
-- ARGV: channel, key
-- Reply: 1 if it reaped, else 0.
if b_reap(KEYS[1], KEYS[2], ARGV[1], ARGV[2], b_now()) then return 1 end
return 0
