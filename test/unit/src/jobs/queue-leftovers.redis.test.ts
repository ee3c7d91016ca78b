// expireQueueKeys (a CLI's delivery queue, on hand-over and after the CLI deletes it): keys without a TTL get one, while
// keys that already have one (BullMQ's stall-check timer) keep theirs. The worker's hand-over (handOverTogether) looks
// at DELIVERY_QUEUE_KEYS only: a queue taken through every state a delivery job can be in leaves no other key persistent.
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, createQueueWorker, expireQueueKeys, handOverTogether } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis } from '../../../../src/redis.ts';

const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const config = loadConfig({ env: {} });
const prefix = `t-left-${randomUUID().slice(0, 8)}`;

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('expireQueueKeys', () => {
  it('gives persistent queue keys the TTL and leaves keys with their own TTL alone', async () => {
    const q = createDeliveryQueue({ queue: { ...config.queue, prefix } }, redis, 'delivery-cli-x');
    await q.add('result', {} as never, { jobId: 'j1' });
    await redis.set(q.keys['stalled-check']!, '1', 'PX', 5_000);
    expect(await redis.ttl(q.keys.events!)).toBe(-1);
    const n = await expireQueueKeys(redis, q, 600);
    expect(n).toBeGreaterThan(0);
    for (const key of [q.keys.events!, q.keys.wait!, q.keys.meta!, q.keys.id!]) {
      const ttl = await redis.ttl(key);
      expect(ttl, key).toBeGreaterThan(0);
      expect(ttl, key).toBeLessThanOrEqual(600);
    }
    expect(await redis.pttl(q.keys['stalled-check']!)).toBeLessThanOrEqual(5_000);
    expect(await expireQueueKeys(redis, q, 600)).toBe(0); // nothing persistent left
    await q.close();
  });

  it('a hand-over leaves no key of a CLI queue persistent, whatever state its earlier delivery jobs are in', async () => {
    // a retry waits a minute; the stall check marks the running job in `stalled` every second
    const queueConfig = { queue: { ...config.queue, prefix, deliveryAttempts: 2, deliveryBackoffMs: 60_000, stalledIntervalMs: 1_000 } };
    const name = 'delivery-cli-states';
    const q = createDeliveryQueue(queueConfig, redis, name);
    const result = (jobId: string): JobResult => ({ v: CONTRACT_VERSION, jobId, kind: 'imagine', destination: { platform: 'cli', clientId: 'states', channelId: 'c', userId: 'u' }, status: 'succeeded', timingsMs: {}, finishedAt: 1 });
    const handOver = (jobId: string) => handOverTogether(redis, q, result(jobId), { jobId }, { expireSeconds: 600 });
    // completed, retried (waiting in delayed), failed, and running (active) when the last one is handed over (waiting)
    let release = () => {};
    const running = new Promise<void>((r) => (release = r));
    const states: Record<string, string> = { done: 'completed', retry: 'delayed', bad: 'failed', busy: 'active' };
    for (const id of Object.keys(states)) await handOver(id);
    const worker = createQueueWorker(queueConfig, redis, name, async (job: Job) => {
      if (job.id === 'retry') throw new Error('try again');
      if (job.id === 'bad') throw new UnrecoverableError('no');
      if (job.id === 'busy') await running;
    }, { concurrency: 1 });
    try {
      for (const [id, state] of Object.entries(states)) {
        for (let i = 0; (await q.getJobState(id)) !== state; i++) {
          if (i > 200) throw new Error(`${id} never ${state}`);
          await new Promise((r) => setTimeout(r, 25));
        }
      }
      for (let i = 0; (await redis.exists(q.keys.stalled!)) === 0; i++) {
        if (i > 200) throw new Error('the stall check never marked the running job');
        await new Promise((r) => setTimeout(r, 25));
      }
      await handOver('last');
      const keys = await redis.keys(`${prefix}:${name}:*`);
      expect(keys).toEqual(expect.arrayContaining(['wait', 'active', 'delayed', 'completed', 'failed', 'stalled', 'events', 'meta', 'id'].map((k) => q.keys[k])));
      const ttls = (await keys.reduce((p, key) => p.ttl(key), redis.multi()).exec())!.map(([, ttl]) => ttl); // at once: the next stall check re-creates `stalled`
      expect(keys.filter((_, i) => ttls[i] === -1)).toEqual([]); // every key expires
      expect(await q.getJobState('last')).toBe('waiting');
    } finally {
      release();
      await worker.close();
      await q.close();
    }
  });
});
