// GPU-second accounting and daily budgets, shared by every bot and worker through Redis. See docs/cost.md.
//
//   bot admission:  admit(jobId, d, request) ── one script ──▶ estimate the cost from recent measurements of its
//                   kind/options (per image, times its images); refuse if used today + in flight + estimate > a
//                   budget (channel, user, workspace); else reserve the estimate (in flight) until the job ends
//   worker:         settle(jobId, request, measured) ──▶ add the measured GPU-seconds to today's counters of the
//                   job's channel, user and workspace, per stage; refine the estimate (measured ÷ images); release
//                   the reservation
//   bots:           release(jobId) for jobs removed before they ran; sweep() for reservations whose job vanished
//
// Keys, all under one hash tag (U = "<prefix>:{usage}"); days are UTC day numbers (ms since epoch / 86400000):
//   U:d:<day>      hash  "gs|<scope>|<id>" GPU-seconds · "jobs|…" jobs run · "hits|…" served without a job
//                        (cache, joined) · "ref|…" refusals · "stage|<kind>|<stage>" GPU-seconds per stage
//   U:budgets      hash  "<scope>|<id>" → GPU-seconds per day, set by admins at runtime (wins over usage.budgets); a
//                        user's as "member|<platform>:<workspace>:<user>" (their server's only), over "user|…" if any
//   U:inflight     hash  "<scope>|<id>" → estimated GPU-seconds of jobs admitted and not finished
//   U:resv         hash  jobId → "estimate\nchannel\nuser\nworkspace\nadmittedAtMs[\nkind]"  (released exactly once;
//                        "kind" when no measurement of its kind gave an estimate: admitLua lets one such job per kind
//                        be in flight in a budgeted scope)
//   U:est          hash  "<kind>|<options signature>" → seconds of one image (moving average) · "<kind>|unit" →
//                        seconds per step of one image (an /ask is one "image")
//   U:settled:<id> string  a job already counted (a re-run after a crash counts nothing twice); kept as long as a
//                          finished job is (every later settle of the job comes within that: docs/cost.md)
import { NOW_MS_LUA, type Redis, type ScriptCall } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import { DESCRIBE_PROMPTS, QueueNames, workspaceOf, workspaceSubject, type Destination, type JobRequest, type JobResult } from '../jobs/contract.ts';
import { durationPhrase, scopeIds, type Scope, type ScopeIds } from '../limits/limiter.ts';

export const SCOPES: readonly Scope[] = ['channel', 'user', 'workspace'];
/** The largest daily budget an admin may set (about 31 GPU-years a day): more is a typo, not a budget. */
export const MAX_BUDGET_SECONDS = 1_000_000_000;
/** The usage report's days when the admin names none: a week, or every day kept when fewer are. */
export const defaultReportDays = (retainDays: number) => Math.min(7, retainDays);
/**
 * Where a budget override is kept: a scope's id, or 'member' for a user's budget in one server or workspace (the
 * admin commands set a user's budget so: an admin of one server must not change what a user may use in another).
 */
export type BudgetField = Scope | 'member';
export const DAY_MS = 86_400_000;

/** Stages that run on the accelerator (everything but waiting in the queue). */
const COMPUTE_STAGES = new Set(['loading', 'conditioning', 'features', 'decoding', 'encoding', 'answering']);

/** GPU-seconds of a finished job: its compute stages, or the whole run when it reported none (a failure). */
export function measuredSeconds(result: Pick<JobResult, 'timingsMs'>, ranMs: number): number {
  const stages = Object.entries(result.timingsMs).filter(([s]) => COMPUTE_STAGES.has(s));
  const ms = stages.length > 0 ? stages.reduce((a, [, v]) => a + v, 0) : ranMs;
  return Math.max(0, ms) / 1000;
}

/**
 * What a cost estimate is keyed by: the kind and the options that change the amount of work of one image, the steps
 * one image runs, and how many images the job makes (`count`; an /ask is 1, a /describe its answers). Estimates are
 * learned and kept per image (settle divides the measured seconds by `images`) and multiplied by `images` wherever a
 * job's estimate is used.
 */
