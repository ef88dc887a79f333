-- Circuit breaker: one atomic step for one provider. A line-by-line mirror of
-- orchestration/breaker/machine.py (the reference); read that file for the rules.
-- `now` always comes from the caller: this script never reads the server clock.
--
-- KEYS  1 breaker hash, 2 window calls zset, 3 window failures zset (one hash tag, one slot)
-- ARGV  1 op (acquire|record|force_open|reset), 2 now,
--       3 window_s, 4 min_calls, 5 failure_rate, 6 consecutive_failures, 7 cooldown_s,
--       8 max_cooldown_s, 9 backoff, 10 auth_cooldown_s, 11 probe_lease_s,
--       12 lease id (or ''), 13 outcome (success|failure|auth|ignored or ''),
--       14 cooldown_s override for force_open (or '')
-- Reply {decision, state, from_state, reason, cooldown_until, level, lease_until, retry_at, note}
--       all strings ('' for none); numbers as %.17g so they round-trip exactly.

local unpack = unpack or table.unpack
local KB, KC, KF = KEYS[1], KEYS[2], KEYS[3]
local op, now_s = ARGV[1], ARGV[2]
local now = tonumber(now_s)
local cfg = {
  window_s = tonumber(ARGV[3]),
  min_calls = tonumber(ARGV[4]),
  failure_rate = tonumber(ARGV[5]),
  consecutive_failures = tonumber(ARGV[6]),
  cooldown_s = tonumber(ARGV[7]),
  max_cooldown_s = tonumber(ARGV[8]),
  backoff = tonumber(ARGV[9]),
  auth_cooldown_s = tonumber(ARGV[10]),
  probe_lease_s = tonumber(ARGV[11]),
}
local lease_arg = ARGV[12]
if lease_arg == '' then lease_arg = nil end
local outcome = ARGV[13]
local cooldown_arg = tonumber(ARGV[14])

local function num(x)
  if x == nil or x == false or x == '' then return nil end
  return tonumber(x)
end

local function fmt(x)
  if x == nil then return '' end
  return string.format('%.17g', x)
end

local function int(x)
  return string.format('%d', x)
end

local function load()
  local raw = redis.call('HGETALL', KB)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return {
    state = h.state or 'closed',
    opened_at = num(h.opened_at),
    cooldown_until = num(h.cooldown_until),
    level = num(h.level) or 0,
    consecutive = num(h.consecutive) or 0,
    lease_id = h.lease_id,
    lease_until = num(h.lease_until),
    reason = h.reason,
    seq = num(h.seq) or 0,
  }
end

