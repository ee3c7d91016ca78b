// The delivery claim (src/jobs/ledger.ts claim/renew/release, used by bots/core/delivery.ts): BullMQ can start
// the same delivery job twice at once when its lock lapses (Redis failing over, a stalled event loop). Without
// the claim both runs pass the ledger check and post; with it the second run backs off and later finds the
// ledger mark.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryInProgress, deliverOne, type DeliveryDeps } from '../../../../bots/core/delivery.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type JobResult } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createLogger } from '../../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { cleanup } from '../../../doubles/spine-harness.ts';

const prefix = `t-claim-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix, lockDurationMs: 400 } } });
let redis: Redis;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
});
afterAll(async () => {
  await cleanup(redis, prefix);
  await closeRedis(redis);
});

function slowPort(ms: number, fail = false): PlatformPort & { posts: string[] } {
  const posts: string[] = [];
  return {
    platform: 'cli',
    posts,
    async showProgress() {},
    async deliver(result: JobResult) {
      await new Promise((r) => setTimeout(r, ms));
      if (fail) throw new Error('platform said 500');
      posts.push(result.jobId);
    },
  };
}

const result = (jobId: string): JobResult => ({
  v: CONTRACT_VERSION, jobId, kind: 'ask', status: 'succeeded', destination: { platform: 'cli', clientId: 'c', channelId: 'local', userId: 'u' },
  answer: { text: 'hi', tokenCount: 1 }, timingsMs: {}, finishedAt: Date.now(),
});

const depsFor = (port: PlatformPort): DeliveryDeps => ({
  config, redis, port, ledger: new DeliveryLedger(redis, config), log: createLogger('test', 'fatal'),
  blobs: { put: async () => '', get: async () => undefined, delete: async () => undefined } as unknown as DeliveryDeps['blobs'],
});

describe('delivery claim', () => {
  it('two runs of one delivery at once post once; the second backs off, then sees it delivered', async () => {
    const port = slowPort(1_000); // slower than the claim's 400 ms: the claim is renewed while posting
    const deps = depsFor(port);
    const jobId = `j${randomUUID().slice(0, 8)}`;
    const first = deliverOne(deps, result(jobId));
    await new Promise((r) => setTimeout(r, 50));
    await expect(deliverOne(deps, result(jobId))).rejects.toBeInstanceOf(DeliveryInProgress);
    await new Promise((r) => setTimeout(r, 600)); // past the claim's first expiry: still held (renewed)
    await expect(deliverOne(deps, result(jobId))).rejects.toBeInstanceOf(DeliveryInProgress);
    expect(await first).toBe('delivered');
    expect(await deliverOne(deps, result(jobId))).toBe('duplicate'); // the retry
    expect(port.posts).toEqual([jobId]);
  });

  it('a failed post gives the claim back, so the retry posts at once', async () => {
    const jobId = `j${randomUUID().slice(0, 8)}`;
    await expect(deliverOne(depsFor(slowPort(10, true)), result(jobId))).rejects.toThrow('platform said 500');
    const port = slowPort(10);
    expect(await deliverOne(depsFor(port), result(jobId))).toBe('delivered');
    expect(port.posts).toEqual([jobId]);
  });

  it('a claim whose owner died expires, and the next run posts (the window where deliver must be idempotent)', async () => {
    const jobId = `j${randomUUID().slice(0, 8)}`;
    const ledger = new DeliveryLedger(redis, config);
    expect(await ledger.claim(jobId, 'dead-owner', 300)).toBe(true);
    const port = slowPort(10);
    await expect(deliverOne(depsFor(port), result(jobId))).rejects.toBeInstanceOf(DeliveryInProgress);
    await new Promise((r) => setTimeout(r, 400));
    expect(await deliverOne(depsFor(port), result(jobId))).toBe('delivered');
    expect(await ledger.renewClaim(jobId, 'dead-owner', 300)).toBe(false);
  });
});
