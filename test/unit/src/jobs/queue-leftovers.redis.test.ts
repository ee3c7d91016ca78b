// expireQueueKeys (a CLI's delivery queue, on hand-over and after the CLI deletes it): keys without a TTL get one, while
// keys that already have one (BullMQ's stall-check timer) keep theirs.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { createDeliveryQueue, expireQueueKeys } from '../../../../src/jobs/queue.ts';
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
});
