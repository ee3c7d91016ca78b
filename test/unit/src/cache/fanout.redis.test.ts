// Handing a leader's result to the followers of its flight (src/cache/fanout.ts), over real Redis: each follower's
// delivery names its own copies of the leader's PNGs (a gallery's shown image and its first the same copy), so the
// leader's delivery, which releases the leader's PNGs, never takes a follower's; a repeat hands over the same; a PNG
// already gone leaves the leader's key (the follower's delivery then says it expired); an answer copies nothing.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../../src/blobs/index.ts';
import type { BlobStore } from '../../../../src/blobs/store.ts';
import { CHECKS_DIFFER, DeliveryQueues, digestOf, handOverEach, leaderAddress } from '../../../../src/cache/fanout.ts';
import { scopedDigest } from '../../../../src/cache/key.ts';
import { ResultCache } from '../../../../src/cache/results.ts';
import { CheckOverrides } from '../../../../src/checks/policy.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type ImageResult, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../src/redis.ts';

const prefix = `t-fanout-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const dest = (userId: string): Destination => ({ platform: 'discord', guildId: 'g', channelId: 'c', userId, applicationId: 'app' }) as Destination;
const follower = (id: string) => JSON.stringify({ v: CONTRACT_VERSION, id, destination: dest(id), submittedAt: 1, kind: 'imagine', prompt: 'a vole', options: { seed: 1, ditSteps: 4, decoderSteps: 5, guidance: 4, aspect: '1:1' } } satisfies JobRequest);
const image = (blobKey: string): ImageResult => ({ blobKey, mime: 'image/png', width: 8, height: 8, altText: 'a vole', prompt: 'a vole', options: { seed: 1, ditSteps: 4, decoderSteps: 5, guidance: 4, aspect: '1:1' } });
const leaderResult = (extra: Partial<JobResult>): JobResult => ({ v: CONTRACT_VERSION, jobId: 'lead', kind: 'imagine', destination: dest('lead'), status: 'succeeded', timingsMs: {}, finishedAt: 1, ...extra });
let redis: Redis;
let blobs: BlobStore;
let queues: DeliveryQueues;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  blobs = createBlobStore(config, redis);
  queues = new DeliveryQueues(config, redis);
});
afterAll(async () => {
  await queues.close();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

async function handed(id: string): Promise<JobResult> {
  const q = createDeliveryQueue(config, redis, deliveryQueueName(dest(id)));
  try {
    return (await q.getJob(id))!.data;
  } finally {
    await q.close();
  }
}

describe('handOverEach', () => {
  it('gives each follower its own copies of a gallery, the shown image sharing the first copy, the same on a repeat', async () => {
    const pngs = [Uint8Array.from([1, 1]), Uint8Array.from([2, 2])];
    const keys = await Promise.all(pngs.map((p) => blobs.put(p, 'output')));
    const result = leaderResult({ image: image(keys[0]!), images: keys.map(image) });
    expect(await handOverEach({ queues, blobs }, [follower('f1'), follower('f2')], result)).toBe(2);
    const seen = new Set<string>();
    for (const id of ['f1', 'f2']) {
      const r = await handed(id);
      expect(r).toMatchObject({ jobId: id, servedFrom: 'shared' });
      expect(r.image!.blobKey).toBe(r.images![0]!.blobKey);
      for (const [i, img] of r.images!.entries()) {
        expect(keys).not.toContain(img.blobKey);
        expect(await blobs.get(img.blobKey)).toEqual(pngs[i]);
        seen.add(img.blobKey);
      }
    }
    expect(seen.size).toBe(4); // two followers × two PNGs
    await handOverEach({ queues, blobs }, [follower('f1')], result); // a worker's re-run
    expect((await handed('f1')).images!.map((i) => i.blobKey).every((k) => seen.has(k))).toBe(true);
    expect(await redis.keys(`${prefix}:blob:output:*`)).toHaveLength(6); // no further copies
  });

  it('leaves the leader\'s key for a PNG already gone, and copies nothing for an answer', async () => {
    const gone = `${prefix}:blob:output:${randomUUID()}`;
    await handOverEach({ queues, blobs }, [follower('f3')], leaderResult({ image: image(gone) }));
    expect((await handed('f3')).image!.blobKey).toBe(gone);
    await handOverEach({ queues, blobs }, [follower('f4')], leaderResult({ kind: 'ask', answer: { text: 'a vole', tokenCount: 2 } }));
    const r = await handed('f4');
    expect(r.answer).toEqual({ text: 'a vole', tokenCount: 2 });
    expect(r.image).toBeUndefined();
    expect(r.images).toBeUndefined();
  });
});

describe('handOverEach with sharedWith (content checks)', () => {
  it('tells a follower whose checks differ, privately, to send its request again (no image), and hands the others the image', async () => {
    const key = await blobs.put(Uint8Array.from([5, 5]), 'output');
    const result = leaderResult({ image: image(key), timingsMs: { features: 7 } });
    const asked: string[] = [];
    const sharedWith = async (f: JobRequest) => (asked.push(f.id), f.id === 's2');
    expect(await handOverEach({ queues, blobs }, [follower('s1'), follower('s2')], result, sharedWith)).toBe(2);
    expect(asked).toEqual(['s1', 's2']);
    expect(await handed('s1')).toEqual({
      v: CONTRACT_VERSION, jobId: 's1', kind: 'imagine', destination: dest('s1'), status: 'failed', servedFrom: 'shared', timingsMs: { features: 7 }, finishedAt: 1,
      error: { code: 'bad_request', message: CHECKS_DIFFER, userFacing: true, private: true },
    });
    const shared = await handed('s2');
    expect(shared).toMatchObject({ jobId: 's2', status: 'succeeded', servedFrom: 'shared' });
    expect(shared.image!.blobKey).not.toBe(key); // its own copy
    expect(await blobs.get(shared.image!.blobKey)).toEqual(Uint8Array.from([5, 5]));
  });
});

describe('leaderAddress', () => {
  it('is where the flight was recorded when queued, else the digest in its channel\'s scope now; none for a retention channel or an expired image', async () => {
    const cache = new ResultCache(redis, config);
    const overrides = new CheckOverrides(redis, config.queue.prefix);
    const deps = { blobs, cache, overrides, config };
    const request = JSON.parse(follower('l1')) as JobRequest;
    const current = await overrides.scopeFor(config, request.destination);
    const digest = (await digestOf(blobs, request))!;
    expect(await leaderAddress(deps, request)).toEqual({ digest: scopedDigest(digest, current), queuedIn: current, current });
    await cache.recordFlight('l1', 'd-recorded', 'scope-then');
    expect(await leaderAddress(deps, request)).toEqual({ digest: 'd-recorded', queuedIn: 'scope-then', current });
    // a retention channel's job is never a flight, whatever was recorded under its id
    expect(await leaderAddress(deps, { ...request, destination: { ...request.destination, retentionSeconds: 60 } } as JobRequest)).toBeUndefined();
    const vary = { ...request, id: 'l2', kind: 'vary', imageKey: `${prefix}:blob:input:${randomUUID()}` } as JobRequest; // its image expired
    expect(await leaderAddress(deps, vary)).toBeUndefined();
  });
});

describe('DeliveryQueues', () => {
  // A CLI run's delivery queue takes one result. Before 2026-12-07 each was kept open, with BullMQ's listeners on the
  // shared connection, until the worker stopped: a worker grew by a Queue and three listeners per CLI follower.
  it('keeps a platform’s queue open, and closes a CLI run’s once its result is added', async () => {
    const own = new DeliveryQueues(config, redis);
    try {
      await own.handOver(leaderResult({ jobId: 'first' })); // the platform's queue, kept for every later result
      const before = ['error', 'close', 'ready'].map((e) => redis.listenerCount(e));
      for (let i = 0; i < 3; i++) {
        const cli: Destination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
        await own.handOver(leaderResult({ jobId: `cli${i}`, destination: cli }));
        const q = createDeliveryQueue(config, redis, deliveryQueueName(cli));
        expect((await q.getJob(`cli${i}`))?.data.jobId).toBe(`cli${i}`);
        await q.close();
      }
      expect(['error', 'close', 'ready'].map((e) => redis.listenerCount(e))).toEqual(before);
    } finally {
      await own.close();
    }
  });

  // A CLI deletes its queue on exit; one killed never does. The worker's own hand-over gives the queue's keys the blobs'
  // lifetime (worker/processor.ts handOver); a CLI follower's or cache hit's hand-over here gave them none: kept for good.
  it('gives a CLI run’s queue keys and its result the blobs’ lifetime, as the worker’s hand-over does', async () => {
    const cli: Destination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
    await queues.handOver(leaderResult({ jobId: 'cli-ttl', destination: cli }));
    const q = createDeliveryQueue(config, redis, deliveryQueueName(cli));
    try {
      for (const key of [q.toKey('cli-ttl'), q.keys.wait!, q.keys.meta!]) {
        const ttl = await redis.ttl(key);
        expect(ttl, key).toBeGreaterThan(0);
        expect(ttl, key).toBeLessThanOrEqual(config.blobs.ttlSeconds);
      }
    } finally {
      await q.close();
    }
  });
});