export function costSignature(request: JobRequest): { sig: string; units: number; images: number } {
  // A /describe answers DESCRIBE_PROMPTS times: as many answers of an /ask, so each is estimated and learned as one.
  if (request.kind === 'ask') return { sig: `ask|${request.options.maxNewTokens}`, units: 1, images: request.mode === 'describe' ? DESCRIBE_PROMPTS : 1 };
  const o = request.options;
  return { sig: `${request.kind}|${o.ditSteps}x${o.decoderSteps}|${o.aspect}|${o.guidance > 0 ? 'cfg' : 'nocfg'}`, units: o.ditSteps + o.decoderSteps, images: o.count ?? 1 };
}

/**
 * A user within a workspace ("discord:<guild>:<user>"): the usage report's user rows, so an admin sees only the
 * people of their own server or workspace, and the budget an admin sets for a user (it holds in that server or
 * workspace only; the configured user budget is platform-wide, like the rate limits', and counts their use everywhere).
 */
export const memberId = (d: Destination) => `${d.platform}:${workspaceOf(d)}:${d.userId}`;

const NOW = `${NOW_MS_LUA}\nlocal now = nowMs()\n`;

const RELEASE = `
local function release(resv, inflight, jobId)
  local r = redis.call('HGET', resv, jobId)
  if not r then return 0 end
  local parts = {}
  for p in string.gmatch(r, '[^\\n]+') do table.insert(parts, p) end
  local est = tonumber(parts[1])
  local scopes = {'channel', 'user', 'workspace'}
  for s = 1, 3 do
    local f = scopes[s] .. '|' .. parts[s + 1]
    local left = tonumber(redis.call('HINCRBYFLOAT', inflight, f, -est))
    if left <= 0.0005 then redis.call('HDEL', inflight, f) end
  end
  redis.call('HDEL', resv, jobId)
  return 1
end
`;

/**
 * admit: KEYS day budgets inflight resv est · ARGV jobId · channel user workspace ids · default budgets c u w ·
 * signature · unit key · units · dayTtlSeconds · member id · images · kind
 * → {1, estimate} admitted (or already admitted) · {0, scope 1|2|3, used, budget, estimate, in flight, ms until the day
 * ends, awaiting measurement 1|0} refused: `used` is what was measured today, `in flight` the estimates of its jobs
 * queued or running (the two that `budget show` lists), the day's end by Redis's clock. The estimate is the job's: the
 * per-image estimate times its images (what the reservation holds and fair scheduling weighs).
 * A kind no measurement covers yet (neither its options nor its per-step average: the first after a fresh start, or a
 * new kind) is estimated 0, and a budget cannot hold what it cannot estimate; so in a scope with a budget one such job
 * of a kind may be in flight at a time (its reservation says so, `…\nkind`), and the next is refused with awaiting
 * measurement 1 until it ends: a scope overruns by at most one job per kind before the first of that kind is
 * measured. Checked after the budgets, so a scope that is spent says so; it reads every reservation, only while the
 * kind has no estimate and some scope a budget.
 * A refusal is counted ("ref") in all three scopes and the member, as a rate limit's is (countLua).
 * The day key is computed here from Redis TIME (ARGV carries the key prefix), so every host shares one clock.
 */
