// The fetch-loop watchdog (src/jobs/fetch-watchdog.ts) on real BullMQ workers and Redis: a worker whose blocking
// fetch never returns (what the ioredis bugs of docs/high-availability.md did) is reported once jobs have waited
// `stallMs` with room in it; a healthy worker taking a steady stream, a worker whose every slot runs a long job, and
// a paused worker are not.
import { randomUUID } from 'node:crypto';
import { Queue, type Worker } from 'bullmq';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { watchFetchLoop, type FetchWatchdog } from '../../../../src/jobs/fetch-watchdog.ts';
import { createQueueWorker, runningJobsOf } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-watchdog-${randomUUID().slice(0, 8)}`;
const config = { queue: { prefix, lockDurationMs: 5_000, stalledIntervalMs: 5_000, maxStalledCount: 1 } } as Parameters<typeof createQueueWorker>[0];
const redis = createRedis(url, 'watchdog-test');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const opened: { queue: Queue; worker: Worker; watchdog: FetchWatchdog; stuck: boolean }[] = [];

/** A queue with one worker (not started) and its watchdog; `stuck` lists what the watchdog reported. */
function setUp(processor: () => Promise<void>, concurrency: number, stallMs: number) {
  const name = `q-${randomUUID().slice(0, 8)}`;
  const queue = new Queue(name, { connection: redis, prefix });
  const worker = createQueueWorker(config, redis, name, processor, { concurrency, autorun: false, drainDelay: 1 });
  const reports: { waitedMs: number; ready: number }[] = [];
  const watchdog = watchFetchLoop(worker, { redis, stallMs, intervalMs: 50, onStuck: (waitedMs, ready) => reports.push({ waitedMs, ready }) });
  const entry = { queue, worker, watchdog, stuck: false };
  opened.push(entry);
  return { queue, worker, reports, entry };
}

afterEach(async () => {
  for (const { queue, worker, watchdog, stuck } of opened.splice(0)) {
    watchdog.stop();
    // A stuck worker's close waits on its fetch for ever: closed without waiting (its connection is the shared one).
    if (stuck) void worker.close(true).catch(() => undefined);
    else await worker.close(true);
    await queue.close();
  }
});

afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('watchFetchLoop', () => {
  it('reports a worker whose fetch never returns, once ready jobs have waited stallMs with room in it, and only once', async () => {
    const { queue, worker, reports, entry } = setUp(async () => undefined, 2, 400);
    entry.stuck = true;
    // The worker's blocking fetch for new jobs never settles, as BullMQ's did on an unsettled reconnect.
    (worker as unknown as { backend: { waitForJob: () => Promise<never> } }).backend.waitForJob = () => new Promise<never>(() => undefined);
    void worker.run();
    await sleep(200); // the queue was empty: the worker is now parked in its fetch
    await queue.add('a', {});
    await queue.add('b', {});
    const added = Date.now();
    while (reports.length === 0 && Date.now() - added < 5_000) await sleep(20);
    expect(reports).toHaveLength(1);
    expect(reports[0]!.ready).toBe(2);
    expect(reports[0]!.waitedMs).toBeGreaterThanOrEqual(400);
    console.log(`watchdog: the stuck worker reported ${Date.now() - added} ms after the jobs arrived (stallMs 400)`);
    await sleep(300);
    expect(reports).toHaveLength(1);
  });

  it('says nothing of a healthy worker taking a steady stream of jobs, nor of one whose every slot runs a long job', async () => {
    const healthy = setUp(() => sleep(5), 2, 1_000);
    void healthy.worker.run();
    for (let i = 0; i < 80; i++) {
      await healthy.queue.add('j', {});
      await sleep(25);
    }
    expect(healthy.reports).toEqual([]);

    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const busy = setUp(() => held, 1, 200);
    void busy.worker.run();
    for (let i = 0; i < 3; i++) await busy.queue.add('long', {});
    await sleep(800); // 1 running (all its room), 2 ready for far longer than stallMs
    expect(runningJobsOf(busy.worker)).toBe(1);
    expect(await busy.queue.getWaitingCount()).toBe(2);
    expect(busy.reports).toEqual([]);
    release();
  });

  it('counts prioritized jobs with waiting ones, only while some are ready, and not past a job taken or stop()', async () => {
    const stuckWorker = (stallMs: number) => {
      const set = setUp(async () => undefined, 2, stallMs);
      set.entry.stuck = true;
      (set.worker as unknown as { backend: { waitForJob: () => Promise<never> } }).backend.waitForJob = () => new Promise<never>(() => undefined);
      void set.worker.run();
      return set;
    };
    const a = stuckWorker(400);
    await sleep(600); // nothing ready for longer than stallMs: not stuck
    expect(a.reports).toEqual([]);
    await a.queue.add('plain', {});
    await a.queue.add('urgent', {}, { priority: 1 }); // the prioritized set
    const added = Date.now();
    while (a.reports.length === 0 && Date.now() - added < 5_000) await sleep(20);
    expect(a.reports.map((r) => r.ready)).toEqual([2]);
    expect(a.reports[0]!.waitedMs).toBeGreaterThanOrEqual(400); // counted from when they were ready, not from the start

    const b = stuckWorker(400);
    await sleep(100);
    await b.queue.add('x', {});
    for (let i = 0; i < 10; i++) {
      await sleep(100);
      b.worker.emit('active', {} as never, 'waiting'); // it took a job: the count starts again
    }
    expect(b.reports).toEqual([]);

    const c = stuckWorker(300);
    await sleep(100);
    await c.queue.add('y', {});
    opened.find((o) => o.worker === c.worker)!.watchdog.stop();
    await sleep(700);
    expect(c.reports).toEqual([]);
  });

  it('says nothing of a paused worker', async () => {
    const paused = setUp(async () => undefined, 1, 200);
    void paused.worker.run();
    await paused.worker.pause(true);
    await paused.queue.add('p', {});
    await sleep(600);
    expect(paused.reports).toEqual([]);
  });
});
