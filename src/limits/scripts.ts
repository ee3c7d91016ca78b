// The limiter's Lua, one script per decision so each is atomic on the Redis server: two bot processes that
// admit at the same moment see each other's effects exactly (no read-modify-write across round trips).
// Time comes from Redis (TIME), not from the bots, so bots on hosts with skewed clocks still share one clock.
//
// Keys (base = "<queue.prefix>:limits:"):
//   rate:<scope>:<id>   hash  t = tokens left (float), ts = when t was computed (ms)        token bucket
//   conc:<scope>:<id>   zset  jobId → admitted-at ms                                     slots held
//   ovr:<channelKey>    hash  requestsPerWindow windowSeconds burst maxConcurrent         admin override
//   leases              zset  jobId → admitted-at ms                                     every held slot
//   lease-keys          hash  jobId → "<conc key>\n<conc key>\n<conc key>"                what to release
//
// A slot is held from admission until the job's result reaches delivery (the bot that posts it frees the slots
// first, so a user whose one slot it was may ask again the moment the result shows), or the job is finished (BullMQ
// sets `finishedOn` on the job hash when it completes or finally fails) or gone (removed, cancelled, expired).
// Release is exactly once because it is the deletion of the lease: whoever deletes it (the delivery, the completion
// listener, a cancel, a sweep) frees the slots.
import { NOW_MS_LUA } from '../redis.ts';

/**
 * releaseLease(leases, leaseKeys, jobId) → 1 if this freed the job's slots, 0 if they were free. Also run by the
 * delivery ledger when a result reaches delivery (src/jobs/ledger.ts): the slots are free before the result shows.
 */
export const releaseLeaseLua = `
local function releaseLease(leases, leaseKeys, jobId)
  local keys = redis.call('HGET', leaseKeys, jobId)
  if not keys then return 0 end
  for key in string.gmatch(keys, '[^\\n]+') do redis.call('ZREM', key, jobId) end
  redis.call('HDEL', leaseKeys, jobId)
  redis.call('ZREM', leases, jobId)
  return 1
end
`;

/** Shared helpers, prepended to each script. */
const helpers = `${releaseLeaseLua}

-- A job is done when BullMQ finished it, or when its hash is gone and the admit→enqueue grace has passed.
local function isDone(jobKeyPrefix, jobId, admittedAt, now, graceMs)
  local f = redis.call('HMGET', jobKeyPrefix .. jobId, 'finishedOn', 'timestamp')
  if f[1] then return true end
  if (not f[2]) and admittedAt + graceMs < now then return true end
  return false
end

${NOW_MS_LUA}
`;

/**
 * admit: KEYS rate c,u,w · conc c,u,w · ovr(channel) · leases · lease-keys
 * ARGV jobId · 3 × (requestsPerWindow windowSeconds burst maxConcurrent) for c,u,w · jobKeyPrefix · graceMs
 * → {1, duplicate}  or  {0, scope 1|2|3, kind 1 rate|2 concurrency, retryAfterMs, rpw, windowS, burst, maxConc}
 * The channel spec in ARGV is the config's; a Redis override (admin runtime change) replaces it here.
 * Nothing is written unless all three scopes pass: a denied request consumes nothing.
 * Every scope is checked before answering, so a refusal names the limit that holds longest: retrying at the time it
 * names passes every rate. A full cap wins over any rate (no wait helps until a job finishes; the first full one, in
 * scope order); its retryAfterMs is then the longest rate wait, 0 if none: the earliest a retry could pass.
 */
