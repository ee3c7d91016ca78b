// Fair scheduling's Lua: every change to the bookkeeping is one atomic script, so bots enqueueing and workers
// starting jobs at the same moment never see half a decision. Each script returns the "promotions" to apply to
// BullMQ afterwards as a flat list {jobId, priority, jobId, priority, …}; applying one twice is harmless.
//
// Keys (B = "<queue.prefix>:sched:"):
//   B.vclock        string  virtual clock V: the priority (tag) of the last tagged job a worker started
//   B.seq           string  arrival counter (FIFO inside a round; tie order of heads)
//   B.jobs          hash    jobId → "<channelKey>\n<userKey>\n<cost>" every job we still have to dispatch (cost: its
//                           estimated GPU time in units of usage.fairCostUnitMs, ≥ 1)
//   B.q:<ck>        zset    jobId → round·1e9 + seq                     the channel's own line, users round-robin
//   B.ur:<ck>       hash    userKey → last round given to that user     per-user tags inside a channel (back to
//                           the user's last round still waiting when a job is forgotten; see rollBackUser)
//   B.cr            hash    channelKey → round of its last started job  the channel's own virtual clock
//   B.heads         hash    channelKey → jobId                          the one job per channel released to BullMQ
//   B.tags          zset    channelKey → tag·2^20 + seq mod 2^20        the head's BullMQ priority (+ tie order)
//   B.fin           zset    channelKey → earliest tag of its next job   for channels with nothing released: the
//                           finish tag (tag + cost) of the last job it started, or the tag of a released job removed,
//                           while still ahead of V + 1 (dropped once V + 1 reaches it)
//   B.backlog       set     channelKeys with jobs waiting
//   B.paused        set     channelKeys an admin paused
//   B.adding        zset    jobId → when reserve() lined it up (ms)     reserved before BullMQ has it (see reserveLua)
//
// Every script is called with KEYS[1] = B.jobs (the key that routes it) and ARGV[1] = B; the other keys it touches
// (the rest above, per channel ones, BullMQ's job hashes and lists under the same queue.prefix) are derived from the
// same prefix, so in Redis Cluster, where queue.prefix must be a hash tag such as `{blip3o}`, they all live in the
// slot of KEYS[1]. Which channels' keys a script reads depends on the data (position, repair), so they cannot all be
// listed up front.
import { NOW_MS_LUA } from '../redis.ts';

