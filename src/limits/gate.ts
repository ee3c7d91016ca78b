// What the bots' core calls around a submission: limits before, fair scheduling at and after enqueue, slot
// release when a job ends, and a periodic repair. One object so the core's edits stay a few lines:
//
//   submit:   gate.admit(jobId, d)  →  queue.add(…, { ...gate.jobOptions(), jobId })  →  gate.enqueued(jobId, d)
//             (anything failing between admit and enqueued: gate.abandon(jobId))
//   cancel:   job.remove() succeeded  →  gate.removed(jobId)
//   start():  gate.start(events)  (QueueEvents completed/failed/removed → settle; repair every repairIntervalMs)
//   worker:   startOrHold(scheduler, job, token) first thing in the processor (src/scheduling/fair.ts)
import type { QueueEvents } from 'bullmq';
import type { Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import type { Destination, JobRequest } from '../jobs/contract.ts';
import type { JobsQueue } from '../jobs/queue.ts';
import { createFairScheduler, type FairScheduler, type QueuePlace } from '../scheduling/fair.ts';
import { budgetMessage, Usage } from '../accounting/usage.ts';
import { UserError } from '../errors.ts';
import { createLimiter, type Limiter } from './limiter.ts';

export interface Gate {
  readonly limiter: Limiter;
  readonly scheduler: FairScheduler;
  /** GPU-second accounting and daily budgets (src/accounting/usage.ts). */
  readonly usage: Usage;
  /**
   * Budgets first (with `request`: its cost is estimated from recent measurements of its kind and options), then the
   * rate limits. Throws UserError('rate_limited') naming the budget or limit; nothing is taken then. Resolves to the
   * estimated GPU-seconds (0 when unknown), which fair scheduling weighs the job by.
   */
  admit(jobId: string, destination: Destination, request?: JobRequest): Promise<{ estimate: number }>;
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

export function createGate(redis: Redis, config: Pick<Config, 'queue' | 'limits' | 'usage'>, queue: JobsQueue): Gate {
  const limiter = createLimiter(redis, config);
  const usage = new Usage(redis, config);
  const scheduler = createFairScheduler(redis, config, queue, { adoptAfterMs: config.limits.admitGraceMs });
  let timer: NodeJS.Timeout | undefined;
  let events: QueueEvents | undefined;
  const settle = ({ jobId }: { jobId: string }) => void limiter.settle(jobId).catch(() => undefined); // the sweep retries
  const removed = ({ jobId }: { jobId: string }) => {
    void limiter.release(jobId).catch(() => undefined);
    void scheduler.forget(jobId).catch(() => undefined);
    void usage.release(jobId).catch(() => undefined);
  };

  return {
    limiter,
    scheduler,
    usage,
    async admit(jobId, d, request) {
      let estimate = 0;
      if (request) {
        const b = await usage.admit(jobId, d, request);
        if (!b.admitted) throw new UserError('rate_limited', budgetMessage(b, d.platform), { context: { scope: b.scope, budget: b.budget, used: b.used } });
        estimate = b.estimate;
      }
      try {
        await limiter.admitOrThrow(jobId, d, request && request.kind !== 'ask' ? (request.options.count ?? 1) : 1); // N images count as N
      } catch (e) {
        await usage.release(jobId);
        await usage.count('ref', d).catch(() => undefined);
        throw e;
      }
      return { estimate };
    },
    jobOptions: () => scheduler.parkedOptions(),
    enqueued: (jobId, d, estimate) => scheduler.enqueue(jobId, d, usage.costUnits(estimate ?? 0)),
    async abandon(jobId) {
      await Promise.all([limiter.release(jobId), usage.release(jobId)]);
    },
    async removed(jobId) {
      await Promise.all([limiter.release(jobId), scheduler.forget(jobId), usage.release(jobId)]);
    },
    start(e) {
      events = e;
      e.on('completed', settle);
      e.on('failed', settle);
      e.on('removed', removed);
      const repair = () => Promise.all([limiter.sweep(), scheduler.repair(), usage.sweep()]).catch(() => undefined);
      void repair();
      timer = setInterval(repair, config.limits.repairIntervalMs);
      timer.unref();
    },
    stop() {
      // Stryker disable next-line ConditionalExpression: clearInterval(undefined) does nothing
      if (timer) clearInterval(timer);
      events?.off('completed', settle);
      events?.off('failed', settle);
      events?.off('removed', removed);
    },
  };
}
