// A several-image /imagine counts as N requests in the rate limits (issue 20): N tokens taken at once, a denial
// takes none, and a cost above the whole bucket needs a full bucket (never refused forever).
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import type { Destination } from '../../../../src/jobs/contract.ts';
import { createLimiter } from '../../../../src/limits/limiter.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-${randomUUID().slice(0, 8)}`;
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
let redis: Redis;
const dest = (channelId: string, userId: string): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const limiterWith = (limits: Record<string, unknown>) =>
  createLimiter(redis, loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, user: open, workspace: open, ...limits } } }));

beforeAll(() => {
  redis = new Redis(url);
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('limiter cost (several images per request)', () => {
  it('a 4-image request takes 4 tokens; one that does not fit takes none', async () => {
    const spec = { ...open, requestsPerWindow: 6, burst: 6 };
    const limiter = limiterWith({ user: spec });
    expect(await limiter.admit('c1', dest('c1', 'u1'), 4)).toMatchObject({ admitted: true });
    expect((await limiter.usage('user', 'discord:u1', spec)).tokens).toBe(2);
    expect(await limiter.admit('c2', dest('c1', 'u1'), 4)).toMatchObject({ admitted: false, scope: 'user', kind: 'rate' });
    expect((await limiter.usage('user', 'discord:u1', spec)).tokens).toBe(2); // the denial took nothing
    expect(await limiter.admit('c3', dest('c1', 'u1'), 2)).toMatchObject({ admitted: true });
  });

  it('a cost above the bucket needs a full bucket and empties it', async () => {
    const spec = { ...open, requestsPerWindow: 3, burst: 3 };
    const limiter = limiterWith({ channel: spec });
    expect(await limiter.admit('d1', dest('c9', 'u2'), 8)).toMatchObject({ admitted: true });
    expect(await limiter.admit('d2', dest('c9', 'u2'), 1)).toMatchObject({ admitted: false, scope: 'channel' });
  });
});
