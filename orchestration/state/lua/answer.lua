-- Record one chord header task's outcome and read every outcome so far with the job's
-- publisher, in one atomic step (a queued step rides in a pipeline, not in a MULTI).
-- KEYS  1 the job's answers list, 2 the job's publication guard; one hash tag (the job's)
-- ARGV  1 the outcome (Attempt JSON), 2 the list's TTL in seconds
-- Reply {every outcome recorded, oldest first; the publisher or false}
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('GET', KEYS[2])}
