-- Health counters of one provider: one atomic update per call outcome.
-- KEYS  1 health hash, 2 latency sample list (newest first, capped), 3 this minute's quality
--       bucket (answers and invalid answers; the quality gate sums the recent ones)
-- ARGV  1 now, 2 outcome: 'ok' | 'fault' (an outage: counted as an error) | 'invalid' (the
--       provider answered, unusably: a quality figure) | 'request' (the job's own fault: kept
--       apart, never in calls or error rates), 3 latency ms (or ''), 4 error kind,
--       5 error message, 6 EWMA alpha, 7 latency sample size, 8 bucket TTL in seconds
local KH, KL = KEYS[1], KEYS[2]
local now_s, outcome, latency = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = tonumber(now_s)

local function later_than(field)
  local previous = tonumber(redis.call('HGET', KH, field))
  return previous == nil or now >= previous
end

if outcome == 'request' then
  redis.call('HINCRBY', KH, 'request:' .. ARGV[4], 1)
  return 1
end
redis.call('HINCRBY', KH, 'calls', 1)
if outcome == 'ok' or outcome == 'invalid' then
  redis.call('HINCRBY', KEYS[3], 'answers', 1)
  if outcome == 'invalid' then redis.call('HINCRBY', KEYS[3], 'invalid', 1) end
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
if outcome == 'ok' then
  redis.call('HINCRBY', KH, 'successes', 1)
  if later_than('last_success_at') then redis.call('HSET', KH, 'last_success_at', now_s) end
elseif outcome == 'invalid' then
  redis.call('HINCRBY', KH, 'invalid_outputs', 1)
  if later_than('last_invalid_at') then
    redis.call('HSET', KH, 'last_invalid_at', now_s, 'last_invalid', ARGV[5])
  end
else
  redis.call('HINCRBY', KH, 'error:' .. ARGV[4], 1)
  if later_than('last_failure_at') then
    redis.call('HSET', KH, 'last_failure_at', now_s, 'last_error', ARGV[5], 'last_error_kind', ARGV[4])
  end
end
if latency ~= nil then
  local alpha = tonumber(ARGV[6])
  local previous = tonumber(redis.call('HGET', KH, 'latency_ewma_ms'))
  local ewma = latency
  if previous ~= nil then ewma = alpha * latency + (1 - alpha) * previous end
  redis.call('HSET', KH, 'latency_ewma_ms', string.format('%.17g', ewma))
  redis.call('LPUSH', KL, ARGV[3])
  redis.call('LTRIM', KL, '0', string.format('%d', tonumber(ARGV[7]) - 1))
end
return 1
