// What a user reads when a rate limit refuses a several-image request (src/limits/gate.ts, limiter.ts): the request
// takes one token per image, so a user who made fewer requests than the limit learns why they were refused.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import { isUserError } from '../../../../src/errors.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../src/jobs/contract.ts';
import { createJobsQueue } from '../../../../src/jobs/queue.ts';
import { createGate } from '../../../../src/limits/gate.ts';
import { denialMessage } from '../../../../src/limits/limiter.ts';
import { IN_SLACK } from '../../../doubles/refusal-places.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-gate-images-${randomUUID().slice(0, 8)}`;
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
let redis: Redis;

const d: Destination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'app' };
const imagine = (id: string, count?: number): JobRequest => ({
  v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'imagine', prompt: 'a fox',
  options: { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1', ...(count ? { count } : {}) },
});

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('a rate limit refusing a several-image request', () => {
  it('says that the request counts one per image', async () => {
    const config = loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: { ...open, requestsPerWindow: 5, burst: 5 }, user: open, workspace: open, repairIntervalMs: 60_000 } } });
    const queue = createJobsQueue(config, redis);
    const gate = createGate(redis, config, queue);
    try {
      await gate.admit('one', d, imagine('one'));
      await gate.admit('two', d, imagine('two'));
      // Two requests of the five a minute: three tokens left, and four images need four.
      const refused = await gate.admit('four', d, imagine('four', 4)).catch((e: unknown) => e);
      expect(isUserError(refused) && refused.code).toBe('rate_limited');
      expect((refused as Error).message).toMatch(/^This channel allows 5 requests per minute, and a request for 4 images counts as 4; try again in \d+ s\.$/);
      // One image passes at once.
      expect(await gate.admit('three', d, imagine('three'))).toMatchObject({ estimate: 0 });
    } finally {
      gate.stop();
      await queue.close();
    }
  });

  it('counts a request for more images than the bucket holds as a full bucket', () => {
    const limit = { requestsPerWindow: 3, windowSeconds: 3600, burst: 0, maxConcurrent: 0 };
    const refusal = { admitted: false as const, scope: 'user' as const, kind: 'rate' as const, limit, retryAfterMs: 600_000 };
    expect(denialMessage(refusal, IN_SLACK, 4)).toBe('You can make 3 requests per hour, and a request for 4 images counts as 3; try again in 10 min.');
    expect(denialMessage(refusal, IN_SLACK, 1)).toBe('You can make 3 requests per hour; try again in 10 min.');
    expect(denialMessage(refusal, IN_SLACK)).toBe('You can make 3 requests per hour; try again in 10 min.');
  });
});
