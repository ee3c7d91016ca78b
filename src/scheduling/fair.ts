// Fair dispatch on top of BullMQ OSS (no groups): start-time fair queueing, realised with BullMQ priorities.
// See docs/limits.md for the whole design; in short:
//
//   submit ──reserve(jobId, channel, user)──▶ sched Lua: an idle channel's job is lined up and released at once:
//          ──add(priority tag = max(V + 1, F))──▶ BullMQ                 (V = tag of the last job started; F = the
//                                                   channel's finish tag, kept from its last start while ahead of V)
//   otherwise (the channel has jobs waiting, or is paused):
//   submit ──add(parked: delayed 30 days, priority MAX)──▶ BullMQ        (nothing a worker can take yet)
//          ──enqueue(jobId, channel, user)──▶ sched Lua: line up in the channel (users round-robin);
//                                             if the channel has no job released, release its first one:
//   release = changePriority(tag) + promote
//   worker takes the lowest tag ──started(jobId)──▶ V = its tag; release the channel's next job at
//                                                   max(V + 1, its tag + its estimated cost)  (GPU time, not jobs),
//                                                   or keep that finish tag F for its next job if none waits yet
//   cancel ──forget(jobId)──▶ a released job's tag passes to the channel's next job; the user's round goes back
//
// At any moment each channel has at most one job released, so BullMQ's own priority order (lowest first,
// FIFO among equals) becomes round-robin across channels: a channel with 100 jobs waiting has one in the
// running for the next slot, like every other channel. Within a channel, jobs are lined up by per-user
// rounds (a user's n-th waiting job goes in round n), so users in one channel also take turns.
import { DelayedError, Job, type Queue } from 'bullmq';
import { isRedisConnectionError, type Redis, type ScriptCall } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import { channelKey, QueueNames, type Destination } from '../jobs/contract.ts';
import { enqueueLua, forgetLua, pauseLua, positionLua, positionsLua, repairLua, reserveLua, resumeLua, startedLua } from './scripts.ts';

/** BullMQ's largest priority; parked jobs carry it, released ones carry a smaller tag. */
export const MAX_PRIORITY = 2_097_151; // BullMQ 6 validates 0 ≤ priority ≤ 2^21 - 1
/**
 * Parked jobs sit in BullMQ's delayed set this long. Only a safety net: the scheduler releases them; should all of
 * its bookkeeping be lost, BullMQ itself releases them after this (in arrival order, no longer fair).
 */
export const PARK_MS = 30 * 24 * 3600 * 1000;

export interface Promotion {
  jobId: string;
  priority: number;
}

export type QueuePlace =
  | { state: 'queued'; position: number }
  /** The channel is paused; `position` is the place in that channel's own line. */
  | { state: 'held'; position: number }
  /** Not waiting with the scheduler: running, finished, removed or unknown. */
  | { state: 'none' };

export interface ChannelQueue {
  channelKey: string;
  queued: number;
  paused: boolean;
  /** The job released to BullMQ for this channel and its priority, if any. */
  head?: { jobId: string; priority: number };
}

/** Where reserveCall()'s args hold the job's cost (Lua's ARGV index, from 1). */
export const RESERVE_COST_ARG = 6;

/** A job reserve() lined up and released before it exists in BullMQ: add it with this priority, not parked. */
export interface Reservation {
  priority: number;
  place: QueuePlace;
}

