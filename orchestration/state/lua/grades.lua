-- Add one provider's accuracy grades, and with a marker key only once per job: the marker and
-- the counts go together (a re-run of the job's merge counts nothing; a crash loses nothing half).
-- KEYS  1 the provider's accuracy hash, [2 the job's marker for this provider]; one hash tag
--       (the provider's)
-- ARGV  1 the marker's TTL in seconds, then counter name, increment pairs
-- Reply 1 counted, 0 counted already by an earlier run
if KEYS[2] and not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[1]) then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
