-- Every recorded day of one provider's cost ledger (reads that name no days), in one call.
-- KEYS  1 day index set
-- ARGV  1 day hash key prefix: day hashes are ARGV[1] .. day, under the same hash tag as
--       KEYS[1], hence in the same cluster slot
-- Reply {day, {field, value, ...}, day, {...}, ...} oldest day first
local days = redis.call('SMEMBERS', KEYS[1])
table.sort(days)
local out = {}
for _, day in ipairs(days) do
  out[#out + 1] = day
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. day)
end
return out