export interface FairScheduler {
  /** Job options for `queue.add`: the job starts parked, so nothing runs before `enqueue` lines it up. */
  parkedOptions(): { priority: number; delay: number };
  /**
   * Before `queue.add`: when the job's channel is idle (nothing waiting or released, not paused), line the job up and
   * release it at once, so it is added with the returned priority and needs no enqueue (nor changePriority and promote
   * after it). Undefined otherwise: add it parked, then enqueue. If the add fails, forget(jobId) gives the turn back.
   */
  reserve(jobId: string, destination: Destination, cost?: number): Promise<Reservation | undefined>;
  /**
   * reserve()'s script as a part of a larger one (src/limits/gate.ts's admission), then its reply read by reserved().
   * `cost`: as reserve's; gate.ts's script may write the cost it computes into args[RESERVE_COST_ARG].
   */
  reserveCall(jobId: string, destination: Destination, cost?: number): ScriptCall;
  reserved(reply: readonly (string | number)[]): Promise<Reservation | undefined>;
  /**
   * Line the job up (after `queue.add` with parkedOptions). Duplicate calls are harmless. `cost`: the job's estimated
   * GPU time in whole units (≥ 1, default 1): when it starts, its channel's next job is released that much later on
   * the virtual clock, so channels share the workers by GPU time, not by job count. Resolves to the job's place, as
   * position() would answer it right after (same script, so the reply to the user costs no second round trip).
   */
  enqueue(jobId: string, destination: Destination, cost?: number): Promise<QueuePlace>;
  /**
   * A worker took the job: advance the clock and release the channel's next job. `held`: the channel is paused, and
   * the worker must park the job again (job.moveToDelayed(Date.now() + PARK_MS, token) then throw DelayedError).
   */
  started(jobId: string, cost?: number): Promise<{ held: boolean }>;
  /** The job was removed before it started (cancel, purge): give its turn to the next job of its channel. */
  forget(jobId: string): Promise<void>;
  pause(channelKey: string): Promise<void>;
  resume(channelKey: string): Promise<void>;
  position(jobId: string): Promise<QueuePlace>;
  /** position() of each job, in one round trip. */
  positions(jobIds: readonly string[]): Promise<QueuePlace[]>;
  /** Heal what a process dying mid-way left behind; safe to run at any time from any process. */
  repair(): Promise<void>;
  /** Waiting jobs per channel, and whether each is paused. */
  channels(): Promise<ChannelQueue[]>;
  /** Jobs still waiting (not started), with their channel and user keys. */
  waitingJobs(): Promise<{ jobId: string; channelKey: string; userKey: string }[]>;
  isPaused(channelKey: string): Promise<boolean>;
}

