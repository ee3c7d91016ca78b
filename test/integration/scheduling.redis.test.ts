// Fair scheduling over real Redis and a real BullMQ Worker (one worker, concurrency 1, as a single GPU).
import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueueNames, type Destination } from '../../src/jobs/contract.ts';
import { createFairScheduler, startOrHold, type FairScheduler } from '../../src/scheduling/fair.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const connection = () => new Redis(url, { maxRetriesPerRequest: null });
const dest = (channelId: string, userId = 'u1'): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId, applicationId: 'app' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let redis: Redis;
const cleanup: (() => Promise<unknown>)[] = [];

interface Rig {
  prefix: string;
  queue: Queue;
  scheduler: FairScheduler;
  submit(jobId: string, d: Destination): Promise<void>;
  /** One worker, concurrency 1; records start order. */
  startWorker(stepMs?: number, concurrency?: number): { order: string[]; close(): Promise<void> };
  drained(count: number): Promise<void>;
}

function rig(maxPriority?: number, adoptAfterMs = 60_000): Rig {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  const config = { queue: { prefix } } as Parameters<typeof createFairScheduler>[1];
  const queue = new Queue(QueueNames.jobs, { connection: connection(), prefix });
  const scheduler = createFairScheduler(redis, config, queue, { adoptAfterMs, ...(maxPriority ? { maxPriority } : {}) });
  const finished: string[] = [];
  cleanup.push(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    await queue.opts.connection && (queue.opts.connection as Redis).quit();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  });
  return {
    prefix,
    queue,
    scheduler,
    async submit(jobId, d) {
      await queue.add('imagine', { destination: d }, { jobId, ...scheduler.parkedOptions() });
      await scheduler.enqueue(jobId, d);
    },
    startWorker(stepMs = 5, concurrency = 1) {
      const order: string[] = [];
      const conn = connection();
      const worker = new Worker(
        QueueNames.jobs,
        async (job, token) => {
          await startOrHold(scheduler, job, token);
          order.push(job.id!);
          await sleep(stepMs);
        },
        { connection: conn, prefix, concurrency },
      );
      worker.on('completed', (job) => finished.push(job.id!));
      return {
        order,
        close: async () => {
          await worker.close();
          await conn.quit();
        },
      };
    },
    async drained(count) {
      for (let i = 0; i < 2000 && finished.length < count; i++) await sleep(10);
      expect(finished.length).toBe(count);
    },
  };
}

beforeAll(() => {
  redis = connection();
});
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});
afterAll(async () => {
  await redis.quit();
});

