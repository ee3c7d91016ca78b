// What the bots' core calls around a submission: limits before, fair scheduling at and after enqueue, slot
// release when a job ends, and a periodic repair. One object so the core's edits stay a few lines:
//
//   submit:   gate.admit(jobId, d, request)  →  queue.add(…, { priority: reserved.priority, jobId })  (an idle channel)
//                                          or  queue.add(…, { ...gate.jobOptions(), jobId })  →  gate.enqueued(jobId, d)
//             (anything failing between admit and enqueued: gate.abandon(jobId); a failed add after a reservation
//             also scheduler.forget(jobId))
//   cancel:   job.remove() succeeded  →  gate.removed(jobId)
//   start():  gate.start(events)  (QueueEvents completed/failed → settle the jobs this instance admitted; removed →
//             release; repair every repairIntervalMs)
//   worker:   startOrHold(scheduler, job, token) first thing in the processor (src/scheduling/fair.ts)
//   delivery: the slots are freed first by ledger.startDelivery (src/jobs/ledger.ts), before the result is posted;
//             the completed/failed settle above then finds them free
import type { QueueEvents } from 'bullmq';
import { combinedPreamble, NO_CALL, runCombined, type Redis, type ScriptCall } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import type { Destination, JobRequest } from '../jobs/contract.ts';
import type { JobsQueue } from '../jobs/queue.ts';
import { createFairScheduler, RESERVE_COST_ARG, type FairScheduler, type QueuePlace, type Reservation } from '../scheduling/fair.ts';
import { reserveLua } from '../scheduling/scripts.ts';
import { admitLua as budgetsAdmitLua, budgetAdmission, budgetMessage, costUnitsLua, countLua, releaseLua as budgetsReleaseLua, Usage } from '../accounting/usage.ts';
import { UserError } from '../errors.ts';
import { admissionOf, createLimiter, throwIfDenied, type Limiter } from './limiter.ts';
import { admitLua as limitsAdmitLua, releaseLua as limitsReleaseLua } from './scripts.ts';
import { claimLua, lookupLua as cacheLookupLua } from '../cache/results.ts';

/**
 * The result cache's lookup, then budgets, then the rate limits, then the cache's claim of the request's flight, then
 * the fair scheduler's reservation, in one script (one round trip on a request's way to the queue). Each part is its
 * own module's script, run as a function of its own KEYS and ARGV, in this order:
 *   1. the lookup (when given: no keys, no lookup); if it finds the result cached, or a flight to join, that answer,
 *      and nothing is admitted; with a claim (6) but no lookup, a flight another request leads is joined here too
 *      (claimFlight), and nothing is admitted: a follower takes no rate token (until 2026-12-07 one that joined at the
 *      claim, after the limits' admit, was given its slot and budget back but not its rate tokens);
 *   2. the budgets' admit; if it refuses, that answer;
 *   3. the limits' admit; if that refuses, the budget reservation is given back (4) and the refusal counted (5, the
 *      usage report's "ref"), and that answer;
 *   6. the claim (when given: no keys, no claim): the request leads the flight (one another request led was joined
 *      at 1; should the claim join one all the same, the budget reservation (4) and the slots (7) are given back, and
 *      that answer);
 *   8. the reservation (when given: FairScheduler.reserveCall): an idle channel's job is lined up and released before
 *      it is added. Its cost argument carries usage.fairCostUnitMs in; the cost in units is computed here from the
 *      budgets' estimate, as Usage.costUnits does.
 * ARGV starts with the eight parts' KEYS and ARGV counts, in that order; then their ARGV, in the same order.
 * → {1, budgets' answer (2 values), reservation's answer…} admitted (and leads the flight) · {2, budgets' answer…}
 *   refused by a budget · {3, limits' answer…} refused by a limit · {4, claim's answer…} joined another request's
 *   flight · {5, lookup's answer…} cached, or joined a flight at the lookup.
 * All keys are under queue.prefix: one hash slot in Redis Cluster, where the prefix must be a hash tag.
 */