const helpers = `
local B = ARGV[1]
if KEYS[1] ~= B .. 'jobs' then return redis.error_reply('KEYS[1] must be ' .. B .. 'jobs') end
local TWO20 = 1048576
local E9 = 1000000000
local function k(name) return B .. name end
local function vclock() return tonumber(redis.call('GET', k('vclock'))) or 0 end

-- Priorities must stay ≤ maxTag - 1 (maxTag, BullMQ's largest, marks parked jobs). When V + 1 would pass it,
-- shift every head down so the lowest is 1; the returned promotions re-prioritise them in BullMQ.
local function rebaseIfNeeded(maxTag, out, need)
  local V = vclock()
  if V + (need or 1) < maxTag then return V end
  local low = redis.call('ZRANGE', k('tags'), 0, 0, 'WITHSCORES')
  local shift = V
  if low[2] then shift = math.min(V, math.floor(tonumber(low[2]) / TWO20) - 1) end
  local heads = redis.call('ZRANGE', k('tags'), 0, -1, 'WITHSCORES')
  for i = 1, #heads, 2 do
    local score = tonumber(heads[i + 1])
    local tag = math.floor(score / TWO20) - shift
    redis.call('ZADD', k('tags'), tag * TWO20 + score % TWO20, heads[i])
    table.insert(out, redis.call('HGET', k('heads'), heads[i])); table.insert(out, tag)
  end
  V = V - shift
  local fins = redis.call('ZRANGE', k('fin'), 0, -1, 'WITHSCORES')
  for i = 1, #fins, 2 do redis.call('ZADD', k('fin'), tonumber(fins[i + 1]) - shift, fins[i]) end
  redis.call('SET', k('vclock'), V)
  return V
end

-- Release the first job of a channel's line to BullMQ with priority tag (unless paused or already released).
local function promoteNext(ck, tag, out)
  if redis.call('SISMEMBER', k('paused'), ck) == 1 then return end
  if redis.call('HEXISTS', k('heads'), ck) == 1 then return end
  local first = redis.call('ZRANGE', k('q:') .. ck, 0, 0)[1]
  if not first then return end
  local seq = redis.call('INCR', k('seq'))
  redis.call('HSET', k('heads'), ck, first)
  redis.call('ZADD', k('tags'), tag * TWO20 + seq % TWO20, ck)
  redis.call('ZREM', k('fin'), ck) -- the released job carries it now
  table.insert(out, first); table.insert(out, tag)
end

-- The tag to release a channel's next job at: V + 1, or its saved finish tag (B.fin) while that is later. This is
-- start-time fair queueing's rule, a flow's next start tag = max(V, its last finish tag), so a channel that sends one
-- job at a time, its line empty whenever its job starts, still waits its job's cost. Rebases first when needed.
local function nextTag(ck, maxTag, out)
  local fin = tonumber(redis.call('ZSCORE', k('fin'), ck))
  local need = 1
  if fin then need = math.max(1, fin - vclock()) end
  return rebaseIfNeeded(maxTag, out, need) + need
end

-- A channel left with nothing released keeps tag as its next job's earliest tag, if it is still ahead of V + 1.
local function keepFinish(ck, tag)
  if tag > vclock() + 1 and redis.call('HEXISTS', k('heads'), ck) == 0 then redis.call('ZADD', k('fin'), tag, ck) end
end

local function userOf(entry) return string.match(entry, '\\n([^\\n]*)\\n') end

-- A user's job left the line before it started (cancel, purge): lineUp gives a job round max(channel round, the
-- user's last round) + 1, so their last round goes back to the largest round they still have waiting, or (none) to the
-- channel's (the field is deleted: max(R, 0) = R). Else their next job would wait behind rounds nobody of theirs used.
-- Only a job in the user's last round moves it; the walk reads the line downwards from that round to the channel's.
local function rollBackUser(ck, user, round)
  local ur = k('ur:') .. ck
  if tonumber(redis.call('HGET', ur, user)) ~= round then return end -- a later job of theirs is still lined up
  local R = tonumber(redis.call('HGET', k('cr'), ck)) or 0
  local below = redis.call('ZREVRANGEBYSCORE', k('q:') .. ck, '(' .. (round * E9), (R + 1) * E9, 'WITHSCORES')
  for i = 1, #below, 2 do
    local entry = redis.call('HGET', k('jobs'), below[i])
    if entry and userOf(entry) == user then
      redis.call('HSET', ur, user, math.floor(tonumber(below[i + 1]) / E9))
      return
    end
  end
  redis.call('HDEL', ur, user)
end

-- Take a job out of the bookkeeping. Returns its channel, the head's tag if it was the channel's head, and its cost.
local function drop(jobId, advanceRound)
  local entry = redis.call('HGET', k('jobs'), jobId)
  if not entry then return nil, nil, 1 end
  local ck = string.sub(entry, 1, string.find(entry, '\\n', 1, true) - 1)
  local cost = tonumber(string.match(entry, '\\n[^\\n]*\\n(%d+)$')) or 1
  redis.call('HDEL', k('jobs'), jobId)
  redis.call('ZREM', k('adding'), jobId)
  local q = k('q:') .. ck
  local score = tonumber(redis.call('ZSCORE', q, jobId))
  redis.call('ZREM', q, jobId)
  if score then
    local round = math.floor(score / E9)
    if not advanceRound then rollBackUser(ck, userOf(entry), round)
    elseif round > (tonumber(redis.call('HGET', k('cr'), ck)) or 0) then redis.call('HSET', k('cr'), ck, round) end
  end
  local tag = nil
  if redis.call('HGET', k('heads'), ck) == jobId then
    tag = math.floor(tonumber(redis.call('ZSCORE', k('tags'), ck)) / TWO20)
    redis.call('HDEL', k('heads'), ck)
    redis.call('ZREM', k('tags'), ck)
  end
  if redis.call('ZCARD', q) == 0 then
    redis.call('DEL', q, k('ur:') .. ck)
    redis.call('HDEL', k('cr'), ck)
    redis.call('SREM', k('backlog'), ck)
  end
  return ck, tag, cost
end

-- Nothing left to dispatch: restart the clocks (this is where priorities are rebased in the common case).
local function resetIfDrained()
  if redis.call('HLEN', k('jobs')) == 0 then redis.call('DEL', k('vclock'), k('seq'), k('fin')) end
end

-- Weighted by cost (start-time fair queueing): the channel's next job starts at the started job's tag plus its cost
-- (its finish tag), and never before V + 1. With every cost 1 this is plain round-robin. The finish tag is kept in
-- B.fin even when no next job is waiting yet, for whichever job the channel sends next (nextTag).
local function started(jobId, maxTag, out, costNow)
  local ck, tag, cost = drop(jobId, true)
  if costNow then cost = costNow end
  if not ck then return end
  if tag then
    local V = math.max(vclock(), tag)
    redis.call('SET', k('vclock'), V)
    redis.call('ZREMRANGEBYSCORE', k('fin'), '-inf', V + 1) -- V passed them: their channels get V + 1 anyway
    if tag + cost > V + 1 then redis.call('ZADD', k('fin'), tag + cost, ck) end
  end
  promoteNext(ck, nextTag(ck, maxTag, out), out)
end

-- What the places of one script call read besides each job's own entry and rank: the wait list's length, the paused
-- channels (each mapped to its head's score in B.tags, or false: none released), the released heads (view below),
-- the lines' lengths and each channel's head (its job, its score, its rank in the line), each read once.
local function placeReads(waitKey, heads)
  local paused, lengths, channels, lines = {}, {}, {}, k('q:')
  for _, ck in ipairs(redis.call('SMEMBERS', k('paused'))) do
    paused[ck] = tonumber(redis.call('ZSCORE', k('tags'), ck)) or false
  end
  local function length(ck)
    local n = lengths[ck]
    if not n then n = redis.call('ZCARD', lines .. ck); lengths[ck] = n end
    return n
  end
  local function channel(ck)
    local c = channels[ck]
    if not c then
      local head = redis.call('HGET', k('heads'), ck)
      c = {head = head, own = tonumber(redis.call('ZSCORE', k('tags'), ck)), hr = head and (redis.call('ZRANK', lines .. ck, head) or 0)}
      channels[ck] = c
    end
    return c
  end
  return {waiting = redis.call('LLEN', waitKey), paused = paused, heads = heads, length = length, channel = channel, V = vclock()}
end

-- Two views of B.tags for place(): below(X) lists {channel, score (a number), …} in score order, at least every head
-- scored below X (more are ignored); countBelow(S) counts the heads scored below S.
-- liveHeads asks Redis each time: one job's place costs O(log n + heads it lists) (position, enqueue). Bounds go to
-- Redis as Lua writes numbers ('%.14g'): exact, as scores stay far below 10^14.
local function liveHeads()
  return {
    countBelow = function(S) return redis.call('ZCOUNT', k('tags'), '-inf', '(' .. S) end,
    below = function(X)
      local hs = redis.call('ZRANGEBYSCORE', k('tags'), '-inf', '(' .. X, 'WITHSCORES')
      for i = 2, #hs, 2 do hs[i] = tonumber(hs[i]) end
      return hs
    end,
  }
end

-- snapshotHeads reads them all once, for many jobs' places in one call (positions): each place then walks only the
-- heads below its X, as liveHeads would list them, without a round of Redis calls per job.
local function snapshotHeads()
  local all = redis.call('ZRANGE', k('tags'), 0, -1, 'WITHSCORES')
  for i = 2, #all, 2 do all[i] = tonumber(all[i]) end
  return {
    countBelow = function(S)
      local lo, hi = 0, #all / 2 -- binary search: the first head scored S or more
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if all[2 * mid + 2] < S then lo = mid + 1 else hi = mid end
      end
      return lo
    end,
    below = function() return all end,
  }
end

-- Where a job waits, up to the heads two or more tags ahead (extraAhead below): {done = reply} when it is not waiting
-- with us ({0}) or its channel is paused ({2, place in its channel}); else {ck, S (its score: tag·2^20 + tie),
-- myTag, myTie, own (its channel's head score, if released), hr, rank, ahead (all but those heads' later jobs)}.
local function placeStart(jobId, at)
  local entry = redis.call('HGET', k('jobs'), jobId)
  if not entry then return {done = {0}} end
  local ck = string.sub(entry, 1, string.find(entry, '\\n', 1, true) - 1)
  local q = k('q:') .. ck
  local rank = redis.call('ZRANK', q, jobId) or 0
  if at.paused[ck] ~= nil then return {done = {2, rank + 1}} end
  local c = at.channel(ck)
  local own = c.own -- its head's score, when released (always, with a head)
  local myTag, myTie = at.V + 1, TWO20
  if c.head then myTag, myTie = math.floor(own / TWO20) + math.max(0, rank - c.hr), own % TWO20 end
  -- Another channel's head h (score t·2^20 + e) goes before the job, and so do its line's next jobs at t+1, t+2, …:
  -- min(its line's length, before) of them, before = myTag - t + (e < myTie ? 1 : 0). before ≥ 1 exactly when
  -- score < S, and every line holds at least its head: such heads add 1 each, counted without their lines. Only
  -- those with before ≥ 2 (score < S - 2^20) need their line's length, for the rest of their share.
  local S = myTag * TWO20 + myTie
  local ahead = rank + at.waiting + at.heads.countBelow(S)
  -- not counted: the own channel's head (its jobs ahead are rank) and paused ones (held when taken, not released)
  if own and own < S then ahead = ahead - 1 end
  for _, score in pairs(at.paused) do
    if score and score < S then ahead = ahead - 1 end
  end
  return {ck = ck, S = S, myTag = myTag, myTie = myTie, own = own, ahead = ahead}
end

-- The later jobs of the lines whose heads are two or more tags ahead (p from placeStart), walking those heads.
local function extraAhead(p, at)
  local extra, X, paused, length = 0, p.S - TWO20, at.paused, at.length
  local hs = at.heads.below(X)
  for i = 1, #hs, 2 do
    local h, score = hs[i], hs[i + 1]
    if score >= X then break end
    if h ~= p.ck and paused[h] == nil then
      local tie = score % TWO20
      local before = p.myTag - (score - tie) / TWO20
      if tie < p.myTie then before = before + 1 end
      extra = extra + math.min(length(h), before) - 1
    end
  end
  return extra
end

-- Where a job waits: {0} not waiting with us · {1, position} · {2, place in its channel} (paused). See positionLua.
local function place(jobId, at)
  local p = placeStart(jobId, at)
  if p.done then return p.done end
  return {1, p.ahead + extraAhead(p, at) + 1}
end

-- Put a job at the back of its user's round in its channel's line (users take turns inside a channel).
local function lineUp(jobId, ck, user, cost)
  local R = tonumber(redis.call('HGET', k('cr'), ck)) or 0
  local Fu = tonumber(redis.call('HGET', k('ur:') .. ck, user)) or 0
  local round = math.max(R, Fu) + 1
  redis.call('HSET', k('ur:') .. ck, user, round)
  local seq = redis.call('INCR', k('seq'))
  redis.call('ZADD', k('q:') .. ck, round * E9 + seq % E9, jobId)
  redis.call('HSET', k('jobs'), jobId, ck .. '\\n' .. user .. '\\n' .. (tonumber(cost) or 1))
  redis.call('SADD', k('backlog'), ck)
end

${NOW_MS_LUA}

-- A job reserve() lined up less than graceMs ago, whose BullMQ add may still be on its way: not to be taken for removed.
local function beingAdded(jobId, graceMs)
  local at = tonumber(redis.call('ZSCORE', k('adding'), jobId))
  return at ~= nil and graceMs ~= nil and at >= nowMs() - graceMs
end

local function forget(jobId, maxTag, out)
  local ck, tag = drop(jobId, false)
  if not ck then return end
  if tag then
    -- a removed head hands its turn (its tag) to the next job of the same channel, or keeps it for the channel's
    -- next job when none can be released now (its line is empty, it is paused)
    promoteNext(ck, tag, out)
    keepFinish(ck, tag)
  else
    promoteNext(ck, nextTag(ck, maxTag, out), out)
  end
end
`;

