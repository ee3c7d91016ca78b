// A retention channel's deadline when the hosts' clocks differ (src/server-clock.ts): the bot that stamps the request,
// the worker that stores the PNG until the deadline and the sweepers that purge at it each run on another host, whose
// clock may be minutes off (no NTP, a VM resumed after suspend). Each is played here by this process with its Date
// moved 2 minutes ahead or behind; Redis's clock (TIME) is the right one. Before, each compared its own clock with the
// bot's: a worker 2 minutes ahead stored a 150 s channel's PNG for 30 s (the delivery then found it gone), a sweeper
// 2 minutes behind kept a delivered job 2 minutes past its deadline, one 2 minutes ahead purged it 2 minutes early.
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, Worker } from 'bullmq';
import sharp from 'sharp';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createBlobStore } from '../../../../src/blobs/index.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue } from '../../../../src/jobs/queue.ts';
import { HAND_OVER_WAIT_MS, jobKeys, Retention } from '../../../../src/jobs/retention.ts';
import { closeRedis, createRedis, duplicateRedis } from '../../../../src/redis.ts';
import { createProcessor } from '../../../../worker/processor.ts';
import { coreHarness, invocation, SILENT_LOG } from '../../../doubles/core-harness.ts';
import { cleanup, makeHarness, REDIS_URL } from '../../../doubles/spine-harness.ts';

const SKEW_MS = 2 * 60_000;
const h = makeHarness({ queue: { retentionSweepMs: 60_000 } });
const { config } = h;
const redis = createRedis(REDIS_URL, 'test-retention-skew');
const cores = coreHarness('t-skew');

afterAll(async () => {
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

/** Run `work` as a process on a host whose clock is `offsetMs` off (Date only: timers and Redis run as they do). */
async function onHostClock<T>(offsetMs: number, work: () => Promise<T>): Promise<T> {
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + offsetMs, shouldAdvanceTime: true });
  try {
    return await work();
  } finally {
    vi.useRealTimers();
  }
}

async function redisNow(): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

