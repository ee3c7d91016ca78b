// Cancellation across processes over real Redis: the flag a later worker checks, and the broadcast a running
// worker hears, both scoped to the queue prefix (two deployments on one Redis never cancel each other's jobs).
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cancelChannel, isCancelRequested, onCancel, requestCancel } from '../../../../src/jobs/cancel.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-cancel-${randomUUID().slice(0, 8)}`;
const config = { queue: { prefix, keepFailedSeconds: 120 } } as Parameters<typeof requestCancel>[1];
const otherConfig = { queue: { prefix: `${prefix}-other`, keepFailedSeconds: 120 } } as Parameters<typeof requestCancel>[1];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let redis: Redis;

beforeAll(() => {
  redis = new Redis(url);
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('cancel', () => {
  it('flags the job for as long as failed jobs are kept; only that job, only under this prefix', async () => {
    expect(cancelChannel(config)).toBe(`${prefix}:cancel`);
    expect(await isCancelRequested(redis, config, 'j1')).toBe(false);
    await requestCancel(redis, config, 'j1');
    expect(await isCancelRequested(redis, config, 'j1')).toBe(true);
    expect(await isCancelRequested(redis, config, 'j2')).toBe(false);
    expect(await isCancelRequested(redis, otherConfig, 'j1')).toBe(false);
    const ttl = await redis.ttl(`${prefix}:cancelled:j1`);
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
  });

  it('tells every subscribed process which job to abort, and stops after unsubscribing', async () => {
    const sub = new Redis(url);
    const otherSub = new Redis(url);
    try {
      const heard: string[] = [];
      const heardElsewhere: string[] = [];
      const stop = await onCancel(sub, config, (id) => heard.push(id));
      const stopOther = await onCancel(otherSub, otherConfig, (id) => heardElsewhere.push(id));
      await sub.subscribe('unrelated-channel'); // a message there is not a cancel
      await redis.publish('unrelated-channel', 'nope');
      await requestCancel(redis, config, 'j3');
      for (let i = 0; i < 100 && heard.length === 0; i++) await sleep(10);
      await sleep(50);
      expect(heard).toEqual(['j3']);
      expect(heardElsewhere).toEqual([]);
      await stop();
      await requestCancel(redis, config, 'j4');
      await requestCancel(redis, otherConfig, 'j5');
      for (let i = 0; i < 100 && heardElsewhere.length === 0; i++) await sleep(10);
      await sleep(50);
      expect(heard).toEqual(['j3']);
      expect(heardElsewhere).toEqual(['j5']);
      expect(sub.listenerCount('message')).toBe(0);
      expect(await redis.call('PUBSUB', 'NUMSUB', cancelChannel(config))).toEqual([cancelChannel(config), 0]);
      await stopOther();
    } finally {
      sub.disconnect();
      otherSub.disconnect();
    }
  });
});