/**
 * enqueue: ARGV B · jobId · channelKey · userKey · BullMQ job key · maxTag · cost · BullMQ wait list key →
 * {the job's place as position returns it (2 values), promotions…}: the reply to the user needs no second call.
 * Call after the job was added to BullMQ parked; a job already started or gone is not tracked.
 */
export const enqueueLua = `${helpers}
local jobId, ck, user, jobKey, maxTag = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local out = {}
local function reply()
  local p = place(jobId, placeReads(ARGV[8], liveHeads()))
  local res = {p[1], p[2] or 0}
  for _, v in ipairs(out) do table.insert(res, v) end
  return res
end
if redis.call('HEXISTS', k('jobs'), jobId) == 1 then return reply() end
local j = redis.call('HMGET', jobKey, 'timestamp', 'processedOn', 'finishedOn')
if (not j[1]) or j[2] or j[3] then return reply() end
lineUp(jobId, ck, user, ARGV[7])
promoteNext(ck, nextTag(ck, maxTag, out), out)
return reply()
`;

/**
 * reserve: ARGV B · jobId · channelKey · userKey · maxTag · cost · BullMQ wait list key →
 *   {1, tag, the job's place (2 values, as position answers it), promotions…} when its channel is idle (nothing
 *   waiting or released, not paused): the job is lined up and released at once, before BullMQ has it, so the bot adds
 *   it with priority tag instead of parked (no enqueue, changePriority and promote after the add);
 *   {0} otherwise: nothing changed; add the job parked, then enqueue it.
 * B.adding notes the job, at Redis's time, until it starts or is forgotten: for limits.admitGraceMs, repair and a
 * failed release do not take its missing BullMQ hash for a removal. A second call for the same job answers the same.
 */