local function save(s)
  local f = {'state', s.state, 'level', int(s.level), 'consecutive', int(s.consecutive), 'seq', int(s.seq)}
  for _, k in ipairs({'opened_at', 'cooldown_until', 'lease_until'}) do
    if s[k] ~= nil then f[#f + 1] = k; f[#f + 1] = fmt(s[k]) end
  end
  for _, k in ipairs({'lease_id', 'reason'}) do
    if s[k] ~= nil then f[#f + 1] = k; f[#f + 1] = s[k] end
  end
  redis.call('DEL', KB)
  redis.call('HSET', KB, unpack(f))
end

local function reply(s, decision, from, reason, retry_at, note)
  return {decision, s.state, from or '', reason or '', fmt(s.cooldown_until), int(s.level),
          fmt(s.lease_until), fmt(retry_at), note or ''}
end

local function cooldown_for(level)
  local cooldown = cfg.cooldown_s
  for _ = 1, level do
    cooldown = cooldown * cfg.backoff
    if cooldown >= cfg.max_cooldown_s then break end
  end
  return math.min(cooldown, cfg.max_cooldown_s)
end

local function open(s, cooldown, reason)
  s.state = 'open'
  s.opened_at = now
  s.cooldown_until = now + cooldown
  s.reason = reason
  s.consecutive = 0
  s.lease_id = nil
  s.lease_until = nil
  redis.call('DEL', KC, KF)
end

local function close(s)
  s.state = 'closed'
  s.opened_at = nil
  s.cooldown_until = nil
  s.lease_until = nil
  s.lease_id = nil
  s.reason = nil
  s.level = 0
  s.consecutive = 0
  redis.call('DEL', KC, KF)
end

local function take_lease(s)
  s.lease_id = lease_arg
  s.lease_until = now + cfg.probe_lease_s
end

local function acquire(s)
  if s.state == 'closed' then return reply(s, 'allowed') end
  if s.state == 'open' then
    local until_ = s.cooldown_until or 0
    if now < until_ then return reply(s, 'refused', nil, 'open', until_) end
    s.state = 'half_open'
    take_lease(s)
    save(s)
    return reply(s, 'probe', 'open', 'cooldown_elapsed')
  end
  if s.lease_until ~= nil and now < s.lease_until then
    return reply(s, 'refused', nil, 'probe_in_flight', s.lease_until)
  end
  local note = nil
  if s.lease_id ~= nil then note = 'lease_expired' end
  take_lease(s)
  save(s)
  return reply(s, 'probe', nil, nil, nil, note)
end

local function record(s)
  local is_probe = s.state == 'half_open' and lease_arg ~= nil and lease_arg == s.lease_id
  if outcome == 'ignored' then
    if is_probe then
      s.lease_id = nil
      s.lease_until = nil
      save(s)
      return reply(s, 'released')
    end
    return reply(s, 'ignored')
  end
  if outcome == 'auth' then
    if s.state == 'open' then
      local current = s.cooldown_until
      if current == nil then current = now end
      s.cooldown_until = math.max(current, now + cfg.auth_cooldown_s)
      s.reason = 'auth'
      save(s)
      return reply(s, 'recorded')
    end
    local previous = s.state
    open(s, cfg.auth_cooldown_s, 'auth')
    save(s)
    return reply(s, 'recorded', previous, 'auth')
  end
  if s.state == 'closed' then
    local cutoff = fmt(now - cfg.window_s)
    redis.call('ZREMRANGEBYSCORE', KC, '-inf', cutoff)
    redis.call('ZREMRANGEBYSCORE', KF, '-inf', cutoff)
    s.seq = s.seq + 1
    local member = int(s.seq)
    redis.call('ZADD', KC, now_s, member)
    if outcome == 'success' then
      s.consecutive = 0
      save(s)
      return reply(s, 'recorded')
    end
    redis.call('ZADD', KF, now_s, member)
    s.consecutive = s.consecutive + 1
    local reason = nil
    if s.consecutive >= cfg.consecutive_failures then
      reason = 'consecutive_failures'
    else
      local calls = redis.call('ZCARD', KC)
      local failures = redis.call('ZCARD', KF)
      if calls >= cfg.min_calls and failures / calls >= cfg.failure_rate then
        reason = 'failure_rate'
      end
    end
    if reason == nil then
      save(s)
      return reply(s, 'recorded')
    end
    open(s, cooldown_for(s.level), reason)
    save(s)
    return reply(s, 'recorded', 'closed', reason)
  end
  if is_probe then
    if outcome == 'success' then
      close(s)
      save(s)
      return reply(s, 'recorded', 'half_open', 'probe_succeeded')
    end
    s.level = s.level + 1
    open(s, cooldown_for(s.level), 'probe_failed')
    save(s)
    return reply(s, 'recorded', 'half_open', 'probe_failed')
  end
  return reply(s, 'ignored')
end

local function force_open(s)
  local previous = s.state
  local cooldown = cooldown_arg
  if cooldown == nil then cooldown = cooldown_for(s.level) end
  open(s, cooldown, 'forced')
  save(s)
  if previous == 'open' then previous = nil end
  return reply(s, 'done', previous, 'forced')
end

local function reset(s)
  local previous = s.state
  redis.call('DEL', KB, KC, KF)
  if previous == 'closed' then previous = nil end
  return reply({state = 'closed', level = 0}, 'done', previous, 'reset')
end

local ops = {acquire = acquire, record = record, force_open = force_open, reset = reset}
local fn = ops[op]
if fn == nil then return redis.error_reply('unknown breaker operation ' .. tostring(op)) end
return fn(load())
