// What the bots' core calls around a submission: limits before, fair scheduling at and after enqueue, slot
// release when a job ends, and a periodic repair. One object so the core's edits stay a few lines:
//
//   submit:   gate.admit(jobId, d)  →  queue.add(…, { ...gate.jobOptions(), jobId })  →  gate.enqueued(jobId, d)
//             (anything failing between admit and enqueued: gate.abandon(jobId))
//   cancel:   job.remove() succeeded  →  gate.removed(jobId)
//   start():  gate.start(events)  (QueueEvents completed/failed/removed → settle; repair every repairIntervalMs)
//   worker:   startOrHold(scheduler, job, token) first thing in the processor (src/scheduling/fair.ts)
import type { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config/schema.ts';
import type { Destination } from '../jobs/contract.ts';
import type { JobsQueue } from '../jobs/queue.ts';
import { createFairScheduler, type FairScheduler } from '../scheduling/fair.ts';
import { createLimiter, type Limiter } from './limiter.ts';

export interface Gate {
  readonly limiter: Limiter;
  readonly scheduler: FairScheduler;
  /** Throws UserError('rate_limited') naming the limit and when to retry; nothing is taken then. */
  /** `cost`: requests this job counts as (images of a several-image /imagine). */
  admit(jobId: string, destination: Destination, cost?: number): Promise<void>;
  /** Options to merge into queue.add: the job is added parked (see FairScheduler.parkedOptions). */
  jobOptions(): { priority: number; delay: number };
  enqueued(jobId: string, destination: Destination): Promise<void>;
  /** Admitted but never enqueued (a later step failed): give the slots back. */
  abandon(jobId: string): Promise<void>;
  /** Removed before it ran (cancel, purge): its turn passes on and its slots are freed. */
  removed(jobId: string): Promise<void>;
  start(events: QueueEvents): void;
  stop(): void;
}

export function createGate(redis: Redis, config: Pick<Config, 'queue' | 'limits'>, queue: JobsQueue): Gate {
  const limiter = createLimiter(redis, config);
  const scheduler = createFairScheduler(redis, config, queue, { adoptAfterMs: config.limits.admitGraceMs });
  let timer: NodeJS.Timeout | undefined;
  let events: QueueEvents | undefined;
  const settle = ({ jobId }: { jobId: string }) => void limiter.settle(jobId).catch(() => undefined); // the sweep retries
  const removed = ({ jobId }: { jobId: string }) => {
    void limiter.release(jobId).catch(() => undefined);
    void scheduler.forget(jobId).catch(() => undefined);
  };

  return {
    limiter,
    scheduler,
    admit: (jobId, d, cost) => limiter.admitOrThrow(jobId, d, cost),
    jobOptions: () => scheduler.parkedOptions(),
    enqueued: (jobId, d) => scheduler.enqueue(jobId, d),
    async abandon(jobId) {
      await limiter.release(jobId);
    },
    async removed(jobId) {
      await Promise.all([limiter.release(jobId), scheduler.forget(jobId)]);
    },
    start(e) {
      events = e;
      e.on('completed', settle);
      e.on('failed', settle);
      e.on('removed', removed);
      const repair = () => Promise.all([limiter.sweep(), scheduler.repair()]).catch(() => undefined);
      void repair();
      timer = setInterval(repair, config.limits.repairIntervalMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      events?.off('completed', settle);
      events?.off('failed', settle);
      events?.off('removed', removed);
    },
  };
}