export const reserveLua = `${helpers}
local jobId, ck, user, maxTag = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
local function reply(tag)
  local p = place(jobId, placeReads(ARGV[7], liveHeads()))
  local res = {1, tag, p[1], p[2] or 0}
  for _, v in ipairs(out) do table.insert(res, v) end
  return res
end
if redis.call('HGET', k('heads'), ck) == jobId then return reply(math.floor(tonumber(redis.call('ZSCORE', k('tags'), ck)) / TWO20)) end
if redis.call('HEXISTS', k('jobs'), jobId) == 1 or redis.call('HEXISTS', k('heads'), ck) == 1
  or redis.call('EXISTS', k('q:') .. ck) == 1 or redis.call('SISMEMBER', k('paused'), ck) == 1 then return {0} end
lineUp(jobId, ck, user, ARGV[6])
redis.call('ZADD', k('adding'), nowMs(), jobId)
promoteNext(ck, nextTag(ck, maxTag, out), out)
local tag = table.remove(out)
table.remove(out) -- promoteNext's last pair is this job's own release: {jobId, tag}
return reply(tag)
`;

/**
 * started: ARGV B · jobId · maxTag [· cost] → {held 0|1, promotions…}. A worker calls it when it takes a job; cost, when
 * given, is the job's estimate now (fresher than the one stored at enqueue).
 * held = 1: the job's channel is paused; it stays first in its channel's line and the worker must park it again.
 */
