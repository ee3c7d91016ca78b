// What a worker does once a job's result is handed over (worker/after-job.ts), over real Redis: the GPU-seconds
// counted once, the result stored in the cache, the flight ended and each follower handed its own delivery, in one
// script per completion, each follower with its own copy of the PNG; called again (a re-run after a crash) it counts
// nothing twice and hands over the same.
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import { cacheAddress } from '../../doubles/cache-address.ts';
import { ResultCache } from '../../../src/cache/results.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { CheckOverrides } from '../../../src/checks/policy.ts';
import { channelKey, CONTRACT_VERSION, type Destination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { Usage } from '../../../src/accounting/usage.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../src/redis.ts';
import { createAfterJob, modelIdentity } from '../../../worker/after-job.ts';
import { withheldError } from '../../../worker/review.ts';
import type { Logger } from '../../../src/log.ts';
import { createLogger } from '../../../src/log.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-afterjob-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, cache: { enabled: true, singleFlight: true } } });
const dest = (userId: string, extra: Partial<Destination> = {}): Destination =>
  ({ platform: 'discord', guildId: 'g', channelId: 'c', userId, applicationId: 'app', ...extra }) as Destination;
const imagine = (id: string, d: Destination, prompt = 'a marten'): JobRequest =>
  ({ v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'imagine', prompt, options: { seed: 3, ditSteps: 4, decoderSteps: 5, guidance: 4, aspect: '1:1' } }) as JobRequest;
let redis: Redis;

beforeAll(() => {
  redis = createRedis(url);
});
afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('afterHandOver', () => {
  it('settles, stores and hands over to the followers in one script call; a second call counts nothing twice', async () => {
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-j' });
    const cache = new ResultCache(redis, config);
    const usage = new Usage(redis, config);
    const leader = imagine('j1', dest('ju'));
    const follower = imagine('j2', dest('jv'));
    const digest = (await cacheAddress({ redis, config, blobs }, leader))!;
    try {
      await cache.publishModel('model-j', 'w1');
      expect(await usage.admit('j1', leader.destination, leader)).toMatchObject({ admitted: true }); // a reservation to release
      expect(await cache.claim(digest, 'j1', '{}')).toEqual({ leads: true });
      expect(await cache.claim(digest, 'j2', JSON.stringify(follower))).toEqual({ leads: false, leaderJobId: 'j1' });
      const png = new Uint8Array([137, 80, 78, 71, 0, 255, 13, 10]);
      const blobKey = await blobs.put(png, 'output');
      const result: JobResult = {
        v: CONTRACT_VERSION, jobId: 'j1', kind: 'imagine', destination: leader.destination, status: 'succeeded', timingsMs: { features: 3_000, decoding: 1_000 }, finishedAt: 1,
        image: { blobKey, mime: 'image/png', width: 8, height: 8, altText: 'a marten', prompt: 'a marten', options: (leader as Extract<JobRequest, { kind: 'imagine' }>).options },
      };
      const separate = ['blip3oUsageSettle', 'blip3oCachePut', 'blip3oCacheClose'].map((m) => vi.spyOn(redis as unknown as Record<string, () => unknown>, m));
      const reads = vi.spyOn(blobs, 'get');
      await after.afterHandOver(leader, result, 9_000, png); // the worker passes the bytes it stored
      for (const spy of separate) expect(spy).not.toHaveBeenCalled(); // one script, not three
      expect(reads).not.toHaveBeenCalled(); // nor read back

      const today = async () => (await usage.today(leader.destination)).user;
      expect(await today()).toEqual({ used: 4, inflight: 0 }); // the stages measured, the reservation released
      expect(await usage.release('j1')).toBe(false);
      const looked = await cache.lookup(digest, 'j3', '{}');
      // the bytes as they were, and the options that drew them
      expect(looked).toEqual({ kind: 'hit', meta: { kind: 'image', width: 8, height: 8, options: result.image!.options }, png });
      const q = createDeliveryQueue(config, redis, deliveryQueueName(follower.destination));
      try {
        const handed = await q.getJob('j2');
        expect(handed?.data).toMatchObject({ jobId: 'j2', destination: follower.destination, servedFrom: 'shared', status: 'succeeded' });
        const own = handed!.data.image!.blobKey;
        expect(await cache.claim(digest, 'j4', '{}')).toEqual({ leads: true }); // the flight is over

        await after.afterHandOver(leader, result, 9_000); // a re-run after a crash: no bytes at hand
        expect(reads).toHaveBeenCalledWith(blobKey); // read back
        expect(await today()).toEqual({ used: 4, inflight: 0 }); // counted once
        expect(await q.getJobCounts('waiting')).toEqual({ waiting: 1 }); // the same follower, the same delivery id
        expect((await q.getJob('j2'))?.data.image?.blobKey).toBe(own); // and the same copy

        // its own copy of the PNG: the leader's delivery releases the leader's, which the follower's outlives
        expect(own).not.toBe(blobKey);
        expect(await blobs.get(own)).toEqual(png);
        await blobs.release(blobKey, 1);
        expect(await redis.ttl(own)).toBeGreaterThan(config.blobs.keepDeliveredSeconds);
      } finally {
        await q.close();
      }
    } finally {
      await after.close();
    }
  });

  // Before 2026-12-07 after-job read the leader's channel's checks when the job ended, not the ones its run had used:
  // an admin's change during the run kept the result out of the cache and told followers elsewhere, checked as the run
  // was, to send their request again.
  it('shares by the checks its run used (the processor\'s scope), not the channel\'s after an admin changed them mid-run', async () => {
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-j' });
    const cache = new ResultCache(redis, config);
    const overrides = new CheckOverrides(redis, config.queue.prefix);
    const leader = imagine('m1', dest('mu', { channelId: 'cm' }), 'a heron');
    const follower = imagine('m2', dest('mv', { channelId: 'cm2' }), 'a heron');
    const queuedIn = await overrides.scopeFor(config, leader.destination);
    const digest = (await cacheAddress({ redis, config, blobs }, leader))!;
    try {
      await cache.publishModel('model-j', 'w1');
      expect(await cache.claim(digest, 'm1', '{}')).toEqual({ leads: true });
      await cache.recordFlight('m1', digest, queuedIn);
      expect(await cache.claim(digest, 'm2', JSON.stringify(follower))).toEqual({ leads: false, leaderJobId: 'm1' });
      await overrides.set(channelKey(leader.destination), { moderation: true }); // during the run
      const png = new Uint8Array([137, 80, 78, 71, 1, 2, 3, 4]);
      const result: JobResult = {
        v: CONTRACT_VERSION, jobId: 'm1', kind: 'imagine', destination: leader.destination, status: 'succeeded', timingsMs: { features: 1_000 }, finishedAt: 1,
        image: { blobKey: await blobs.put(png, 'output'), mime: 'image/png', width: 8, height: 8, altText: 'a heron', prompt: 'a heron', options: (leader as Extract<JobRequest, { kind: 'imagine' }>).options },
      };
      await after.afterHandOver(leader, result, 1_000, png, queuedIn); // the run read the checks as queued
      expect(await cache.lookup(digest, 'm3', '{}')).toMatchObject({ kind: 'hit' }); // made under the queued checks: stored
      const q = createDeliveryQueue(config, redis, deliveryQueueName(follower.destination));
      try {
        expect((await q.getJob('m2'))?.data).toMatchObject({ status: 'succeeded', servedFrom: 'shared' }); // checked alike: shared
      } finally {
        await q.close();
      }
    } finally {
      await overrides.reset(channelKey(leader.destination));
      await after.close();
    }
  });

  it('a job with no digest (a channel with a retention TTL) or a failure is still counted, and nothing is stored', async () => {
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-j' });
    const usage = new Usage(redis, config);
    const kept = imagine('k1', dest('ku', { retentionSeconds: 60 }));
    const failed = imagine('k2', dest('kv'), 'a failing stoat');
    try {
      expect(await cacheAddress({ redis, config, blobs }, kept)).toBeUndefined();
      const base = { v: CONTRACT_VERSION, kind: 'imagine' as const, timingsMs: { features: 2_000 }, finishedAt: 1 };
      await after.afterHandOver(kept, { ...base, jobId: 'k1', destination: kept.destination, status: 'failed', error: { code: 'internal', message: 'x', userFacing: false } }, 2_000);
      expect((await usage.today(kept.destination)).user.used).toBe(2);
      await after.afterHandOver(failed, { ...base, jobId: 'k2', destination: failed.destination, status: 'failed', error: { code: 'internal', message: 'x', userFacing: false } }, 2_000);
      expect((await usage.today(failed.destination)).user.used).toBe(2);
      const cache = new ResultCache(redis, config);
      await cache.publishModel('model-j', 'w1');
      expect(await cache.lookup((await cacheAddress({ redis, config, blobs }, failed))!, 'k3', '{}')).toEqual({ kind: 'miss' }); // a failure is not stored
    } finally {
      await after.close();
    }
  });

  it("stores an answer; not a result served from elsewhere, nor anything with the cache off; says so when followers got it", async () => {
    const blobs = createBlobStore(config, redis);
    const info = vi.fn();
    const after = createAfterJob({ config, redis, blobs, log: { info, warn: vi.fn() } as unknown as Logger, manifestHash: 'model-j' });
    const off = loadConfig({ env: {}, overrides: { queue: { prefix }, cache: { enabled: false } } });
    const afterOff = createAfterJob({ config: off, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-j' });
    const cache = new ResultCache(redis, config);
    const ask = { v: CONTRACT_VERSION, submittedAt: 1, id: 's1', destination: dest('su'), kind: 'ask', imageKey: await blobs.put(Uint8Array.from([1, 2, 3]), 'input'), question: 'which bird?', history: [], options: { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 } } satisfies JobRequest as JobRequest;
    const png = new Uint8Array([137, 80, 78, 71, 1]);
    const image = async (r: JobRequest) => ({ blobKey: await blobs.put(png, 'output'), mime: 'image/png' as const, width: 1, height: 1, altText: 'x', prompt: 'x', options: (r as Extract<JobRequest, { kind: 'imagine' }>).options });
    const [served, unstored] = [imagine('s2', dest('sv'), 'a served heron'), imagine('s3', dest('sw'), 'an uncached heron')];
    try {
      await cache.publishModel('model-j', 'w1'); // the one model of this file's tests: two would bypass the cache
      await after.afterHandOver(ask, { v: CONTRACT_VERSION, jobId: 's1', kind: 'ask', destination: ask.destination, status: 'succeeded', answer: { text: 'a heron', tokenCount: 2 }, timingsMs: {}, finishedAt: 1 }, 1_000);
      expect(await cache.lookup((await cacheAddress({ redis, config, blobs }, ask))!, 's9', '{}')).toEqual({ kind: 'hit', meta: { kind: 'answer', text: 'a heron', tokenCount: 2 } });
      await after.afterHandOver(served, { v: CONTRACT_VERSION, jobId: 's2', kind: 'imagine', destination: served.destination, status: 'succeeded', servedFrom: 'cache', image: await image(served), timingsMs: {}, finishedAt: 1 }, 1_000, png);
      expect(await cache.lookup((await cacheAddress({ redis, config, blobs }, served))!, 's8', '{}')).toEqual({ kind: 'miss' });
      await afterOff.afterHandOver(unstored, { v: CONTRACT_VERSION, jobId: 's3', kind: 'imagine', destination: unstored.destination, status: 'succeeded', image: await image(unstored), timingsMs: {}, finishedAt: 1 }, 1_000, png);
      expect(await cache.lookup((await cacheAddress({ redis, config, blobs }, unstored))!, 's7', '{}')).toEqual({ kind: 'miss' });
      expect(info).not.toHaveBeenCalled(); // nobody joined these
      // one follower joins a flight: its hand-over is logged with how many
      const [leader, follower] = [imagine('s4', dest('sx'), 'a joined heron'), imagine('s5', dest('sy'), 'a joined heron')];
      const digest = (await cacheAddress({ redis, config, blobs }, leader))!;
      expect(await cache.claim(digest, 's4', '{}')).toEqual({ leads: true });
      expect(await cache.claim(digest, 's5', JSON.stringify(follower))).toEqual({ leads: false, leaderJobId: 's4' });
      await after.afterHandOver(leader, { v: CONTRACT_VERSION, jobId: 's4', kind: 'imagine', destination: leader.destination, status: 'succeeded', image: await image(leader), timingsMs: {}, finishedAt: 1 }, 1_000, png);
      expect(info).toHaveBeenCalledWith({ jobId: 's4', followers: 1 }, 'result handed to identical requests that joined this job');
    } finally {
      await after.close();
      await afterOff.close();
    }
  });

  it('warns, and goes on, when an upload cannot be released (it expires on its own)', async () => {
    const blobs = createBlobStore(config, redis);
    const warn = vi.fn();
    const after = createAfterJob({ config, redis, blobs, log: { info: vi.fn(), warn } as unknown as Logger, manifestHash: 'model-w' });
    vi.spyOn(blobs, 'release').mockRejectedValue(new Error('OOM command not allowed'));
    const ask = { v: CONTRACT_VERSION, submittedAt: 1, id: 'w1', destination: dest('wu'), kind: 'ask', imageKey: await blobs.put(Uint8Array.from([4, 5]), 'input'), question: 'what?', history: [], options: { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 } } satisfies JobRequest as JobRequest;
    try {
      await after.afterHandOver(ask, { v: CONTRACT_VERSION, jobId: 'w1', kind: 'ask', destination: ask.destination, status: 'failed', error: { code: 'internal', message: 'x', userFacing: false }, timingsMs: {}, finishedAt: 1 }, 1_000);
      expect(warn).toHaveBeenCalledWith({ jobId: 'w1', err: 'OOM command not allowed' }, 'could not release the uploaded image; it expires with blobs.ttlSeconds');
    } finally {
      await after.close();
    }
  });

  it("deletes the followers' uploads when the checks flagged the input, told by the error's code, not its words", async () => {
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-x' });
    const cache = new ResultCache(redis, config);
    const vary = async (id: string, user: string, shade: number) =>
      ({ ...imagine(id, dest(user), `in ink ${shade}`), kind: 'vary', imageKey: await blobs.put(Uint8Array.from([137, 80, 78, 71, shade]), 'input') }) as unknown as JobRequest;
    const uploadOf = (r: JobRequest) => (r as Extract<JobRequest, { imageKey: string }>).imageKey;
    /** A leader and one follower of its flight (each with its own upload of the same bytes); the leader ends with `error`. */
    const flaggedFlight = async (n: number, error: { code: string; message: string }) => {
      const [leader, follower] = [await vary(`x${n}`, 'xu', n), await vary(`x${n}f`, 'xv', n)];
      const digest = (await cacheAddress({ redis, config, blobs }, leader))!;
      expect(await cache.claim(digest, leader.id, '{}')).toEqual({ leads: true });
      expect(await cache.claim(digest, follower.id, JSON.stringify(follower))).toMatchObject({ leads: false });
      const result: JobResult = { v: CONTRACT_VERSION, jobId: leader.id, kind: 'vary', destination: leader.destination, status: 'failed', error: { ...error, userFacing: true, private: true }, timingsMs: {}, finishedAt: 1 };
      await after.afterHandOver(leader, result, 1_000);
      return redis.exists(uploadOf(follower));
    };
    const reworded = 'Reworded: this image was flagged here.';
    try {
      expect(await flaggedFlight(1, { code: withheldError(['gore'], true).code, message: reworded })).toBe(0); // the input's verdict
      // a generated image's verdict, even in the input verdict's words: the follower's upload goes as its own job's would
      expect(await flaggedFlight(2, { code: withheldError(['gore'], false).code, message: withheldError(['gore'], true).message })).toBe(1);
    } finally {
      await after.close();
    }
  });

  it("a model is identified by its manifest's bytes; a swapped-in pipeline (tests), by its module path", () => {
    const dir = mkdtempSync(join(tmpdir(), 'model-id-'));
    writeFileSync(join(dir, 'manifest.json'), '{"graphs":["a"]}');
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    expect(modelIdentity(dir, 'worker/pipeline/index.ts')).toBe(sha('{"graphs":["a"]}'));
    expect(modelIdentity(join(dir, 'missing'), 'test/doubles/pipeline.ts')).toBe(sha('pipeline:test/doubles/pipeline.ts'));
    expect(modelIdentity(undefined, 'test/doubles/pipeline.ts')).toBe(sha('pipeline:test/doubles/pipeline.ts'));
  });

  it('releases an /ask\'s upload once it is answered, and a vary\'s once its Re-roll window closes', async () => {
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'model-j' });
    const upload = () => blobs.put(Uint8Array.from([137, 80, 78, 71, 9]), 'input');
    const ttlOf = (r: JobRequest) => redis.ttl((r as Extract<JobRequest, { imageKey: string }>).imageKey);
    try {
      const ask = { v: CONTRACT_VERSION, submittedAt: 1, id: 'a1', destination: dest('au'), kind: 'ask', imageKey: await upload(), question: 'what is it?', history: [], options: { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 } } satisfies JobRequest as JobRequest;
      const vary = (id: string) => async () => ({ ...imagine(id, dest('av')), kind: 'vary', imageKey: await upload() }) as unknown as JobRequest;
      const [varied, failedVary] = await Promise.all([vary('a2')(), vary('a3')()]);
      const ended = (r: JobRequest, status: 'succeeded' | 'failed'): JobResult =>
        status === 'succeeded'
          ? { v: CONTRACT_VERSION, jobId: r.id, kind: r.kind, destination: r.destination, status, timingsMs: {}, finishedAt: 1 }
          : { v: CONTRACT_VERSION, jobId: r.id, kind: r.kind, destination: r.destination, status, error: { code: 'internal', message: 'x', userFacing: false }, timingsMs: {}, finishedAt: 1 };
      await after.afterHandOver(ask, ended(ask, 'failed'), 1_000);
      await after.afterHandOver(varied, ended(varied, 'succeeded'), 1_000);
      await after.afterHandOver(failedVary, ended(failedVary, 'failed'), 1_000);
      expect(await ttlOf(ask)).toBeLessThanOrEqual(config.blobs.keepDeliveredSeconds);
      expect(await ttlOf(varied)).toBeGreaterThan(config.blobs.keepDeliveredSeconds);
      expect(await ttlOf(varied)).toBeLessThanOrEqual(config.queue.keepCompletedSeconds); // re-rollable while its job is kept
      expect(await ttlOf(failedVary)).toBeGreaterThan(config.queue.keepCompletedSeconds); // a failed job is kept longer
    } finally {
      await after.close();
    }
  });
});

describe('the model identity', () => {
  it('is published at start and every cache.manifestRefreshMs (a failure only warns) until close()', async () => {
    const own = `${prefix}-pub`;
    const fast = loadConfig({ env: {}, overrides: { queue: { prefix: own }, cache: { enabled: true, manifestRefreshMs: 100 } } });
    const warn = vi.fn();
    const after = createAfterJob({ config: fast, redis, blobs: createBlobStore(fast, redis), log: { info: vi.fn(), warn } as unknown as Logger, manifestHash: 'model-p' });
    const models = `${own}:{cache}:models`;
    const expiry = async () => Number(await redis.zscore(models, 'model-p\nworker-p'));
    try {
      const t0 = Date.now();
      await after.start('worker-p');
      const first = await expiry(); // published at once, for three refresh periods
      expect(first).toBeGreaterThanOrEqual(t0 + 300 - 50);
      expect(first).toBeLessThanOrEqual(Date.now() + 300 + 50);
      await new Promise((r) => setTimeout(r, 350));
      expect(await expiry()).toBeGreaterThan(first); // published again
      await redis.del(models);
      await redis.set(models, 'not a sorted set');
      await new Promise((r) => setTimeout(r, 250));
      expect(warn).toHaveBeenCalledWith({ err: expect.stringContaining('WRONGTYPE') }, 'could not publish the model identity');
    } finally {
      await after.close();
    }
    await redis.del(models);
    await new Promise((r) => setTimeout(r, 250));
    expect(await redis.exists(models)).toBe(0); // stopped
    await deleteKeys(redis, `${own}:*`);
  });
});