const admitLua = `${combinedPreamble(8)}
local function cacheLookup(KEYS, ARGV) ${cacheLookupLua} end
local function budgetsAdmit(KEYS, ARGV) ${budgetsAdmitLua} end
local function limitsAdmit(KEYS, ARGV) ${limitsAdmitLua} end
local function budgetsRelease(KEYS, ARGV) ${budgetsReleaseLua} end
local function countRefusal(KEYS, ARGV) ${countLua} end
local function claimFlight(KEYS, ARGV) ${claimLua} end
local function limitsRelease(KEYS, ARGV) ${limitsReleaseLua} end
local function schedReserve(KEYS, ARGV) ${reserveLua} end
local function answer(code, reply) local out = {code} for _, v in ipairs(reply) do table.insert(out, v) end return out end
${costUnitsLua}
if #calls[1][1] > 0 then
  local found = run(1, cacheLookup)
  if found[1] ~= 0 then return answer(5, found) end
end
-- Without a lookup, a flight another request leads is joined before anything is admitted, as the lookup joins it: a
-- follower runs nothing, so it takes no budget, no rate token and no slot (joined after the limits' admit, it kept its
-- rate tokens). After a lookup that found none there is none (one script: nothing changed in between).
if #calls[1][1] == 0 and #calls[6][1] > 0 then
  local leader = redis.call('HGET', calls[6][1][1], 'leader')
  if leader and leader ~= calls[6][2][1] then return answer(4, run(6, claimFlight)) end
end
local budgets = run(2, budgetsAdmit)
if budgets[1] ~= 1 then return answer(2, budgets) end
local limits = run(3, limitsAdmit)
if limits[1] ~= 1 then
  run(4, budgetsRelease)
  run(5, countRefusal)
  return answer(3, limits)
end
if #calls[6][1] > 0 then
  local claim = run(6, claimFlight)
  if claim[1] ~= 1 then
    run(4, budgetsRelease)
    run(7, limitsRelease)
    return answer(4, claim)
  end
end
local admitted = answer(1, budgets)
if #calls[8][1] > 0 then
  local a = calls[8][2]
  a[${RESERVE_COST_ARG}] = costUnits(tonumber(budgets[2]), tonumber(a[${RESERVE_COST_ARG}]))
  for _, v in ipairs(run(8, schedReserve)) do table.insert(admitted, v) end
end
return admitted
`;

/** Runs `calls` as admitLua's eight parts, in one script call (bulk strings as Buffers: a cached PNG comes back as bytes). */
const gateAdmit = (redis: Redis, calls: readonly ScriptCall[]) => runCombined(redis, 'blip3oGateAdmit', admitLua, calls, 'buffers') as Promise<(number | Buffer)[]>;

export interface Admitted {
  estimate: number;
  joined?: string;
  found?: (number | Buffer)[];
  /**
   * Admitted with a request, in a channel that was idle: the job is already released (FairScheduler.reserve); add it
   * with this priority, and call nothing after the add. Undefined: add it with jobOptions(), then call enqueued(). If
   * the add fails, scheduler.forget(jobId) gives the turn back.
   */
  reserved?: Reservation;
}

export interface Gate {
  readonly limiter: Limiter;
  readonly scheduler: FairScheduler;
  /** GPU-second accounting and daily budgets (src/accounting/usage.ts). */
  readonly usage: Usage;
  /**
   * Budgets first (with `request`: its cost is estimated from recent measurements of its kind and options), then the
   * rate limits. Throws UserError('rate_limited') naming the budget or limit; nothing is taken then. Resolves to the
   * estimated GPU-seconds (0 when unknown), which fair scheduling weighs the job by.
   * `claim` (with `request`): the result cache's claim of the request's flight (ResultCache.claimCall), made in the
   * same round trip once admitted. When another request leads that flight, the admission is given back at once and
   * `joined` names the leader's job.
   * `lookup` (with `request`): the result cache's lookup (ResultCache.lookupCall), made first in the same round trip.
   * `found` is its reply (ResultCache.lookupResult reads it): when it found the result cached or a flight to join,
   * nothing was admitted (estimate 0); on a miss it is {0} and admission went on.
   * `reserved` (with `request`): see Admitted.
   */
  admit(jobId: string, destination: Destination, request?: JobRequest, claim?: ScriptCall, lookup?: ScriptCall): Promise<Admitted>;
  /** Options to merge into queue.add: the job is added parked (see FairScheduler.parkedOptions). */
  jobOptions(): { priority: number; delay: number };
  /**
   * `estimate`: the job's estimated GPU-seconds (from admit); it moves its channel's fair-scheduling clock. Resolves to
   * the job's place in the queue (FairScheduler.enqueue).
   */
  enqueued(jobId: string, destination: Destination, estimate?: number): Promise<QueuePlace>;
  /** Admitted but never enqueued (a later step failed): give the slots back. */
  abandon(jobId: string): Promise<void>;
  /** Removed before it ran (cancel, purge): its turn passes on and its slots are freed. */
  removed(jobId: string): Promise<void>;
  start(events: QueueEvents): void;
  stop(): void;
}

