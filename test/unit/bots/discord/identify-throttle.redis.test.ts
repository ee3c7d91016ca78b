// RedisIdentifyThrottler (bots/discord/identify-throttle.ts) on real Redis: a bucket is held for Discord's 5 s by one
// IDENTIFY, whichever process sent it; other buckets are free; a shard that stops waiting (its manager destroyed) stops.
import { randomUUID } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDENTIFY_WINDOW_MS, RedisIdentifyThrottler } from '../../../../bots/discord/identify-throttle.ts';
import { closeRedis, createRedis, deleteKeys, disconnectRedis, type Redis } from '../../../../src/redis.ts';
import { collectGarbage } from '../../../doubles/collect-garbage.ts';

const prefix = `t-identify-${randomUUID().slice(0, 8)}`;
let redis: Redis;
beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-identify');
});
afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('RedisIdentifyThrottler', () => {
  it('holds a bucket for the window across throttlers (processes); another bucket is free; an abort ends the wait', async () => {
    const here = new RedisIdentifyThrottler(redis, `${prefix}:app`, 2);
    const elsewhere = new RedisIdentifyThrottler(redis, `${prefix}:app`, 2); // another process of the same application
    const started = Date.now();
    await here.waitForIdentify(0, new AbortController().signal);
    expect(await redis.pttl(`${prefix}:app:0`)).toBeGreaterThan(IDENTIFY_WINDOW_MS - 1_000);
    await elsewhere.waitForIdentify(1, new AbortController().signal); // bucket 1 of 2: not held
    expect(Date.now() - started).toBeLessThan(1_000);

    const stop = new AbortController();
    const waiting = elsewhere.waitForIdentify(2, stop.signal); // bucket 0, held by shard 0's IDENTIFY
    setTimeout(() => stop.abort(new Error('shard destroyed')), 200);
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(IDENTIFY_WINDOW_MS - 1_000);
    expect(await redis.get(`${prefix}:app:0`)).toBe('0'); // still shard 0's
  });

  it('lets the next IDENTIFY of a bucket through once the window has passed', async () => {
    const throttler = new RedisIdentifyThrottler(redis, `${prefix}:short`, 1);
    await redis.set(`${prefix}:short:0`, '7', 'PX', 300); // shard 7's IDENTIFY, almost 5 s ago
    const started = Date.now();
    await throttler.waitForIdentify(3, new AbortController().signal);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(await redis.get(`${prefix}:short:0`)).toBe('3');
  });

  // Redis unreachable (its connection queues commands until it is back): before 2026-12-07 the wait followed Redis, so
  // a shard that had to identify stayed off the gateway for the whole outage, and its abort did not end the wait.
  it('while Redis does not answer: an abort ends the wait at once, else the bucket is spaced in-process', async () => {
    const down = createRedis('redis://127.0.0.1:1', 'test-identify-down');
    try {
      const throttler = new RedisIdentifyThrottler(down, `${prefix}:down`, 1);
      const stop = new AbortController();
      let started = Date.now();
      const waiting = throttler.waitForIdentify(0, stop.signal);
      setTimeout(() => stop.abort(new Error('shard closed')), 100);
      const outcome = await Promise.race([waiting.then(() => 'identified', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still waiting'), 2_000))]);
      expect(outcome).toBe('shard closed');
      expect(Date.now() - started).toBeLessThan(1_000);

      started = Date.now();
      const second = throttler.waitForIdentify(0, new AbortController().signal); // Redis's answer given up after a window
      setTimeout(collectGarbage, 100); // a timeout signal only weakly held (AbortSignal.any's source) never fired after this
      await second;
      expect(Date.now() - started).toBeLessThan(IDENTIFY_WINDOW_MS + 1_000);
      started = Date.now();
      await throttler.waitForIdentify(1, new AbortController().signal); // the same bucket, identified a moment ago
      expect(Date.now() - started).toBeGreaterThanOrEqual(IDENTIFY_WINDOW_MS - 50);
    } finally {
      disconnectRedis(down);
    }
  }, 20_000);

  // A connection that refuses at once (closed) rather than queueing: no Redis wait spaces the IDENTIFYs, this process does.
  it('while Redis refuses at once: a bucket is spaced in-process, another is free, and no listener is left on the signal', async () => {
    const closed = createRedis('redis://127.0.0.1:1', 'test-identify-closed');
    disconnectRedis(closed);
    const throttler = new RedisIdentifyThrottler(closed, `${prefix}:closed`, 2);
    const shard = new AbortController();
    let started = Date.now();
    await throttler.waitForIdentify(0, shard.signal);
    await throttler.waitForIdentify(1, shard.signal); // bucket 1: free
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(getEventListeners(shard.signal, 'abort')).toHaveLength(0);
    started = Date.now();
    await throttler.waitForIdentify(2, shard.signal); // bucket 0 again
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDENTIFY_WINDOW_MS - 50);
    expect(Date.now() - started).toBeLessThan(IDENTIFY_WINDOW_MS + 1_000);
    const stop = new AbortController();
    started = Date.now();
    const waiting = throttler.waitForIdentify(4, stop.signal); // bucket 0, identified a moment ago: the wait is here
    setTimeout(() => stop.abort(new Error('shard closed')), 100);
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(1_000);
  }, 20_000);
});