export const admitLua = `${NOW}${RELEASE}
local jobId = ARGV[1]
local budgets, inflight, resv = KEYS[2], KEYS[3], KEYS[4]
local day = KEYS[1] .. math.floor(now / 86400000)
local kind = ARGV[14]
local est = tonumber(redis.call('HGET', KEYS[5], ARGV[8]))
if not est then
  local perUnit = tonumber(redis.call('HGET', KEYS[5], ARGV[9]))
  est = perUnit and perUnit * tonumber(ARGV[10])
end
local unmeasured = est == nil -- no request of this kind has been measured yet
est = (est or 0) * tonumber(ARGV[13])
if redis.call('HEXISTS', resv, jobId) == 1 then return {1, tostring(est)} end
local scopes = {'channel', 'user', 'workspace'}
local checked = {} -- per scope with a budget: {measured, in flight, budget}
local function refuse(s, awaitingMeasurement)
  for t = 1, 3 do redis.call('HINCRBY', day, 'ref|' .. scopes[t] .. '|' .. ARGV[1 + t], 1) end
  redis.call('HINCRBY', day, 'ref|member|' .. ARGV[12], 1)
  redis.call('EXPIRE', day, tonumber(ARGV[11]))
  local c = checked[s]
  return {0, s, tostring(c[1]), tostring(c[3]), tostring(est), tostring(c[2]), 86400000 - now % 86400000, awaitingMeasurement}
end
for s = 1, 3 do
  local f = scopes[s] .. '|' .. ARGV[1 + s]
  -- a user's budget set by an admin holds in their server or workspace only ("member|…"), over a platform-wide one
  local member = s == 2 and tonumber(redis.call('HGET', budgets, 'member|' .. ARGV[12])) or nil
  local budget = member or tonumber(redis.call('HGET', budgets, f)) or tonumber(ARGV[4 + s])
  if budget > 0 then
    local measured = tonumber(redis.call('HGET', day, 'gs|' .. f)) or 0
    local flying = tonumber(redis.call('HGET', inflight, f)) or 0
    checked[s] = {measured, flying, budget}
    local used = measured + flying
    if used >= budget or used + est > budget then return refuse(s, 0) end
  end
end
-- Unmeasured, this job reserves 0: in a scope with a budget it may run only while no other job of its kind admitted
-- unmeasured is in flight there (that job's run gives the estimate the next ones reserve).
if unmeasured and next(checked) then
  local held = redis.call('HGETALL', resv)
  for i = 2, #held, 2 do
    local parts = {}
    for p in string.gmatch(held[i], '[^\\n]+') do table.insert(parts, p) end
    if parts[6] == kind then
      for s = 1, 3 do
        if checked[s] and parts[s + 1] == ARGV[1 + s] then return refuse(s, 1) end
      end
    end
  end
end
for s = 1, 3 do redis.call('HINCRBYFLOAT', inflight, scopes[s] .. '|' .. ARGV[1 + s], est) end
local record = est .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4] .. '\\n' .. now
redis.call('HSET', resv, jobId, unmeasured and (record .. '\\n' .. kind) or record)
return {1, tostring(est)}
`;

/**
 * settle: KEYS dayPrefix inflight resv est settled · ARGV jobId seconds channel user workspace signature unitKey
 * units alpha dayTtlSeconds settledTtlSeconds kind memberId images learn(1|0) then stage/seconds pairs → 1 counted ·
 * 0 already counted. The counters get the job's seconds; the estimates learn them per image (seconds ÷ images), from a
 * run that finished only (learn 1): a failed or cancelled one stopped part way, or ran to a timeout, and says nothing
 * of what such a request costs.
 */
export const settleLua = `${NOW}${RELEASE}
release(KEYS[3], KEYS[2], ARGV[1])
if redis.call('SET', KEYS[5], '1', 'NX', 'EX', tonumber(ARGV[11])) == false then return 0 end
local day = KEYS[1] .. math.floor(now / 86400000)
local seconds = tonumber(ARGV[2])
local scopes = {'channel', 'user', 'workspace'}
for s = 1, 3 do
  local f = scopes[s] .. '|' .. ARGV[2 + s]
  redis.call('HINCRBYFLOAT', day, 'gs|' .. f, seconds)
  redis.call('HINCRBY', day, 'jobs|' .. f, 1)
end
redis.call('HINCRBYFLOAT', day, 'gs|member|' .. ARGV[13], seconds)
redis.call('HINCRBY', day, 'jobs|member|' .. ARGV[13], 1)
for i = 16, #ARGV, 2 do redis.call('HINCRBYFLOAT', day, 'stage|' .. ARGV[12] .. '|' .. ARGV[i], tonumber(ARGV[i + 1])) end
redis.call('EXPIRE', day, tonumber(ARGV[10]))
if seconds > 0 and ARGV[15] == '1' then
  local alpha = tonumber(ARGV[9])
  local function ema(field, value)
    local old = tonumber(redis.call('HGET', KEYS[4], field))
    redis.call('HSET', KEYS[4], field, tostring(old and (alpha * value + (1 - alpha) * old) or value))
  end
  local perImage = seconds / tonumber(ARGV[14])
  ema(ARGV[6], perImage)
  ema(ARGV[7], perImage / tonumber(ARGV[8]))
end
return 1
`;

/** release: KEYS resv inflight · ARGV jobId → 1 if this call released the reservation. */
export const releaseLua = `${RELEASE}
return release(KEYS[1], KEYS[2], ARGV[1])
`;

/**
 * sweep: KEYS resv inflight · ARGV jobKeyPrefix graceMs → reservations released: those whose job BullMQ finished, or
 * whose job hash is gone once graceMs has passed since admission. "Passed" is read on Redis's clock, the one admit
 * wrote the admission time with, so a host whose own clock runs ahead frees nothing early.
 */