describe('fair scheduling across channels, then users', () => {
  it('channel A enqueues 50 jobs, then channel B one: B starts before A’s 3rd remaining job (one worker)', async () => {
    const t = rig();
    const w = t.startWorker(10);
    for (let i = 0; i < 50; i++) await t.submit(`a${i}`, dest('A'));
    const startedBeforeB = w.order.length;
    await t.submit('b0', dest('B'));
    await t.drained(51);
    await w.close();
    const bAt = w.order.indexOf('b0');
    const aRemainingBeforeB = bAt - startedBeforeB; // A's jobs that started after B was enqueued, before B
    expect(aRemainingBeforeB).toBeLessThan(3);
    // and A's own jobs still ran in arrival order
    expect(w.order.filter((id) => id !== 'b0')).toEqual(Array.from({ length: 50 }, (_, i) => `a${i}`));
  });

  it('with 3 worker slots, B waits behind at most about one of A’s jobs per slot', async () => {
    const t = rig();
    const w = t.startWorker(30, 3);
    for (let i = 0; i < 30; i++) await t.submit(`a${i}`, dest('A'));
    const startedBeforeB = w.order.length;
    await t.submit('b0', dest('B'));
    await t.drained(31);
    await w.close();
    expect(w.order.indexOf('b0') - startedBeforeB).toBeLessThanOrEqual(3);
  });

  it('alternates channels, and users within a channel, in the order the positions predicted', async () => {
    const t = rig();
    for (let i = 0; i < 4; i++) await t.submit(`a${i}`, dest('A', 'x'));
    await t.submit('a-y0', dest('A', 'y'));
    await t.submit('a-y1', dest('A', 'y'));
    await t.submit('b0', dest('B'));
    await t.submit('b1', dest('B'));
    const ids = ['a0', 'a1', 'a2', 'a3', 'a-y0', 'a-y1', 'b0', 'b1'];
    const places = await Promise.all(ids.map((id) => t.scheduler.position(id)));
    const predicted = ids.map((id, i) => ({ id, p: (places[i] as { position: number }).position })).sort((a, b) => a.p - b.p);
    expect(predicted.map((x) => x.p)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const w = t.startWorker();
    await t.drained(8);
    await w.close();
    // channels take turns; inside A, users x and y take turns
    expect(w.order).toEqual(['a0', 'b0', 'a-y0', 'b1', 'a1', 'a-y1', 'a2', 'a3']);
    expect(predicted.map((x) => x.id)).toEqual(w.order);
  });

  it('cancelling a queued job removes it and moves everyone behind it up', async () => {
    const t = rig();
    for (let i = 0; i < 3; i++) await t.submit(`a${i}`, dest('A'));
    await t.submit('b0', dest('B'));
    expect(await t.scheduler.position('a1')).toEqual({ state: 'queued', position: 3 });
    expect(await t.scheduler.position('b0')).toEqual({ state: 'queued', position: 2 });
    // the released head of A is cancelled: its turn (priority) passes to a1, behind b0 which was released first
    await (await t.queue.getJob('a0'))!.remove();
    await t.scheduler.forget('a0');
    expect(await t.scheduler.position('b0')).toEqual({ state: 'queued', position: 1 });
    expect(await t.scheduler.position('a1')).toEqual({ state: 'queued', position: 2 });
    expect(await t.scheduler.position('a2')).toEqual({ state: 'queued', position: 3 });
    expect(await t.scheduler.position('a0')).toEqual({ state: 'none' });
    const w = t.startWorker();
    await t.drained(3);
    await w.close();
    expect(w.order).toEqual(['b0', 'a1', 'a2']);
  });

  it('a paused channel’s jobs are held in order and run after resume', async () => {
    const t = rig();
    for (let i = 0; i < 3; i++) await t.submit(`a${i}`, dest('A'));
    await t.scheduler.pause('discord:g:A');
    for (let i = 0; i < 2; i++) await t.submit(`b${i}`, dest('B'));
    expect(await t.scheduler.position('a1')).toEqual({ state: 'held', position: 2 });
    const w = t.startWorker();
    await t.drained(2);
    await sleep(100);
    expect(w.order).toEqual(['b0', 'b1']); // a0 was released before the pause: the worker parked it again
    expect(await t.queue.getJobState('a0')).toBe('delayed');
    expect((await t.scheduler.channels()).find((c) => c.channelKey === 'discord:g:A')).toMatchObject({ paused: true, queued: 3 });
    await t.scheduler.repair(); // a held job was active once (processedOn): repair must not take it for started
    expect((await t.scheduler.channels()).find((c) => c.channelKey === 'discord:g:A')).toMatchObject({ paused: true, queued: 3 });
    await t.scheduler.resume('discord:g:A');
    await t.drained(5);
    await w.close();
    expect(w.order).toEqual(['b0', 'b1', 'a0', 'a1', 'a2']);
  });

  it('rebases priorities before they pass BullMQ’s range, staying fair', async () => {
    const t = rig(6); // tags may not pass 5: rebased several times over 25 jobs
    for (let i = 0; i < 12; i++) await t.submit(`a${i}`, dest('A'));
    await t.submit('b0', dest('B'));
    for (let i = 0; i < 12; i++) await t.submit(`c${i}`, dest('C'));
    const w = t.startWorker(2);
    await t.drained(25);
    await w.close();
    const jobs = await Promise.all(w.order.map((id) => t.queue.getJob(id)));
    expect(Math.max(...jobs.map((j) => j!.priority))).toBeLessThan(6);
    const roundRobin = ['a0', 'b0', 'c0', ...Array.from({ length: 11 }, (_, i) => [`a${i + 1}`, `c${i + 1}`]).flat()];
    expect(w.order).toEqual(roundRobin);
  });

  it('repair releases the next job when a worker died before its hook ran', async () => {
    const t = rig();
    for (let i = 0; i < 2; i++) await t.submit(`a${i}`, dest('A'));
    // a worker took a0 and died before telling the scheduler: BullMQ shows it started
    await redis.hset(`${t.prefix}:jobs:a0`, 'processedOn', Date.now());
    await (await t.queue.getJob('a0'))!.remove();
    expect(await t.queue.getJobState('a1')).toBe('delayed');
    await t.scheduler.repair();
    expect(await t.queue.getJobState('a1')).toBe('prioritized');
    expect(await t.scheduler.position('a1')).toEqual({ state: 'queued', position: 1 });
  });

  it('repair adopts a parked job whose bot died between queue.add and enqueue', async () => {
    const t = rig(undefined, 0);
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'orphan', ...t.scheduler.parkedOptions() });
    await t.submit('a0', dest('A'));
    expect(await t.scheduler.position('orphan')).toEqual({ state: 'none' });
    await t.scheduler.repair();
    expect(await t.scheduler.position('orphan')).toEqual({ state: 'queued', position: 2 });
    const w = t.startWorker();
    await t.drained(2);
    await w.close();
    expect(w.order).toEqual(['a0', 'orphan']);
  });
});
