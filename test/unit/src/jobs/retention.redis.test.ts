// The retention sweeper (src/jobs/retention.ts) on real Redis: a job past its channel's TTL is not touched while it
// waits (its answer would be lost), is purged once finished (job, delivery, its event stream entries, per-job keys),
// and a request without a TTL is never scheduled.
import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue } from '../../../../src/jobs/queue.ts';
import { Retention, jobKeys } from '../../../../src/jobs/retention.ts';
import { closeRedis, createRedis, duplicateRedis } from '../../../../src/redis.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ overrides: { queue: { prefix } }, env: {} });
const redis = createRedis(REDIS_URL, 'test-retention-unit');

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

function request(retentionSeconds?: number): JobRequest {
  const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  return {
    v: CONTRACT_VERSION, id, submittedAt: Date.now() - 10_000, kind: 'imagine', prompt: 'a secret pear',
    destination: { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U', ...(retentionSeconds ? { retentionSeconds } : {}) },
    options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
  };
}

/** Let a BullMQ worker complete the one waiting job of `queue`. */
async function runOnce(queue: string): Promise<void> {
  const connection = duplicateRedis(redis);
  const worker = new Worker(queue, async () => 'done', { connection, prefix });
  await new Promise<void>((resolve) => worker.on('completed', () => resolve()));
  await worker.close();
  await connection.quit();
}

describe('Retention', () => {
  it('waits for a job that has not run, then purges job, delivery, event entries and per-job keys once it finished', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-slack');
    const r = request(1); // deadline 9 s in the past
    try {
      await retention.schedule(r);
      await jobs.add('imagine', r, { jobId: r.id });
      expect(await retention.sweep()).toBe(0); // waiting: left alone, tried again later
      expect(await jobs.getJob(r.id)).toBeDefined();

      await runOnce(jobs.name);
      const result: JobResult = { v: CONTRACT_VERSION, jobId: r.id, kind: 'imagine', destination: r.destination, status: 'cancelled', timingsMs: {}, finishedAt: Date.now() };
      await delivery.add('result', result, { jobId: r.id });
      await redis.set(jobKeys(prefix, r.id)[0]!, '1');
      expect(await retention.sweep()).toBe(0); // the delivery is still waiting

      await (await delivery.getJob(r.id))!.remove(); // as if delivered and removed
      await delivery.add('result', result, { jobId: r.id }); // …and a completed copy left behind
      await runOnce(delivery.name);

      expect(await retention.sweep(Date.now() + 5_000)).toBe(1);
      expect(await jobs.getJob(r.id)).toBeUndefined();
      expect(await delivery.getJob(r.id)).toBeUndefined();
      expect(await redis.exists(...jobKeys(prefix, r.id))).toBe(0);
      for (const stream of [jobs.keys.events!, delivery.keys.events!]) {
        const entries = (await redis.xrange(stream, '-', '+')) as [string, string[]][];
        expect(entries.filter(([, f]) => f.includes(r.id))).toEqual([]);
      }
      expect(await redis.zcard(`${prefix}:retention`)).toBe(0);
    } finally {
      await retention.stop();
      await jobs.close();
      await delivery.close();
    }
  }, 30_000);

  it('a request without a TTL is never scheduled', async () => {
    const retention = new Retention(redis, config);
    await retention.schedule(request());
    expect(await redis.zcard(`${prefix}:retention`)).toBe(0);
    await retention.stop();
  });
});
