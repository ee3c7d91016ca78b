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
/** A job in the jobs queue, as far as the flag is concerned: its BullMQ hash. */
const queued = (...ids: string[]) => Promise.all(ids.map((id) => redis.hset(`${prefix}:jobs:${id}`, 'data', '{}')));
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
    await queued('j1', 'j2');
    expect(await isCancelRequested(redis, config, 'j1')).toBe(false);
    expect(await requestCancel(redis, config, 'j1')).toBe(true);
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

  it('a cancel published while the subscription was down (a dropped connection, a failover) still stops the running job', async () => {
    // A bot core (any instance) cancels a job another process runs: the flag is set, then the id published. A worker
    // whose subscriber connection is down at that moment misses the message; ioredis resubscribes after reconnecting but
    // nothing replays it. Until 2026-12 the worker read the flag only when the job started, so the job ran to its end
    // and its result was posted after the user was told "Cancelling…".
    const sub = new Redis(url, { retryStrategy: () => 300 }); // a reconnect 300 ms later: the publish lands in the gap
    try {
      const heard: string[] = [];
      const running = new Set(['j6', 'j7']);
      await queued('j6', 'j7', 'j8');
      const stop = await onCancel(sub, config, (id) => heard.push(id), { redis, running: () => running, recheckMs: 100 });
      sub.disconnect(true);
      const listeners = async () => ((await redis.call('PUBSUB', 'NUMSUB', cancelChannel(config))) as [string, number])[1];
      for (let i = 0; i < 50 && (await listeners()) > 0; i++) await sleep(2); // Redis has seen the connection go
      expect(await listeners()).toBe(0);
      await requestCancel(redis, config, 'j6'); // published while nobody of ours listens
      for (let i = 0; i < 300 && heard.length === 0; i++) await sleep(10);
      await sleep(300); // told once, not at every re-check
      expect(heard).toEqual(['j6']);
      // The subscription is back: a later cancel is heard as before, once
      await requestCancel(redis, config, 'j7');
      for (let i = 0; i < 300 && heard.length < 2; i++) await sleep(10);
      await sleep(300);
      expect(heard).toEqual(['j6', 'j7']);
      await stop();
      running.add('j8');
      await requestCancel(redis, config, 'j8');
      await sleep(300);
      expect(heard).toEqual(['j6', 'j7']); // stopped: no re-check either
    } finally {
      sub.disconnect();
    }
  });

  it('a job no longer in the queue gets no flag, though the workers are told: nothing of a purged job is written after its purge', async () => {
    // A cancel (or an admin's purge of a user's jobs) finds the job, then a retention purge deletes it and its per-job
    // keys (src/jobs/retention.ts), then the flag is set: until 2026-12 it stayed keepFailedSeconds (a day) after the
    // channel's TTL, naming the job.
    const sub = new Redis(url);
    try {
      const heard: string[] = [];
      const stop = await onCancel(sub, config, (id) => heard.push(id));
      const flagged = await requestCancel(redis, config, 'j9');
      expect(await redis.ttl(`${prefix}:cancelled:j9`), 'the flag of a job that is gone').toBe(-2);
      expect(flagged).toBe(false);
      for (let i = 0; i < 100 && heard.length === 0; i++) await sleep(10);
      expect(heard).toEqual(['j9']); // a worker running it still stops it (its hash gone mid-run: removed by an admin)
      await stop();
    } finally {
      sub.disconnect();
    }
  });
});
