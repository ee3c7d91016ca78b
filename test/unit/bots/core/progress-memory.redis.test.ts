// What the progress relay (bots/core/progress.ts) keeps per job, over weeks of traffic: a job it looked up (one it did
// not submit: another instance's, one from before a restart, another platform's) is forgotten at its completed or
// failed event. A report and the job's end read in one batch of events (a short job, its first report just before its
// end) ran the look-up's Redis round trip after that end had been handled: the look-up then stored the job, and
// nothing forgot it again, for the life of the bot. Seen through stop(): the relay hands back the progress lease of
// every job it remembers (`<prefix>:progress-owner:<jobId>`), and only those.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, QueueNames, type Destination } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createJobsQueue, createQueueWorker, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';
import { until } from '../../../doubles/spine-harness.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-relaymem-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const JOBS = 20;
let redis: Redis;
let queue: JobsQueue;

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
  queue = createJobsQueue(config, redis);
});
afterAll(async () => {
  await queue.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

it('a job whose first report and end arrive together is not kept: finished, or gone already', async () => {
  // Finished jobs, run by a real BullMQ worker; and ids of jobs gone already (purged, removed at once).
  const worker = createQueueWorker(config, redis, QueueNames.jobs, async () => 'done');
  const finished = Array.from({ length: JOBS }, () => `done-${randomUUID().slice(0, 8)}`);
  for (const jobId of finished) await queue.add('imagine', { destination } as never, { jobId });
  await until(async () => ((await queue.getCompletedCount()) === JOBS ? true : undefined), 10_000, 'the jobs completed');
  await worker.close();
  const gone = Array.from({ length: JOBS }, () => `gone-${randomUUID().slice(0, 8)}`);

  const events = new EventEmitter();
  const port = { platform: 'slack', showProgress: async () => undefined, deliver: async () => undefined } as unknown as PlatformPort;
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20,
    ledger: new DeliveryLedger(redis, config), instanceId: 'A', prefix, log: createLogger('test', 'silent'),
  });
  relay.start();
  const lease = (jobId: string) => `${prefix}:progress-owner:${jobId}`;
  try {
    for (const jobId of [...finished, ...gone]) {
      // one batch of QueueEvents: emitted in one turn, as BullMQ does
      events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'decoding', step: 1, total: 1 } });
      events.emit(jobId.startsWith('done') ? 'completed' : 'failed', { jobId });
    }
    await new Promise((r) => setTimeout(r, 300)); // the look-ups' round trips
    // A lease of this instance on each: stop() hands back those of the jobs the relay still remembers.
    for (const jobId of [...finished, ...gone]) await redis.set(lease(jobId), 'A', 'PX', 60_000);
  } finally {
    await relay.stop();
  }
  const kept = await Promise.all([...finished, ...gone].map(async (jobId) => (await redis.exists(lease(jobId))) === 1));
  expect(kept.filter(Boolean).length).toBe(2 * JOBS); // none was remembered past its end
});