const destination = (retentionSeconds: number): Destination => ({ platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a', retentionSeconds });

function request(submittedAt: number, retentionSeconds: number): JobRequest {
  const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  return { v: CONTRACT_VERSION, id, destination: destination(retentionSeconds), submittedAt, kind: 'imagine', prompt: 'a secret okapi', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
}

/** Let a BullMQ worker complete the one waiting job of `queue`. */
async function runOnce(queue: string): Promise<void> {
  const connection = duplicateRedis(redis);
  const worker = new Worker(queue, async () => 'done', { connection, prefix: h.prefix });
  await new Promise<void>((resolve) => worker.on('completed', () => resolve()));
  await worker.close();
  await connection.quit();
}

/** A retention job that ran and whose result was delivered (its delivery job completed). */
async function delivered(r: JobRequest): Promise<void> {
  const jobs = createJobsQueue(config, redis);
  const delivery = createDeliveryQueue(config, redis, 'delivery-discord');
  try {
    await jobs.add('imagine', r, { jobId: r.id });
    await runOnce(jobs.name);
    const result: JobResult = { v: CONTRACT_VERSION, jobId: r.id, kind: 'imagine', destination: r.destination, status: 'cancelled', timingsMs: {}, finishedAt: Date.now() };
    await delivery.add('result', result, { jobId: r.id });
    await runOnce(delivery.name);
  } finally {
    await jobs.close();
    await delivery.close();
  }
}

describe('retention deadlines when hosts disagree about the time by 2 minutes', () => {
  it('a bot whose clock runs ahead stamps the request with Redis\'s time', async () => {
    const c = cores.core();
    const reply = await onHostClock(SKEW_MS, () => c.handle(invocation({ command: 'imagine', prompt: 'a vole', seed: 1 })));
    expect(reply.kind).toBe('queued');
    const submittedAt = (await cores.data(c, (reply as { jobId: string }).jobId))!.submittedAt;
    expect(Math.abs(submittedAt - (await redisNow()))).toBeLessThan(10_000);
  });

  it('a worker whose clock runs ahead stores the PNG until the deadline, not 2 minutes short of it', async () => {
    const TTL_S = 150;
    const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f80' } }).png().toBuffer());
    const host = {
      generate: async () => ({ png, width: 8, height: 8 }),
      understand: async (): Promise<never> => { throw new Error('not used'); },
      check: async () => ({ answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }),
    };
    const r = request(await redisNow(), TTL_S);
    const deadline = r.submittedAt + TTL_S * 1000;
    const queue = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-discord');
    await queue.add('imagine', r, { jobId: r.id });
    const processor = createProcessor({ config, redis, blobs: createBlobStore(config, redis), host, log: SILENT_LOG });
    try {
      await onHostClock(SKEW_MS, async () => {
        const connection = duplicateRedis(redis);
        const worker = new Worker(queue.name, (job, token, signal) => processor.process(job, token, signal), { connection, prefix: h.prefix });
        await vi.waitFor(async () => expect(await (await queue.getJob(r.id))?.getState()).toBe('completed'), { timeout: 20_000, interval: 50 });
        await worker.close();
        await connection.quit();
      });
      const blobKey = ((await delivery.getJob(r.id))!.data as JobResult).image!.blobKey;
      const expiresAt = (await redisNow()) + (await redis.pttl(blobKey));
      // Until the deadline, within the second it is rounded up to
      expect(Math.round((expiresAt - deadline) / 1000)).toBe(0);
    } finally {
      await processor.close();
      await queue.close();
      await delivery.close();
    }
  }, 60_000);

  it('a sweeper whose clock runs behind purges a delivered job at its deadline, not 2 minutes after it', async () => {
    const r = request((await redisNow()) - 70_000, 60); // its deadline was 10 s ago
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    await retention.schedule(r);
    await delivered(r);
    try {
      await onHostClock(-SKEW_MS, () => retention.sweep());
      expect(await jobs.getJob(r.id)).toBeUndefined();
    } finally {
      await jobs.close();
      await retention.stop();
    }
  }, 30_000);

  it('a sweeper whose clock runs ahead leaves a delivered job until its deadline', async () => {
    const r = request(await redisNow(), 60); // its deadline is a minute away
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    await retention.schedule(r);
    await delivered(r);
    try {
      await onHostClock(SKEW_MS, () => retention.sweep());
      expect(await jobs.getJob(r.id)).toBeDefined();
    } finally {
      await jobs.close();
      await retention.stop();
    }
  }, 30_000);
});

describe("a failed job's wait for its worker's 'failed' listener when that worker's clock is off", () => {
  it('a job failed by a worker whose clock runs 2 minutes behind is kept HAND_OVER_WAIT_MS after a sweep found it failed', async () => {
    const r = request((await redisNow()) - 70_000, 60); // its deadline was 10 s ago
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    try {
      await retention.schedule(r);
      await jobs.add('imagine', r, { jobId: r.id, attempts: 1 });
      // BullMQ fails it on its own on that host (finishedOn is its clock), as the stall check fails a job whose workers
      // died more than maxStalledCount times; its 'failed' listener has not handed the failure over yet
      await onHostClock(-SKEW_MS, async () => {
        const connection = duplicateRedis(redis);
        const worker = new Worker(jobs.name, async () => { throw new UnrecoverableError('job stalled more than allowable limit'); }, { connection, prefix: h.prefix });
        await vi.waitFor(async () => expect(await (await jobs.getJob(r.id))?.getState()).toBe('failed'), { timeout: 10_000, interval: 50 });
        await worker.close();
        await connection.quit();
      });
      // (other tests' entries share the sweep: this job's own fate is read, not the count)
      const kept = async () => (await jobs.getJob(r.id)) !== undefined;
      const seenAt = await redisNow();
      await retention.sweep(seenAt);
      expect(await kept()).toBe(true); // before: purged (2 minutes "since" it failed), and the failure came after
      await retention.schedule(r); // due again at once (the sweep above put it RETRY_MS later)
      await retention.sweep(seenAt + HAND_OVER_WAIT_MS - 1);
      expect(await kept()).toBe(true);
      await retention.schedule(r);
      await retention.sweep(seenAt + HAND_OVER_WAIT_MS);
      expect(await kept()).toBe(false);
      expect(await redis.exists(...jobKeys(h.prefix, r.id))).toBe(0);
    } finally {
      await retention.stop();
      await jobs.close();
    }
  }, 30_000);
});