export const sweepLua = `${NOW}${RELEASE}
local all = redis.call('HGETALL', KEYS[1])
local graceMs = tonumber(ARGV[2])
local freed = 0
for i = 1, #all, 2 do
  local parts = {}
  for p in string.gmatch(all[i + 1], '[^\\n]+') do table.insert(parts, p) end
  local admittedAt = tonumber(parts[5]) or 0
  local f = redis.call('HMGET', ARGV[1] .. all[i], 'finishedOn', 'timestamp')
  if f[1] or ((not f[2]) and now - admittedAt > graceMs) then freed = freed + release(KEYS[1], KEYS[2], all[i]) end
end
return freed
`;

/** count: KEYS dayPrefix · ARGV field-kind ids c u w member · dayTtlSeconds: one served-without-a-job or refusal per scope. */
export const countLua = `${NOW}
local day = KEYS[1] .. math.floor(now / 86400000)
local scopes = {'channel', 'user', 'workspace', 'member'}
for s = 1, 4 do redis.call('HINCRBY', day, ARGV[1] .. '|' .. scopes[s] .. '|' .. ARGV[1 + s], 1) end
redis.call('EXPIRE', day, tonumber(ARGV[6]))
return 1
`;

interface UsageCommands {
  blip3oUsageAdmit(...args: (string | number | Buffer)[]): Promise<(number | string)[]>;
  blip3oUsageSettle(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oUsageRelease(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oUsageCount(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oUsageSweep(...args: (string | number | Buffer)[]): Promise<number>;
}

function defineCommands(redis: Redis): Redis & UsageCommands {
  const r = redis as Redis & Partial<UsageCommands>;
  // Stryker disable next-line ConditionalExpression: defining the commands again on every call defines the same scripts
  if (typeof r.blip3oUsageAdmit !== 'function') {
    redis.defineCommand('blip3oUsageAdmit', { numberOfKeys: 5, lua: admitLua });
    redis.defineCommand('blip3oUsageSettle', { numberOfKeys: 5, lua: settleLua });
    redis.defineCommand('blip3oUsageRelease', { numberOfKeys: 2, lua: releaseLua });
    redis.defineCommand('blip3oUsageCount', { numberOfKeys: 1, lua: countLua });
    redis.defineCommand('blip3oUsageSweep', { numberOfKeys: 2, lua: sweepLua });
  }
  return r as Redis & UsageCommands;
}

/**
 * A refusal's numbers, in GPU-seconds: `used` measured today in the refusing scope, `inflight` the estimates of its jobs
 * queued or running, `estimate` this request's; `resetsInMs` until the UTC day ends by Redis's clock.
 * `awaitingMeasurement`: the scope has room, but no request of this kind has been measured yet (estimate 0) and one
 * such is queued or running there already; this one may come once that has ended (admitLua).
 */
export type BudgetAdmission =
  | { admitted: true; estimate: number }
  | { admitted: false; scope: Scope; used: number; budget: number; estimate: number; inflight: number; resetsInMs: number; awaitingMeasurement?: true };

/** The largest fair-scheduling cost of one job, in units of usage.fairCostUnitMs. */
export const MAX_COST_UNITS = 100_000;

/** Usage.costUnits as a Lua function costUnits(estimateSeconds, unitMs), for a script that has the estimate itself. */
export const costUnitsLua = `local function costUnits(seconds, unitMs) return math.min(${MAX_COST_UNITS}, math.max(1, math.floor(seconds * 1000 / unitMs + 0.5))) end`;

/** What admitLua answered. */
export function budgetAdmission(res: readonly (number | string)[]): BudgetAdmission {
  if (Number(res[0]) === 1) return { admitted: true, estimate: Number(res[1]) };
  return {
    admitted: false, scope: SCOPES[Number(res[1]) - 1]!, used: Number(res[2]), budget: Number(res[3]), estimate: Number(res[4]),
    inflight: Number(res[5]), resetsInMs: Number(res[6]), ...(Number(res[7]) === 1 ? { awaitingMeasurement: true as const } : {}),
  };
}

/** One row of a usage report: a channel or user over some days. */
export interface UsageRow {
  id: string;
  gpuSeconds: number;
  jobs: number;
  hits: number;
  refusals: number;
}

type UsageConfig = Pick<Config, 'queue' | 'usage' | 'limits'>;

/** The day hash's counters a report row sums (other fields, such as a newer version's, are left out). */
const ROW_COUNTERS = { gs: 'gpuSeconds', jobs: 'jobs', hits: 'hits', ref: 'refusals' } as const;

export class Usage {
  private readonly r: Redis & UsageCommands;
  readonly U: string;

  constructor(
    private readonly redis: Redis,
    private readonly config: UsageConfig,
  ) {
    this.r = defineCommands(redis);
    this.U = `${config.queue.prefix}:{usage}`;
  }

  private get dayTtl(): number {
    return this.config.usage.retainDays * 86_400;
  }
  dayKey(day: number): string {
    return `${this.U}:d:${day}`;
  }

  /** Check the three budgets and reserve the estimate; a request already admitted is admitted again (duplicate). */
  async admit(jobId: string, d: Destination, request: JobRequest): Promise<BudgetAdmission> {
    const { keys, args } = this.admitCall(jobId, d, request);
    return budgetAdmission(await this.r.blip3oUsageAdmit(...keys, ...args));
  }

  /** admitLua's keys and arguments (src/limits/gate.ts runs it together with the rate limits, in one script). */
  admitCall(jobId: string, d: Destination, request: JobRequest): ScriptCall {
    const ids = scopeIds(d);
    const b = this.config.usage.budgets;
    const { sig, units, images } = costSignature(request);
    return {
      keys: [`${this.U}:d:`, `${this.U}:budgets`, `${this.U}:inflight`, `${this.U}:resv`, `${this.U}:est`],
      args: [jobId, ids.channel, ids.user, ids.workspace, b.channel, b.user, b.workspace, sig, `${request.kind}|unit`, units, this.dayTtl, memberId(d), images, request.kind],
    };
  }

  /** releaseLua's keys and arguments. */
  releaseCall(jobId: string): ScriptCall {
    return { keys: [`${this.U}:resv`, `${this.U}:inflight`], args: [jobId] };
  }

  /** countLua's keys and arguments. */
  countCall(what: 'hits' | 'ref', d: Destination): ScriptCall {
    const ids = scopeIds(d);
    return { keys: [`${this.U}:d:`], args: [what, ids.channel, ids.user, ids.workspace, memberId(d), this.dayTtl] };
  }

  /**
   * The estimated GPU-seconds of a request from recent measurements of its kind and options: one image's, times its
   * images (0 when unknown). The same as admitLua's.
   */
  async estimate(request: JobRequest): Promise<number> {
    const { sig, units, images } = costSignature(request);
    const [exact, perUnit] = await this.redis.hmget(`${this.U}:est`, sig, `${request.kind}|unit`);
    if (exact !== null) return Number(exact) * images;
    // Stryker disable next-line ConditionalExpression: equivalent, Number(null) * units is 0 too
    return perUnit !== null ? Number(perUnit) * units * images : 0;
  }

  /** An estimate as fair scheduling's cost: whole units of usage.fairCostUnitMs, at least 1 (costUnitsLua in Lua). */
  costUnits(estimateSeconds: number): number {
    return Math.min(MAX_COST_UNITS, Math.max(1, Math.round((estimateSeconds * 1000) / this.config.usage.fairCostUnitMs)));
  }

  /**
   * Count an ended job's measured GPU-seconds (once per job id) and release its reservation; a succeeded one's also
   * refine the estimates.
   */
  async settle(request: JobRequest, result: Pick<JobResult, 'timingsMs' | 'status'>, ranMs: number): Promise<boolean> {
    const { keys, args } = this.settleCall(request, result, ranMs);
    return (await this.r.blip3oUsageSettle(...keys, ...args)) === 1;
  }

  /** settleLua's keys and arguments (worker/after-job.ts runs it with the cache's put and close, in one script). */
  settleCall(request: JobRequest, result: Pick<JobResult, 'timingsMs' | 'status'>, ranMs: number): ScriptCall {
    const ids = scopeIds(request.destination);
    const seconds = measuredSeconds(result, ranMs);
    const { sig, units, images } = costSignature(request);
    const stages = Object.entries(result.timingsMs).filter(([s]) => COMPUTE_STAGES.has(s)).flatMap(([s, ms]) => [s, ms / 1000]);
    const settledTtl = Math.max(this.config.queue.keepFailedSeconds, this.config.queue.keepCompletedSeconds);
    return {
      keys: [`${this.U}:d:`, `${this.U}:inflight`, `${this.U}:resv`, `${this.U}:est`, `${this.U}:settled:${request.id}`],
      args: [
        request.id, seconds, ids.channel, ids.user, ids.workspace, sig, `${request.kind}|unit`, Math.max(1, units),
        this.config.usage.estimateSmoothing, this.dayTtl, settledTtl, request.kind, memberId(request.destination), images,
        result.status === 'succeeded' ? 1 : 0, ...stages,
      ],
    };
  }

  /** The job will not run (removed, abandoned): give its estimate back. True only for the call that released it. */
  async release(jobId: string): Promise<boolean> {
    const { keys, args } = this.releaseCall(jobId);
    return (await this.r.blip3oUsageRelease(...keys, ...args)) === 1;
  }

  /** A request served without a job (cache hit, joined flight) or refused by a rate limit: counted for the report. */
  async count(what: 'hits' | 'ref', d: Destination): Promise<void> {
    const { keys, args } = this.countCall(what, d);
    await this.r.blip3oUsageCount(...keys, ...args);
  }

  /**
   * Release reservations whose job finished or vanished without a settle (a process died mid-way): finished in
   * BullMQ, or its hash gone once limits.admitGraceMs has passed since admission, by Redis's clock (sweepLua, one
   * script). Returns how many.
   */
  async sweep(): Promise<number> {
    const jobPrefix = `${this.config.queue.prefix}:${QueueNames.jobs}:`;
    return this.r.blip3oUsageSweep(`${this.U}:resv`, `${this.U}:inflight`, jobPrefix, this.config.limits.admitGraceMs);
  }

  /** Today's UTC day number by Redis's clock, the one the scripts file counters under (not this host's). */
  private async redisDay(): Promise<number> {
    const [seconds] = await this.redis.time();
    return Math.floor(Number(seconds) / 86_400);
  }

  /**
   * Budgets in force for a destination's three scopes, and where each comes from. The user's is the one an admin set
   * for them in this server or workspace (BudgetField 'member'), else a platform-wide one, else the default.
   */
  async budgets(d: Destination): Promise<Record<Scope, { seconds: number; source: 'default' | 'redis' }>> {
    const ids = scopeIds(d);
    const [member, ...set] = await this.redis.hmget(`${this.U}:budgets`, `member|${memberId(d)}`, ...SCOPES.map((s) => `${s}|${ids[s]}`));
    const out = {} as Record<Scope, { seconds: number; source: 'default' | 'redis' }>;
    SCOPES.forEach((s, i) => {
      const v = s === 'user' ? (member ?? set[i]) : set[i];
      out[s] = v != null ? { seconds: Number(v), source: 'redis' } : { seconds: this.config.usage.budgets[s], source: 'default' };
    });
    return out;
  }

  /** `member`: a user's budget in one server or workspace (`id` = memberId), what /blip3o-admin budget sets for a user. */
  async setBudget(scope: BudgetField, id: string, seconds: number): Promise<void> {
    await this.redis.hset(`${this.U}:budgets`, `${scope}|${id}`, String(seconds));
  }

  async resetBudget(scope: BudgetField, id: string): Promise<void> {
    await this.redis.hdel(`${this.U}:budgets`, `${scope}|${id}`);
  }

  /** GPU-seconds used today (measured) and in flight (estimates of admitted jobs) per scope. */
  async today(d: Destination): Promise<Record<Scope, { used: number; inflight: number }>> {
    const ids = scopeIds(d);
    const day = await this.redisDay();
    const fields = SCOPES.map((s) => `${s}|${ids[s]}`);
    const [used, inflight] = await Promise.all([
      this.redis.hmget(this.dayKey(day), ...fields.map((f) => `gs|${f}`)),
      this.redis.hmget(`${this.U}:inflight`, ...fields),
    ]);
    const out = {} as Record<Scope, { used: number; inflight: number }>;
    SCOPES.forEach((s, i) => (out[s] = { used: Number(used[i] ?? 0), inflight: Number(inflight[i] ?? 0) }));
    return out;
  }

  /**
   * Usage per channel and per user over the last `days` UTC days (today included) in one workspace (`wsPrefix`,
   * "discord:<guild>:"), most GPU-seconds first; user rows carry the platform's user id. Also the workspace's total per day.
   */
  async report(days: number, wsPrefix: string): Promise<{ channels: UsageRow[]; users: UsageRow[]; perDay: { day: number; gpuSeconds: number }[] }> {
    const channelPrefix = wsPrefix;
    const today = await this.redisDay();
    const rows = { channel: new Map<string, UsageRow>(), user: new Map<string, UsageRow>() };
    const perDay: { day: number; gpuSeconds: number }[] = [];
    const workspaceField = `|workspace|${channelPrefix.replace(/:$/, '')}`;
    for (let day = today - days + 1; day <= today; day++) {
      const h = await this.redis.hgetall(this.dayKey(day));
      perDay.push({ day, gpuSeconds: Number(h[`gs${workspaceField}`] ?? 0) });
      for (const [field, value] of Object.entries(h)) {
        const [what, scope, ...rest] = field.split('|');
        // Stryker disable next-line StringLiteral: equivalent, no platform id holds a '|'
        const id = rest.join('|');
        const counter = Object.hasOwn(ROW_COUNTERS, what!) ? ROW_COUNTERS[what as keyof typeof ROW_COUNTERS] : undefined;
        // Stryker disable next-line ConditionalExpression: equivalent, user and workspace ids ("discord:<user>", "discord:<guild>") never start with "<platform>:<workspace>:"
        if (!counter || (scope !== 'channel' && scope !== 'member') || !id.startsWith(channelPrefix)) continue;
        const map = scope === 'channel' ? rows.channel : rows.user;
        const key = scope === 'channel' ? id : id.slice(channelPrefix.length);
        const row = map.get(key) ?? { id: key, gpuSeconds: 0, jobs: 0, hits: 0, refusals: 0 };
        row[counter] += Number(value);
        map.set(key, row);
      }
    }
    const sorted = (m: Map<string, UsageRow>) => [...m.values()].sort((a, b) => b.gpuSeconds - a.gpuSeconds || b.jobs - a.jobs || a.id.localeCompare(b.id));
    return { channels: sorted(rows.channel), users: sorted(rows.user), perDay };
  }
}

export type { Scope, ScopeIds };

// ---- what the user reads --------------------------------------------------------------------------------

const round = (n: number) => (n >= 10 ? Math.round(n) : Math.round(n * 10) / 10);
/** "about 45", "about 0.3"; an estimate under 0.05 s is "less than 0.1", never "about 0". */
const about = (seconds: number) => (round(seconds) > 0 ? `about ${round(seconds)}` : 'less than 0.1');

/**
 * "This channel has used 300 of its 600 GPU-seconds today, and jobs queued or running need about 280 more; it resets at
 * 00:00 UTC, in 3 h 12 min. This request needs about 45." A request that alone needs more than the budget is told
 * so: no reset lets it pass. A request whose cost is not known yet (estimate 0) is told nothing of what it needs; one
 * refused while the first of its kind is being measured is told to send it again once that has finished.
 */
export function budgetMessage(a: Extract<BudgetAdmission, { admitted: false }>, d: Destination): string {
  const place = workspaceSubject(d);
  const plural = a.scope === 'workspace' && place.plural;
  const has = { channel: 'This channel has', user: 'You have', workspace: `${place.subject} ${plural ? 'have' : 'has'}` }[a.scope];
  if (a.awaitingMeasurement) {
    return `${has} a budget of ${round(a.budget)} GPU-seconds a day, and what a request of this kind costs is known only once one has run: the first is queued or running now. Please send yours again when it has finished.`;
  }
  if (a.estimate > a.budget) {
    const whose = { channel: "this channel's", user: 'your', workspace: place.possessive }[a.scope];
    const advice = 'ask for fewer images or steps, or ask an admin for a larger budget';
    return `This request needs ${about(a.estimate)} GPU-seconds, more than ${whose} whole budget of ${round(a.budget)} a day; ${advice}.`;
  }
  const its = a.scope === 'user' ? 'your' : plural ? 'their' : 'its';
  const queued = round(a.inflight) > 0 ? `, and jobs queued or running need about ${round(a.inflight)} more` : '';
  const need = a.estimate > 0 ? ` This request needs ${about(a.estimate)}.` : '';
  return `${has} used ${round(a.used)} of ${its} ${round(a.budget)} GPU-seconds today${queued}; it resets at 00:00 UTC, in ${durationPhrase(a.resetsInMs)}.${need}`;
}