export const startedLua = `${helpers}
local jobId, maxTag = ARGV[2], tonumber(ARGV[3])
local out = {0}
local entry = redis.call('HGET', k('jobs'), jobId)
if not entry then return out end
local ck = string.sub(entry, 1, string.find(entry, '\\n', 1, true) - 1)
if redis.call('SISMEMBER', k('paused'), ck) == 1 then
  if redis.call('HGET', k('heads'), ck) == jobId then
    redis.call('HDEL', k('heads'), ck)
    redis.call('ZREM', k('tags'), ck)
  end
  return {1}
end
started(jobId, maxTag, out, tonumber(ARGV[4]))
resetIfDrained()
return out
`;

/**
 * forget: ARGV B · jobId · maxTag [· graceMs] → promotions. For jobs removed before they started (cancel, purge).
 * With graceMs: only if the job is not one reserve() lined up less than graceMs ago (its add may still be on its way).
 */
export const forgetLua = `${helpers}
local out = {}
if beingAdded(ARGV[2], tonumber(ARGV[4])) then return out end
forget(ARGV[2], tonumber(ARGV[3]), out)
resetIfDrained()
return out
`;

/** pause: ARGV B · channelKey. resume: ARGV B · channelKey · maxTag → promotions. */
export const pauseLua = `${helpers}
return redis.call('SADD', k('paused'), ARGV[2])
`;

