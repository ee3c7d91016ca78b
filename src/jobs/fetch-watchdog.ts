// A BullMQ worker whose fetch loop has stopped: jobs wait in its queue, it has room for more, and it takes none.
//
// Twice a library bug parked a fetch loop for good, with the process otherwise healthy: ioredis ending a Sentinel
// connection mid-failover, and ioredis' Cluster ready check leaving BullMQ's reconnect of a blocking connection
// unsettled (docs/high-availability.md). Results then waited in a bot's delivery queue, or jobs in the jobs queue, until
// someone restarted the process. Each cause is fixed; this catches the next one. The services (bots/main.ts,
// worker/main.ts) exit when it fires, and their supervisor (compose's restart policy) starts them again: the jobs wait
// in Redis meanwhile and are delivered once (the delivery ledger), as after any crash.
//
// Stuck means: for `stallMs` without a break, the queue had jobs ready (its wait list and prioritized set), this worker
// had fewer jobs running than its concurrency, was not paused or closing, and took no job. A healthy worker takes a
// ready job within milliseconds; a busy one (every slot running a long job) is never counted as stuck.
import type { Worker } from 'bullmq';
import type { Redis } from '../redis.ts';
import { runningJobsOf } from './queue.ts';

export interface FetchWatchdog {
  stop(): void;
}

export interface FetchWatchdogOptions {
  /** The connection to count ready jobs on (under the worker's own `<queue.prefix>:<queue name>`). */
  redis: Redis;
  /** How long ready jobs may wait, untaken, while the worker has room. */
  stallMs: number;
  /** How often to look (default: a fifth of stallMs). */
  intervalMs?: number;
  /** Called once, when the worker is found stuck, with how long ready jobs waited and how many there were. */
  onStuck: (waitedMs: number, ready: number) => void;
}

/** Watches `worker` (made by createQueueWorker, which counts its running jobs). */
export function watchFetchLoop(worker: Worker, options: FetchWatchdogOptions): FetchWatchdog {
  const { redis, stallMs, onStuck } = options;
  const queueKey = worker.qualifiedName;
  let readySince: number | undefined; // when ready jobs were first seen with room and nothing taken since
  let fired = false;
  worker.on('active', () => void (readySince = undefined));

  const look = async () => {
    if (fired || worker.closing || worker.isPaused() || runningJobsOf(worker) >= worker.concurrency) return void (readySince = undefined);
    const [wait, prioritized] = await Promise.all([redis.llen(`${queueKey}:wait`), redis.zcard(`${queueKey}:prioritized`)]);
    const ready = wait + prioritized;
    if (ready === 0) return void (readySince = undefined);
    readySince ??= Date.now();
    const waited = Date.now() - readySince;
    // Stryker disable next-line EqualityOperator: equivalent, one millisecond at most between looks intervalMs apart
    if (waited >= stallMs) {
      fired = true;
      onStuck(waited, ready);
    }
  };
  const timer = setInterval(() => void look().catch(() => undefined), options.intervalMs ?? Math.max(100, Math.round(stallMs / 5)));
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
