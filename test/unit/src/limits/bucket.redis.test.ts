// The token bucket as a property over real Redis: whatever the spacing of requests, no window of time ever admits
// more than the burst plus what the rate refills in it. Times are Redis's own (the script reads TIME): each admitted
// request happened between the TIME read just before and just after its call, which bounds every window from above.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import { createLimiter } from '../../../../src/limits/limiter.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-bucket-${randomUUID().slice(0, 8)}`;
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
let redis: Redis;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowMs = async () => {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Number(us) / 1000;
};

beforeAll(() => {
  redis = new Redis(url);
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('token bucket', () => {
  it('never admits more than burst + rate × window over any window of time (property)', async () => {
    const rpw = 5; // per second
    const perMs = rpw / 1000;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.array(fc.integer({ min: 0, max: 120 }), { minLength: 2, maxLength: 12 }), async (burst, gaps) => {
        const channel = `c${run++}`;
        const limiter = createLimiter(
          redis,
          loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: { ...open, requestsPerWindow: rpw, windowSeconds: 1, burst }, user: open, workspace: open } } }),
        );
        const admitted: { before: number; after: number }[] = [];
        let denied = 0;
        for (const [i, gap] of gaps.entries()) {
          await sleep(gap);
          const before = await nowMs();
          const a = await limiter.admit(`${channel}-${i}`, { platform: 'discord', guildId: 'g', channelId: channel, userId: 'u', applicationId: 'app' });
          const after = await nowMs();
          if (a.admitted) admitted.push({ before, after });
          else {
            denied++;
            expect(a).toMatchObject({ scope: 'channel', kind: 'rate' });
            if (!a.admitted) expect(a.retryAfterMs).toBeLessThanOrEqual(Math.ceil(1 / perMs));
          }
        }
        expect(admitted.length).toBeGreaterThanOrEqual(Math.min(burst, gaps.length)); // a full bucket admits the burst at once
        for (let i = 0; i < admitted.length; i++) {
          for (let j = i; j < admitted.length; j++) {
            expect(j - i + 1).toBeLessThanOrEqual(burst + perMs * (admitted[j]!.after - admitted[i]!.before));
          }
        }
        expect(admitted.length + denied).toBe(gaps.length);
      }),
      { numRuns: process.env.MUTATION_RUN ? 3 : 10 },
    );
  });
});
