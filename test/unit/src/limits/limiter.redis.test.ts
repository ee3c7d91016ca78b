import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import type { Destination } from '../../../../src/jobs/contract.ts';
import { createLimiter, denialMessage } from '../../../../src/limits/limiter.ts';
import { isUserError } from '../../../../src/errors.ts';
import { IN_SERVER } from '../../../doubles/refusal-places.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-${randomUUID().slice(0, 8)}`;
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
let redis: Redis;

const dest = (channelId: string, userId: string, guildId = 'g1'): Destination => ({
  platform: 'discord', guildId, channelId, userId, applicationId: 'app',
});
const limiterWith = (limits: Record<string, unknown>) =>
  createLimiter(redis, loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, user: open, workspace: open, ...limits } } }));
const jobKey = (id: string) => `${prefix}:jobs:${id}`;

beforeAll(() => {
  redis = new Redis(url);
});
const cleanupPrefixes: string[] = [];
afterAll(async () => {
  const keys = (await Promise.all([prefix, ...cleanupPrefixes].map((p) => redis.keys(`${p}:*`)))).flat();
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('limiter (real Redis)', () => {
  it('is all-or-nothing across scopes: a denial consumes nothing', async () => {
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 5, burst: 5 }, user: { ...open, requestsPerWindow: 1, burst: 1 } });
    expect(await limiter.admit('a1', dest('c1', 'u1'))).toEqual({ admitted: true, duplicate: false });
    const denied = await limiter.admit('a2', dest('c1', 'u1'));
    expect(denied).toMatchObject({ admitted: false, scope: 'user', kind: 'rate' });
    if (!denied.admitted) expect(denied.retryAfterMs).toBeGreaterThan(55_000);
    const usage = await limiter.usage('channel', 'discord:g1:c1', { ...open, requestsPerWindow: 5, burst: 5 });
    expect(usage.tokens).toBe(4); // the denied request took no channel token
    expect(await limiter.admit('a3', dest('c1', 'u2'))).toMatchObject({ admitted: true });
  });

  it('is exact under races: two connections, 40 concurrent requests, a cap of 3 and a burst of 7', async () => {
    const other = new Redis(url);
    try {
      const limits = { channel: { ...open, maxConcurrent: 3 }, user: { ...open, requestsPerWindow: 7, burst: 7 } };
      const a = limiterWith(limits);
      const b = createLimiter(other, loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { workspace: open, ...limits } } }));
      const capped = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).admit(`race-c${i}`, dest('race', `u${i}`))));
      expect(capped.filter((x) => x.admitted)).toHaveLength(3);
      const rated = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).admit(`race-r${i}`, dest(`race-${i}`, 'same-user'))));
      expect(rated.filter((x) => x.admitted)).toHaveLength(7);
    } finally {
      await other.quit();
    }
  });

  it('admits the same job id once (duplicate submissions)', async () => {
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 1, burst: 1 } });
    expect(await limiter.admit('d1', dest('c2', 'u1'))).toEqual({ admitted: true, duplicate: false });
    expect(await limiter.admit('d1', dest('c2', 'u1'))).toEqual({ admitted: true, duplicate: true });
    expect(await limiter.admit('d2', dest('c2', 'u1'))).toMatchObject({ admitted: false, scope: 'channel' });
  });

  it('names the scope whose rate holds longest, so retrying when it says is admitted', async () => {
    // channel: a token every 100 ms; user: one a second. The channel refuses too, but its wait is the shorter.
    const ws = { ...open, requestsPerWindow: 5, burst: 5 };
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 10, windowSeconds: 1, burst: 1 }, user: { ...open, requestsPerWindow: 1, windowSeconds: 1, burst: 1 }, workspace: ws });
    expect((await limiter.admit('lw1', dest('c40', 'u40', 'g40'))).admitted).toBe(true);
    const denied = await limiter.admit('lw2', dest('c40', 'u40', 'g40'));
    expect(denied).toMatchObject({ admitted: false, scope: 'user', kind: 'rate' });
    if (denied.admitted) return;
    expect(denied.retryAfterMs).toBeGreaterThan(800);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(1000);
    expect((await limiter.usage('workspace', 'discord:g40', ws)).tokens).toBe(4); // every scope was read, none taken
    await new Promise((r) => setTimeout(r, denied.retryAfterMs + 20));
    expect((await limiter.admit('lw2', dest('c40', 'u40', 'g40'))).admitted).toBe(true);
    // 60 a minute in the channel, 1 an hour for the user: the user's hour is what they read
    const hourly = limiterWith({ channel: { ...open, requestsPerWindow: 60, windowSeconds: 60, burst: 1 }, user: { ...open, requestsPerWindow: 1, windowSeconds: 3600, burst: 1 } });
    await hourly.admit('lh1', dest('c41', 'u41'));
    const later = await hourly.admit('lh2', dest('c41', 'u41'));
    expect(!later.admitted && denialMessage(later, IN_SERVER)).toBe('You can make 1 request per hour; try again in 60 min.');
  });

  it('names the longest wait whichever scope holds it, and the first scope in order on a tie', async () => {
    // the user's hour holds longer than the workspace's second, though the workspace is checked after it
    const second = { ...open, requestsPerWindow: 1, windowSeconds: 1, burst: 1 };
    const limiter = limiterWith({ user: { ...open, requestsPerWindow: 1, windowSeconds: 3600, burst: 1 }, workspace: second });
    await limiter.admit('lo1', dest('c46', 'u46', 'g46'));
    expect(await limiter.admit('lo2', dest('c46', 'u46', 'g46'))).toMatchObject({ admitted: false, scope: 'user', kind: 'rate' });
    // channel and user alike, emptied by one admission: the same wait; the channel, first in order, is named
    const tied = limiterWith({ channel: second, user: second });
    await tied.admit('lt1', dest('c47', 'u47'));
    expect(await tied.admit('lt2', dest('c47', 'u47'))).toMatchObject({ admitted: false, scope: 'channel', kind: 'rate' });
  });

  it('waits exactly a whole window for a whole token: 1 an hour from an empty bucket is 60 min, not 61', async () => {
    const limiter = limiterWith({ user: { ...open, requestsPerWindow: 1, windowSeconds: 3600, burst: 1 } });
    // an empty bucket that refills from a moment ahead (no time to refill in): exactly one token short.
    // (need − tokens) / perMs is 1 / (1 / 3600000) = 3600000.0000000005, rounded up to 3600001 ms.
    await redis.hset(`${prefix}:limits:rate:user:discord:u48`, 't', '0', 'ts', String(Date.now() + 60_000));
    const denied = await limiter.admit('le1', dest('c48', 'u48'));
    expect(denied).toMatchObject({ admitted: false, scope: 'user', kind: 'rate', retryAfterMs: 3_600_000 });
    expect(!denied.admitted && denialMessage(denied, IN_SERVER)).toBe('You can make 1 request per hour; try again in 60 min.');
  });

  it('names the first full cap in scope order when several are full', async () => {
    const one = { ...open, maxConcurrent: 1 };
    const limiter = limiterWith({ channel: one, user: one, workspace: one });
    await limiter.admit('lf1', dest('c49', 'u49', 'g49'));
    expect(await limiter.admit('lf2', dest('c49', 'u49', 'g49'))).toMatchObject({ admitted: false, scope: 'channel', kind: 'concurrency' });
  });

  it('names a full cap over any rate, with the longest rate wait as the earliest retry', async () => {
    const user = { ...open, requestsPerWindow: 1, windowSeconds: 3600, burst: 1, maxConcurrent: 1 };
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 60, windowSeconds: 60, burst: 1 }, user });
    await limiter.admit('lc1', dest('c42', 'u42'));
    const denied = await limiter.admit('lc2', dest('c42', 'u42'));
    expect(denied).toEqual({ admitted: false, scope: 'user', kind: 'concurrency', limit: user, retryAfterMs: expect.any(Number) });
    if (denied.admitted) return;
    expect(denied.retryAfterMs).toBeGreaterThan(3_590_000);
    expect(denialMessage(denied, IN_SERVER)).toBe('You already have 1 job queued or running, the most allowed; try again when one finishes, and not before 60 min from now.');
    // the channel's rate (a token a second) refuses first in scope order; the user's cap is still what blocks
    const capped = limiterWith({ channel: { ...open, requestsPerWindow: 60, windowSeconds: 60, burst: 1 }, user: { ...open, maxConcurrent: 1 } });
    await capped.admit('lc3', dest('c43', 'u43'));
    const both = await capped.admit('lc4', dest('c43', 'u43'));
    expect(both).toMatchObject({ admitted: false, scope: 'user', kind: 'concurrency' });
    if (!both.admitted) expect(both.retryAfterMs).toBeLessThanOrEqual(1000);
  });

  it('answers a huge window or burst already in Redis (set before the schema bounded them), and caps the key lifetime', async () => {
    const limiter = limiterWith({});
    // 2^53 − 1 seconds: the bucket's lifetime in ms would be written as 9.007199254741e+18, which PEXPIRE refuses
    await limiter.setChannelLimit('discord:g1:c44', { requestsPerWindow: 1, windowSeconds: 9_007_199_254_740_991, burst: 1, maxConcurrent: 0 });
    await limiter.setChannelLimit('discord:g1:c45', { requestsPerWindow: 1, windowSeconds: 60, burst: 9_007_199_254_740_991, maxConcurrent: 0 });
    try {
      expect(await limiter.admit('x1', dest('c44', 'u1'))).toEqual({ admitted: true, duplicate: false });
      const denied = await limiter.admit('x2', dest('c44', 'u1'));
      expect(denied).toMatchObject({ admitted: false, scope: 'channel', kind: 'rate', retryAfterMs: 1e13 }); // about 317 years
      expect(await limiter.admit('x3', dest('c45', 'u1'))).toEqual({ admitted: true, duplicate: false });
      for (const c of ['c44', 'c45']) {
        const ttl = await redis.pttl(`${prefix}:limits:rate:channel:discord:g1:${c}`);
        expect(ttl).toBeGreaterThan(1e13 - 60_000);
        expect(ttl).toBeLessThanOrEqual(1e13);
      }
    } finally {
      await limiter.resetChannelLimit('discord:g1:c44');
      await limiter.resetChannelLimit('discord:g1:c45');
    }
  });

  it('refills the bucket over time and says when to retry', async () => {
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 4, windowSeconds: 1, burst: 2 } });
    expect((await limiter.admit('r1', dest('c3', 'u1'))).admitted).toBe(true);
    expect((await limiter.admit('r2', dest('c3', 'u1'))).admitted).toBe(true);
    const denied = await limiter.admit('r3', dest('c3', 'u1'));
    expect(denied.admitted).toBe(false);
    if (denied.admitted) return;
    expect(denied.retryAfterMs).toBeGreaterThan(0);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(250);
    await new Promise((r) => setTimeout(r, denied.retryAfterMs + 20));
    expect((await limiter.admit('r3', dest('c3', 'u1'))).admitted).toBe(true);
  });

  it('caps jobs queued or running; release frees a slot exactly once', async () => {
    const limiter = limiterWith({ user: { ...open, maxConcurrent: 2 } });
    expect((await limiter.admit('k1', dest('c4', 'u9'))).admitted).toBe(true);
    expect((await limiter.admit('k2', dest('c5', 'u9'))).admitted).toBe(true);
    const denied = await limiter.admit('k3', dest('c4', 'u9'));
    expect(denied).toMatchObject({ admitted: false, scope: 'user', kind: 'concurrency' });
    await expect(limiter.admitOrThrow('k3', dest('c4', 'u9'))).rejects.toSatisfy(
      (e) => isUserError(e) && e.code === 'rate_limited' && /You already have 2 jobs queued or running/.test(e.message),
    );
    expect(await Promise.all([limiter.release('k1'), limiter.release('k1'), limiter.release('k1')])).toEqual([true, false, false]);
    expect((await limiter.admit('k3', dest('c4', 'u9'))).admitted).toBe(true);
  });

  it('heals: slots of finished or vanished jobs are freed without a release', async () => {
    const limiter = limiterWith({ channel: { ...open, maxConcurrent: 2 }, admitGraceMs: 300 });
    await limiter.admit('h1', dest('c6', 'u1'));
    await limiter.admit('h2', dest('c6', 'u1'));
    await redis.hset(jobKey('h1'), { timestamp: Date.now(), finishedOn: Date.now() }); // BullMQ finished it; the release was lost
    await redis.hset(jobKey('h2'), { timestamp: Date.now() }); // still queued
    expect(await limiter.admit('h3', dest('c6', 'u1'))).toMatchObject({ admitted: true });
    expect(await limiter.admit('h4', dest('c6', 'u1'))).toMatchObject({ admitted: false, kind: 'concurrency' });
    // h3 was admitted but its bot died before enqueueing: after the grace period a sweep frees it
    await new Promise((r) => setTimeout(r, 350));
    expect(await limiter.sweep()).toBeGreaterThanOrEqual(1);
    expect(await limiter.admit('h4', dest('c6', 'u1'))).toMatchObject({ admitted: true });
    expect((await limiter.usage('channel', 'discord:g1:c6', { ...open, maxConcurrent: 2 })).held).toBe(2);
  });

  it('heals a scope only when it looks full: below its cap an admission reads no held job', async () => {
    const limiter = limiterWith({ channel: { ...open, maxConcurrent: 3 } });
    await limiter.admit('l1', dest('c8', 'u1'));
    await redis.hset(jobKey('l1'), { timestamp: Date.now(), finishedOn: Date.now() }); // finished; its release was lost
    await limiter.admit('l2', dest('c8', 'u1')); // 1 held of 3: admitted without looking at l1
    const held = () => limiter.usage('channel', 'discord:g1:c8', { ...open, maxConcurrent: 3 }).then((u) => u.held);
    expect(await held()).toBe(2);
    await limiter.admit('l3', dest('c8', 'u1')); // 2 of 3: still no healing
    expect(await limiter.admit('l4', dest('c8', 'u1'))).toMatchObject({ admitted: true }); // full: l1 is healed first
    expect(await held()).toBe(3);
  });

  it('takes per-channel limits from config, then from Redis (Redis wins), and resets', async () => {
    const ck = 'discord:g1:c7';
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 100, burst: 100 }, channelOverrides: { [ck]: { ...open, requestsPerWindow: 2, burst: 2 } } });
    expect(await limiter.channelLimit(ck)).toMatchObject({ source: 'config', limit: { requestsPerWindow: 2 } });
    expect(await limiter.channelLimit('discord:g1:other')).toMatchObject({ source: 'default', limit: { requestsPerWindow: 100 } });
    await limiter.setChannelLimit(ck, { ...open, requestsPerWindow: 1, burst: 1 });
    expect(await limiter.channelLimit(ck)).toMatchObject({ source: 'redis', limit: { requestsPerWindow: 1 } });
    expect(await limiter.overriddenChannels()).toEqual([ck]);
    expect((await limiter.admit('o1', dest('c7', 'u1'))).admitted).toBe(true);
    expect(await limiter.admit('o2', dest('c7', 'u1'))).toMatchObject({ admitted: false, limit: { requestsPerWindow: 1 } });
    await limiter.resetChannelLimit(ck);
    expect(await limiter.channelLimit(ck)).toMatchObject({ source: 'config' });
    expect((await limiter.admit('o2', dest('c7', 'u1'))).admitted).toBe(true); // config allows 2
  });

  it('a denial names the whole limit that was hit, and admitOrThrow carries it as context', async () => {
    const spec = { ...open, requestsPerWindow: 2, windowSeconds: 30, burst: 1, maxConcurrent: 5 };
    const limiter = limiterWith({ workspace: spec });
    await limiter.admit('w1', dest('c10', 'u1', 'g10'));
    const denied = await limiter.admit('w2', dest('c11', 'u2', 'g10'));
    expect(denied).toEqual({ admitted: false, scope: 'workspace', kind: 'rate', limit: spec, retryAfterMs: expect.any(Number) });
    if (!denied.admitted) expect(denied.retryAfterMs).toBeGreaterThan(10_000); // 15 s per token
    const e = await limiter.admitOrThrow('w2', dest('c11', 'u2', 'g10')).catch((x: unknown) => x);
    expect(isUserError(e) && e.context).toEqual({ scope: 'workspace', kind: 'rate', retryAfterMs: expect.any(Number) });
    await expect(limiter.admitOrThrow('w3', dest('c12', 'u3', 'g11'))).resolves.toBeUndefined();
  });

  it('counts a cost below 1 as one request and a fractional cost as its whole part', async () => {
    const spec = { ...open, requestsPerWindow: 5, burst: 5 };
    const limiter = limiterWith({ user: spec });
    await limiter.admit('f1', dest('c13', 'u13'), 0);
    expect((await limiter.usage('user', 'discord:u13', spec)).tokens).toBe(4);
    await limiter.admit('f2', dest('c13', 'u13'), 2.9);
    expect((await limiter.usage('user', 'discord:u13', spec)).tokens).toBe(2);
  });

  it('settle frees the slot of a finished job only, once; usage shows tokens (none when the rate is off) and slots held', async () => {
    const spec = { ...open, requestsPerWindow: 1, burst: 1, maxConcurrent: 3 };
    const limiter = limiterWith({ channel: spec });
    await limiter.admit('s1', dest('c14', 'u1'));
    expect(await limiter.usage('channel', 'discord:g1:c14', spec)).toEqual({ limit: spec, tokens: 0, held: 1 });
    expect(await limiter.usage('channel', 'discord:g1:c14', { ...spec, requestsPerWindow: 0 })).toEqual({ limit: { ...spec, requestsPerWindow: 0 }, tokens: null, held: 1 });
    await redis.hset(jobKey('s1'), { timestamp: Date.now() });
    expect(await limiter.settle('s1')).toBe(false); // still queued or running (a retry keeps its slot)
    await redis.hset(jobKey('s1'), { finishedOn: Date.now() });
    expect(await limiter.settle('s1')).toBe(true);
    expect(await limiter.settle('s1')).toBe(false);
    expect((await limiter.usage('channel', 'discord:g1:c14', spec)).held).toBe(0);
  });

  it('a runtime override and its reset each start the channel from a full bucket; overridden channels are listed in order', async () => {
    const limiter = limiterWith({ channel: { ...open, requestsPerWindow: 1, burst: 1 } });
    const [a, b] = ['discord:g1:c16', 'discord:g1:c15'];
    expect((await limiter.admit('v1', dest('c16', 'u1'))).admitted).toBe(true);
    expect((await limiter.admit('v2', dest('c16', 'u1'))).admitted).toBe(false);
    await limiter.setChannelLimit(a, { ...open, requestsPerWindow: 1, burst: 1 });
    expect((await limiter.admit('v2', dest('c16', 'u1'))).admitted).toBe(true);
    expect((await limiter.admit('v3', dest('c16', 'u1'))).admitted).toBe(false);
    await limiter.setChannelLimit(b, { ...open, requestsPerWindow: 3 });
    // four more, out of order: Redis answers a set in hash order (random per server), so six make a sorted answer by
    // chance 1 in 720
    const more = ['discord:g1:c19', 'discord:g1:c11', 'discord:g1:c18', 'discord:g1:c12'];
    for (const c of more) await limiter.setChannelLimit(c, { ...open, requestsPerWindow: 3 });
    expect(await limiter.overriddenChannels()).toEqual([...more, a, b].sort());
    for (const c of more) await limiter.resetChannelLimit(c);
    await limiter.resetChannelLimit(a);
    expect((await limiter.admit('v3', dest('c16', 'u1'))).admitted).toBe(true);
    expect(await limiter.overriddenChannels()).toEqual([b]);
    await limiter.resetChannelLimit(b);
  });

  // Its own connection: the commands are defined on the first limiter of each connection, so this test (not an earlier
  // one) is where a misnamed command would show.
  it('defines every command it calls on a fresh connection', async () => {
    const fresh = new Redis(url);
    try {
      const spec = { ...open, maxConcurrent: 1 };
      const limiter = createLimiter(fresh, loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: spec, user: open, workspace: open } } }));
      expect(await limiter.admit('n1', dest('c20', 'u1'))).toEqual({ admitted: true, duplicate: false });
      expect((await limiter.usage('channel', 'discord:g1:c20', spec)).held).toBe(1);
      expect(await limiter.settle('n1')).toBe(true); // no such job in BullMQ: gone
      expect(await limiter.release('n1')).toBe(false);
      expect(await limiter.sweep()).toBe(0);
    } finally {
      await fresh.quit();
    }
  });

  it('keeps each queue prefix’s overrides and slots apart on one Redis', async () => {
    const spec = { ...open, maxConcurrent: 1 };
    const other = createLimiter(redis, loadConfig({ env: {}, overrides: { queue: { prefix: `${prefix}x` }, limits: { channel: spec, user: open, workspace: open, admitGraceMs: 1 } } }));
    const limiter = limiterWith({ channel: spec });
    cleanupPrefixes.push(`${prefix}x`);
    await limiter.setChannelLimit('discord:g1:c30', { ...open, requestsPerWindow: 1, burst: 1 });
    expect(await other.channelLimit('discord:g1:c30')).toMatchObject({ source: 'default' });
    expect(await other.overriddenChannels()).toEqual([]);
    await limiter.admit('p1', dest('c31', 'u1'));
    expect(await other.release('p1')).toBe(false); // not its slot
    expect((await limiter.usage('channel', 'discord:g1:c31', spec)).held).toBe(1);
    await limiter.resetChannelLimit('discord:g1:c30');
    await limiter.release('p1');
    // the same job id under both prefixes: releasing one leaves the other's lease for its sweep to find
    await limiter.admit('same', dest('c32', 'u1'));
    await other.admit('same', dest('c32', 'u1'));
    expect(await limiter.release('same')).toBe(true);
    await new Promise((r) => setTimeout(r, 5));
    expect(await other.sweep()).toBe(1); // its job never reached BullMQ and the grace (1 ms) is over
    expect((await other.usage('channel', 'discord:g1:c32', spec)).held).toBe(0);
  });
});