export const admitLua = `${helpers}
local jobId = ARGV[1]
local jobKeyPrefix, graceMs = ARGV[14], tonumber(ARGV[15])
local cost = tonumber(ARGV[16]) or 1 -- requests this job counts as (images of a several-image /imagine)
local now = nowMs()
local leases, leaseKeys = KEYS[8], KEYS[9]
-- The longest key lifetime and the longest wait, in ms (about 317 years). Redis gets a Lua number as text, which has an
-- exponent from 1e17 on (Redis 7.0): PEXPIRE refuses that as no integer, after the bucket's HSET, so a huge window or
-- burst failed every request. The schema bounds both (src/config/schema.ts); this holds for any value in Redis.
local LONGEST_MS = 1e13

if redis.call('HEXISTS', leaseKeys, jobId) == 1 then return {1, 1} end

local specs = {}
for s = 1, 3 do
  local o = 1 + (s - 1) * 4
  specs[s] = { tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4]) }
end
local ovr = redis.call('HMGET', KEYS[7], 'requestsPerWindow', 'windowSeconds', 'burst', 'maxConcurrent')
if ovr[1] then specs[1] = { tonumber(ovr[1]), tonumber(ovr[2]), tonumber(ovr[3]), tonumber(ovr[4]) } end

local buckets = {}
local waitMs, rateScope, capScope = 0, nil, nil -- the longest rate wait and its scope; the first full cap
for s = 1, 3 do
  local rpw, windowS, burst, maxConc = specs[s][1], specs[s][2], specs[s][3], specs[s][4]
  if rpw > 0 then
    local cap = burst > 0 and burst or rpw
    local perMs = rpw / (windowS * 1000)
    local b = redis.call('HMGET', KEYS[s], 't', 'ts')
    local tokens = tonumber(b[1]) or cap
    local ts = tonumber(b[2]) or now
    tokens = math.min(cap, tokens + math.max(0, now - ts) * perMs)
    local need = math.min(cost, cap) -- more than a full bucket would never pass: a full bucket admits it
    if tokens < need then
      -- not (need - tokens) / perMs: 1 / (1 / 3600000) is a hair over 3600000, which read "61 min" for 1 an hour
      local wait = math.min(LONGEST_MS, math.ceil((need - tokens) * windowS * 1000 / rpw))
      if wait > waitMs then waitMs, rateScope = wait, s end
    end
    buckets[s] = { tokens, cap, perMs, need }
  end
  -- Self-healing, only when the scope looks full (it reads every held job: O(held) per admission otherwise): drop
  -- slots whose job is finished or gone, then count again. Healing can only lower the count, so a scope below its
  -- cap admits either way; lost releases elsewhere wait for the completion listener or the sweep.
  if not capScope and maxConc > 0 and redis.call('ZCARD', KEYS[3 + s]) >= maxConc then
    local held = redis.call('ZRANGE', KEYS[3 + s], 0, -1, 'WITHSCORES')
    for i = 1, #held, 2 do
      if isDone(jobKeyPrefix, held[i], tonumber(held[i + 1]), now, graceMs) then releaseLease(leases, leaseKeys, held[i]) end
    end
    if redis.call('ZCARD', KEYS[3 + s]) >= maxConc then capScope = s end
  end
end
local refused = capScope or rateScope
if refused then
  local sp = specs[refused]
  return {0, refused, capScope and 2 or 1, waitMs, sp[1], sp[2], sp[3], sp[4]}
end

for s = 1, 3 do
  local b = buckets[s]
  if b then
    redis.call('HSET', KEYS[s], 't', tostring(b[1] - b[4]), 'ts', now)
    -- idle long enough to be full again: forget it
    redis.call('PEXPIRE', KEYS[s], math.min(LONGEST_MS, math.ceil(b[2] / b[3]) + 1000))
  end
  redis.call('ZADD', KEYS[3 + s], now, jobId)
end
redis.call('ZADD', leases, now, jobId)
redis.call('HSET', leaseKeys, jobId, KEYS[4] .. '\\n' .. KEYS[5] .. '\\n' .. KEYS[6])
return {1, 0}
`;

/** release: KEYS leases · lease-keys; ARGV jobId → 1 if this call freed the slots, 0 if already free. */
export const releaseLua = `${helpers}
return releaseLease(KEYS[1], KEYS[2], ARGV[1])
`;

/** settle: KEYS leases · lease-keys; ARGV jobId · jobKeyPrefix → 1 if the job is finished or gone and its slots were freed. */
export const settleLua = `${helpers}
local f = redis.call('HMGET', ARGV[2] .. ARGV[1], 'finishedOn', 'timestamp')
if f[1] or not f[2] then return releaseLease(KEYS[1], KEYS[2], ARGV[1]) end
return 0
`;

/** sweep: KEYS leases · lease-keys; ARGV jobKeyPrefix · graceMs · max → number of leases freed. */
export const sweepLua = `${helpers}
local now = nowMs()
local graceMs = tonumber(ARGV[2])
local held = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
local freed = 0
for i = 1, #held, 2 do
  if isDone(ARGV[1], held[i], tonumber(held[i + 1]), now, graceMs) then freed = freed + releaseLease(KEYS[1], KEYS[2], held[i]) end
end
return freed
`;

/** usage: KEYS rate · conc; ARGV rpw windowS burst → {tokens left ×1000 (or -1 when the rate is off), slots held}. */
export const usageLua = `${helpers}
local now = nowMs()
local rpw, windowS, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = -1
if rpw > 0 then
  local cap = burst > 0 and burst or rpw
  local b = redis.call('HMGET', KEYS[1], 't', 'ts')
  local t = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.floor(math.min(cap, t + math.max(0, now - ts) * rpw / (windowS * 1000)) * 1000)
end
return {tokens, redis.call('ZCARD', KEYS[2])}
`;