export const resumeLua = `${helpers}
local out = {}
redis.call('SREM', k('paused'), ARGV[2])
promoteNext(ARGV[2], nextTag(ARGV[2], tonumber(ARGV[3]), out), out)
return out
`;

/**
 * repair: ARGV B · BullMQ key prefix ("<prefix>:jobs:") · maxTag · graceMs → promotions.
 * Heals what a process dying mid-way leaves behind: jobs started without the hook, jobs removed without a
 * forget (or reserved and never added: once their reservation is graceMs old), channels left without a head,
 * and heads whose release to BullMQ never happened (still delayed).
 */
export const repairLua = `${helpers}
local jobPrefix, maxTag, graceMs = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for _, ck in ipairs(redis.call('SMEMBERS', k('backlog'))) do
  for _, jobId in ipairs(redis.call('ZRANGE', k('q:') .. ck, 0, -1)) do
    local j = redis.call('HMGET', jobPrefix .. jobId, 'timestamp', 'processedOn', 'finishedOn')
    if not j[1] and beingAdded(jobId, graceMs) then -- reserved, its add still on its way
    elseif (not j[1]) or j[3] then forget(jobId, maxTag, out)
    -- processedOn alone is not enough: a job held by a pause was active once and sits in delayed again
    elseif j[2] and redis.call('LPOS', jobPrefix .. 'active', jobId) then started(jobId, maxTag, out) end
  end
end
for _, ck in ipairs(redis.call('SMEMBERS', k('backlog'))) do
  local head = redis.call('HGET', k('heads'), ck)
  if head then
    if redis.call('ZSCORE', jobPrefix .. 'delayed', head) then
      table.insert(out, head); table.insert(out, math.floor(tonumber(redis.call('ZSCORE', k('tags'), ck)) / TWO20))
    end
  else
    promoteNext(ck, nextTag(ck, maxTag, out), out)
  end
end
resetIfDrained()
return out
`;

/**
 * position: ARGV B · BullMQ wait list key → {0} not waiting with us · {1, position} · {2, place in its channel} (paused).
 * The order BullMQ will dispatch in: a channel whose head has tag t releases its (i+1)-th job at tag t+i;
 * a job with predicted tag T waits behind every job of every channel predicted below T (ties: earlier head first).
 */
export const positionLua = `${helpers}
return place(ARGV[2], placeReads(ARGV[3], liveHeads()))
`;

/**
 * positions: ARGV B · BullMQ wait list key · jobId… → {state, position} per job, flat, each as position answers it;
 * the heads are read once for all of them (the progress relay refreshes every waiting job's position at once).
 */
export const positionsLua = `${helpers}
local at = placeReads(ARGV[2], snapshotHeads())
-- Walking the heads below each job costs O(jobs × heads). Instead: a head h of length L scored score_h adds, to a job
-- scored S, its later jobs k = 1 … L-1 that are due before it, those with score_h + k·2^20 < S (extraAhead's
-- min(L, before) - 1, as before - 1 ≥ k exactly then). So every such predicted score below the largest S goes in one
-- sorted list, and a job's share is a binary search in it, less its own line's (the walk skips its own channel).
local ps, maxS = {}, -1
for i = 3, #ARGV do
  local p = placeStart(ARGV[i], at)
  ps[#ps + 1] = p
  if not p.done and p.S > maxS then maxS = p.S end
end
local due = {}
local hs = at.heads.below(maxS)
for i = 1, #hs, 2 do
  local h, score = hs[i], hs[i + 1]
  if at.paused[h] == nil then
    local last = math.min(at.length(h) - 1, math.floor((maxS - score - 1) / TWO20))
    for n = 1, last do due[#due + 1] = score + n * TWO20 end
  end
end
table.sort(due)
local function dueBelow(S)
  local lo, hi = 0, #due -- binary search: how many are below S
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if due[mid + 1] < S then lo = mid + 1 else hi = mid end
  end
  return lo
end
local out = {}
for _, p in ipairs(ps) do
  if p.done then
    out[#out + 1] = p.done[1]; out[#out + 1] = p.done[2] or 0
  else
    local extra = dueBelow(p.S)
    if p.own then extra = extra - math.max(0, math.min(at.length(p.ck) - 1, math.floor((p.S - p.own - 1) / TWO20))) end
    out[#out + 1] = 1; out[#out + 1] = p.ahead + extra + 1
  end
end
return out
`;