/**
 * How long an instance remembers a job it admitted, to settle its slots on the job's completed or failed event. Older
 * ones (still waiting, or whose event was lost) are forgotten at the next repair: their slots are freed by the sweep
 * and by an admission that finds the scope at its cap, as after a lost event.
 */
export const ADMITTED_MEMORY_MS = 3_600_000;

export function createGate(redis: Redis, config: Pick<Config, 'queue' | 'limits' | 'usage'>, queue: JobsQueue): Gate {
  const limiter = createLimiter(redis, config);
  const usage = new Usage(redis, config);
  const scheduler = createFairScheduler(redis, config, queue, { adoptAfterMs: config.limits.admitGraceMs });
  let timer: NodeJS.Timeout | undefined;
  let events: QueueEvents | undefined;
  // Every bot instance reads every job's events; only the instance that admitted a job settles it, so N instances
  // cost one settle per job, not N (issue 19, sixth pass). jobId → when admitted (Date.now()).
  const admitted = new Map<string, number>();
  const settle = ({ jobId }: { jobId: string }) => {
    if (!admitted.delete(jobId)) return;
    void limiter.settle(jobId).catch(() => undefined); // the sweep retries
  };
  /** Removed before it ran (cancel, purge): its slots, its turn and its budget reservation are given back. */
  const removed = (jobId: string) => {
    admitted.delete(jobId);
    return Promise.all([limiter.release(jobId), scheduler.forget(jobId), usage.release(jobId)]);
  };
  const onRemoved = ({ jobId }: { jobId: string }) => void removed(jobId).catch(() => undefined); // the sweep retries

  return {
    limiter,
    scheduler,
    usage,
    async admit(jobId, d, request, claim, lookup) {
      if (!request) {
        await limiter.admitOrThrow(jobId, d);
        admitted.set(jobId, Date.now());
        return { estimate: 0 };
      }
      const cost = request.kind !== 'ask' ? (request.options.count ?? 1) : 1; // N images count as N
      const [code, ...raw] = await gateAdmit(redis, [
        lookup ?? NO_CALL, usage.admitCall(jobId, d, request), limiter.admitCall(jobId, d, cost), usage.releaseCall(jobId), usage.countCall('ref', d),
        claim ?? NO_CALL, limiter.releaseCall(jobId), scheduler.reserveCall(jobId, d, config.usage.fairCostUnitMs),
      ]);
      if (Number(code) === 5) return { estimate: 0, found: raw };
      // Stryker disable next-line ArrayDeclaration: equivalent, `[]` reads as a miss too and submit then admits again, which admission per job id makes a no-op
      const missed = lookup ? { found: [0] } : {};
      const reply = raw.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v));
      if (Number(code) === 4) return { estimate: 0, joined: String(reply[1]), ...missed };
      if (Number(code) === 3) throwIfDenied(admissionOf(reply.map(Number)), d, cost); // a limit refused: always throws
      const b = budgetAdmission(reply);
      if (!b.admitted) {
        const awaiting = b.awaitingMeasurement ? { awaitingMeasurement: true } : {};
        throw new UserError('rate_limited', budgetMessage(b, d), { context: { scope: b.scope, budget: b.budget, used: b.used, inflight: b.inflight, ...awaiting } });
      }
      admitted.set(jobId, Date.now());
      const reserved = await scheduler.reserved(reply.slice(2) as (string | number)[]);
      return { estimate: b.estimate, ...missed, ...(reserved ? { reserved } : {}) };
    },
    jobOptions: () => scheduler.parkedOptions(),
    enqueued: (jobId, d, estimate) => scheduler.enqueue(jobId, d, usage.costUnits(estimate ?? 0)),
    async abandon(jobId) {
      admitted.delete(jobId);
      await Promise.all([limiter.release(jobId), usage.release(jobId)]);
    },
    async removed(jobId) {
      await removed(jobId);
    },
    start(e) {
      events = e;
      e.on('completed', settle);
      e.on('failed', settle);
      e.on('removed', onRemoved);
      const repair = () => {
        const forgetBefore = Date.now() - ADMITTED_MEMORY_MS;
        for (const [jobId, at] of admitted) if (at < forgetBefore) admitted.delete(jobId);
        return Promise.all([limiter.sweep(), scheduler.repair(), usage.sweep()]).catch(() => undefined);
      };
      void repair();
      timer = setInterval(repair, config.limits.repairIntervalMs);
      timer.unref();
    },
    stop() {
      // Stryker disable next-line ConditionalExpression: clearInterval(undefined) does nothing
      if (timer) clearInterval(timer);
      events?.off('completed', settle);
      events?.off('failed', settle);
      events?.off('removed', onRemoved);
    },
  };
}