interface SchedulerCommands {
  blip3oSchedEnqueue(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedReserve(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedStarted(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedForget(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedPause(...args: (string | number)[]): Promise<number>;
  blip3oSchedResume(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedRepair(...args: (string | number)[]): Promise<(string | number)[]>;
  blip3oSchedPosition(...args: (string | number)[]): Promise<number[]>;
  blip3oSchedPositions(...args: (string | number)[]): Promise<number[]>;
}

function defineCommands(redis: Redis): Redis & SchedulerCommands {
  const r = redis as Redis & Partial<SchedulerCommands>;
  // Stryker disable next-line ConditionalExpression,StringLiteral: defining the commands again on every call defines the same scripts
  if (typeof r.blip3oSchedPositions !== 'function') {
    const scripts = { Enqueue: enqueueLua, Reserve: reserveLua, Started: startedLua, Forget: forgetLua, Pause: pauseLua, Resume: resumeLua, Repair: repairLua, Position: positionLua, Positions: positionsLua };
    for (const [name, lua] of Object.entries(scripts)) redis.defineCommand(`blip3oSched${name}`, { numberOfKeys: 1, lua });
  }
  return r as Redis & SchedulerCommands;
}

/** The user a job is scheduled under inside its channel (the same id the limiter uses). */
export const userKeyOf = (d: Destination) => `${d.platform}:${d.userId}`;

export interface SchedulerOptions {
  /** Largest priority handed out before tags are rebased (tests lower it). @defaultValue MAX_PRIORITY */
  maxPriority?: number;
  /**
   * repair() adopts a parked job that was never lined up (its bot died between queue.add and enqueue) once it
   * is this old, in milliseconds; and forgets a reserved job that never reached BullMQ (its bot died between reserve
   * and queue.add) once its reservation is this old. @defaultValue 60000
   */
  adoptAfterMs?: number;
}

/**
 * `redis`: a command connection (no blocking). `queue`: the jobs queue, used to release jobs (changePriority +
 * promote); its keys name the BullMQ job hashes the scripts read.
 */
export function createFairScheduler(redis: Redis, config: { queue: Pick<Config['queue'], 'prefix'> }, queue: Queue, options: SchedulerOptions = {}): FairScheduler {
  const r = defineCommands(redis);
  const B = `${config.queue.prefix}:sched:`;
  const K = `${B}jobs`; // every script's KEYS[1]: routes it to the node of the prefix's hash slot (Redis Cluster)
  const jobPrefix = `${config.queue.prefix}:${QueueNames.jobs}:`;
  const maxTag = Math.min(options.maxPriority ?? MAX_PRIORITY, MAX_PRIORITY);
  // Also how long a reservation is taken to be on its way into BullMQ (repair and apply leave it be), by Redis's clock.
  const adoptAfterMs = options.adoptAfterMs ?? 60_000;

  const pairs = (flat: (string | number)[], from = 0): Promotion[] => {
    const out: Promotion[] = [];
    // Stryker disable next-line EqualityOperator: one pair too many names job "undefined" at priority NaN; BullMQ refuses it and no job has that id
    for (let i = from; i + 1 < flat.length; i += 2) out.push({ jobId: String(flat[i]), priority: Number(flat[i + 1]) });
    return out;
  };

  /**
   * Release jobs to BullMQ: changePriority then promote, sent together (one round trip; one connection keeps their
   * order). promote fails harmlessly on a job no longer delayed (promoted meanwhile, or a head re-prioritised by a
   * rebase). When changePriority fails, or promote fails for another reason (Redis away mid-way), the job is looked up
   * and released step by step: one that vanished meanwhile (cancelled, removed) hands its turn on; what still fails
   * (a race with a removal) is healed by repair().
   */
  async function apply(promotions: Promotion[]): Promise<void> {
    for (const p of promotions) {
      const [changed, promoted] = await Promise.all([
        // Stryker disable next-line ArrowFunction,BooleanLiteral: a release taken for failed goes the step-by-step way below, which reaches the same state
        queue.backend.changePriority(p.jobId, p.priority).then(() => true, () => false),
        // Stryker disable next-line ArrowFunction,BooleanLiteral: as above
        queue.backend.promote(p.jobId).then(() => true, (e: unknown) => !isRedisConnectionError(e)),
      ]);
      // Stryker disable next-line ConditionalExpression: always going step by step reaches the same state, one lookup later
      if (changed && promoted) continue;
      const job = await Job.fromId(queue, p.jobId);
      if (!job) {
        // Gone (cancelled, removed), unless reserve() lined it up a moment ago and its add is on its way: then only this
        // release is lost (a rebase's new tag; the add brings its old one).
        await apply(pairs(await r.blip3oSchedForget(K, B, p.jobId, maxTag, adoptAfterMs)));
        continue;
      }
      // Stryker disable next-line ConditionalExpression: setting the same priority again changes nothing
      if (!changed) await job.changePriority({ priority: p.priority }).catch(() => undefined); // raced with a removal: repair() heals
      // Stryker disable next-line ConditionalExpression: promoting a job that is not delayed fails, and the failure is ignored
      if ((await job.getState()) === 'delayed') await job.promote().catch(() => undefined); // promoted meanwhile: fine
    }
  }

  const placeOf = (state: number, position: number): QueuePlace =>
    state === 1 ? { state: 'queued', position } : state === 2 ? { state: 'held', position } : { state: 'none' };

  async function enqueue(jobId: string, d: Destination, cost = 1): Promise<QueuePlace> {
    const res = await r.blip3oSchedEnqueue(K, B, jobId, channelKey(d), userKeyOf(d), jobPrefix + jobId, maxTag, Math.max(1, Math.round(cost)), `${jobPrefix}wait`);
    await apply(pairs(res, 2));
    return placeOf(Number(res[0]), Number(res[1]));
  }

  function reserveCall(jobId: string, d: Destination, cost = 1): ScriptCall {
    const args = [B, jobId, channelKey(d), userKeyOf(d), maxTag, Math.max(1, Math.round(cost)), `${jobPrefix}wait`];
    return { keys: [K], args };
  }

  async function reserved(reply: readonly (string | number)[]): Promise<Reservation | undefined> {
    if (Number(reply[0]) !== 1) return undefined;
    await apply(pairs([...reply], 4)); // other heads re-prioritised by a rebase
    return { priority: Number(reply[1]), place: placeOf(Number(reply[2]), Number(reply[3])) };
  }

  return {
    parkedOptions: () => ({ priority: MAX_PRIORITY, delay: PARK_MS }),
    reserveCall,
    reserved,
    async reserve(jobId, d, cost) {
      const { keys, args } = reserveCall(jobId, d, cost);
      return reserved(await r.blip3oSchedReserve(...keys, ...(args as (string | number)[])));
    },
    enqueue,
    async started(jobId, cost) {
      // Stryker disable next-line ArrayDeclaration: the script reads a 4th argument that is not a number as no cost
      const res = await r.blip3oSchedStarted(K, B, jobId, maxTag, ...(cost === undefined ? [] : [Math.max(1, Math.round(cost))]));
      await apply(pairs(res, 1));
      return { held: Number(res[0]) === 1 };
    },
    async forget(jobId) {
      await apply(pairs(await r.blip3oSchedForget(K, B, jobId, maxTag)));
    },
    async pause(ck) {
      await r.blip3oSchedPause(K, B, ck);
    },
    async resume(ck) {
      await apply(pairs(await r.blip3oSchedResume(K, B, ck, maxTag)));
    },
    async position(jobId) {
      const [state = 0, position = 0] = await r.blip3oSchedPosition(K, B, jobId, `${jobPrefix}wait`);
      return placeOf(state, position);
    },
    async positions(jobIds) {
      const flat = await r.blip3oSchedPositions(K, B, `${jobPrefix}wait`, ...jobIds);
      return jobIds.map((_, i) => placeOf(Number(flat[2 * i]), Number(flat[2 * i + 1])));
    },
    async repair() {
      await apply(pairs(await r.blip3oSchedRepair(K, B, jobPrefix, maxTag, adoptAfterMs)));
      // Parked jobs nobody lined up: BullMQ has them (delayed, priority MAX) but the scheduler does not.
      const parked = await redis.zrange(`${jobPrefix}delayed`, '0', '-1');
      if (parked.length === 0) return;
      const tracked = await redis.hmget(`${B}jobs`, ...parked);
      for (const [i, jobId] of parked.entries()) {
        // Stryker disable next-line ConditionalExpression: enqueue ignores a job the scheduler tracks already
        if (tracked[i] !== null) continue;
        const job = await Job.fromId(queue, jobId);
        const d = (job?.data as { destination?: Destination } | undefined)?.destination;
        // Stryker disable next-line EqualityOperator: < or <= is one millisecond of waiting
        if (!job || !d || job.priority !== MAX_PRIORITY || Date.now() - job.timestamp < adoptAfterMs) continue;
        await enqueue(jobId, d);
      }
    },
    async channels() {
      const [backlog, paused, heads, tags] = await Promise.all([
        redis.smembers(`${B}backlog`),
        redis.smembers(`${B}paused`),
        redis.hgetall(`${B}heads`),
        redis.zrange(`${B}tags`, '0', '-1', 'WITHSCORES'),
      ]);
      const tagOf = new Map<string, number>();
      // Stryker disable next-line EqualityOperator,ArithmeticOperator: a pair past the end sets the tag of channel undefined, never read
      for (let i = 0; i + 1 < tags.length; i += 2) tagOf.set(tags[i]!, Math.floor(Number(tags[i + 1]) / 2 ** 20));
      const keys = [...new Set([...backlog, ...paused])].sort();
      const counts = await Promise.all(keys.map((ck) => redis.zcard(`${B}q:${ck}`)));
      return keys.map((ck, i) => {
        const head = heads[ck];
        return { channelKey: ck, queued: counts[i]!, paused: paused.includes(ck), ...(head ? { head: { jobId: head, priority: tagOf.get(ck) ?? 0 } } : {}) };
      });
    },
    async waitingJobs() {
      const all = await redis.hgetall(`${B}jobs`);
      return Object.entries(all).map(([jobId, v]) => {
        const [channelKey, userKey] = v.split('\n') as [string, string, string]; // enqueue's "<channelKey>\n<userKey>\n<cost>"
        return { jobId, channelKey, userKey };
      });
    },
    async isPaused(ck) {
      return (await redis.sismember(`${B}paused`, ck)) === 1;
    },
  };
}

/**
 * The worker's hook, first thing in its processor: tells the scheduler the job started (which releases the
 * channel's next job). If the job's channel is paused, parks the job again and throws BullMQ's DelayedError,
 * which the processor must let through: BullMQ then leaves the job waiting, not failed.
 */
export async function startOrHold(scheduler: FairScheduler, job: Job, token: string | undefined, cost?: number): Promise<void> {
  const { held } = await scheduler.started(job.id!, cost);
  if (!held) return;
  await job.moveToDelayed(Date.now() + PARK_MS, token);
  throw new DelayedError();
}
