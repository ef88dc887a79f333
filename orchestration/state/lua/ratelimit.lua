-- Token buckets of one provider, shared by every worker: requests/minute and tokens/minute.
-- Capacity = limit, refill = limit / 60 per second; a missing bucket is full. `now` always
-- comes from the caller: this script never reads the server clock.
-- KEYS  1 RPM bucket hash, 2 TPM bucket hash (one hash tag, one slot); fields tokens, ts
-- ARGV  1 op: admit (take one request) | peek (would admit? writes nothing) |
--             settle (give back ARGV[5] requests, debit ARGV[6] tokens: may go negative)
--       2 now, 3 rpm ('' = no limit), 4 tpm ('' = no limit), 5 requests to give back,
--       6 tokens used
-- Reply {decision, wait}: decision ok | rpm | tpm; wait = seconds until the next slot
--       (%.17g, '' when ok)

local op, now = ARGV[1], tonumber(ARGV[2])

local function fmt(x)
  return string.format('%.17g', x)
end

local function load(key, limit)
  if limit == nil then return nil end
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local b = {key = key, limit = limit, rate = limit / 60, tokens = tonumber(h[1]), ts = tonumber(h[2])}
  if b.tokens == nil or b.ts == nil then
    b.tokens, b.ts = limit, now
  elseif now > b.ts then  -- a caller whose clock lags refills nothing and moves no time back
    b.tokens = math.min(limit, b.tokens + (now - b.ts) * b.rate)
    b.ts = now
  end
  b.tokens = math.min(limit, b.tokens)  -- the limit may have been lowered since
  return b
end

local function save(b)
  redis.call('HSET', b.key, 'tokens', fmt(b.tokens), 'ts', fmt(b.ts))
  -- Expire once surely full again (a missing bucket reads as full); the margin covers
  -- clock differences between the callers and the server.
  redis.call('EXPIRE', b.key, math.ceil((b.limit - b.tokens) / b.rate) + 60)
end

local R, T = load(KEYS[1], tonumber(ARGV[3])), load(KEYS[2], tonumber(ARGV[4]))

if op == 'settle' then
  local give_back, used = tonumber(ARGV[5]) or 0, tonumber(ARGV[6]) or 0
  if R ~= nil and give_back > 0 then
    R.tokens = math.min(R.limit, R.tokens + give_back)
    save(R)
  end
  if T ~= nil and used > 0 then
    T.tokens = T.tokens - used
    save(T)
  end
  return {'ok', ''}
end

if T ~= nil and T.tokens <= 0 then return {'tpm', fmt(-T.tokens / T.rate)} end
if R ~= nil and R.tokens < 1 then return {'rpm', fmt((1 - R.tokens) / R.rate)} end
if op == 'admit' and R ~= nil then
  R.tokens = R.tokens - 1
  save(R)
end
return {'ok', ''}
