-- Once-only counters: count one event (an attempt, a job) exactly once, however often its task
-- is redelivered. The marker and the increments are one atomic step: both happen or neither.
-- KEYS  1 seen marker (SET NX EX), 2 counter hash, 3 index set (optional); one hash tag
-- ARGV  1 marker TTL in seconds, 2 index member (added to KEYS[3] when given),
--       3.. field, increment pairs (integers: HINCRBY only, no float drift)
-- Reply 1 counted, 0 duplicate
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[2]) end
return 1
