// deliverOne's gallery (several images per job, issue 20) and the delivery worker around it, over real Redis: every
// image of a gallery is read once and posted in order, a gallery with one expired image is posted as "expired",
// an answer reads no blob; the worker runs `concurrency` deliveries at once and logs failed attempts and worker errors
// (a lost Redis connection is logged once elsewhere, src/redis.ts). A recorded delivery releases the PNGs it posted
// (the real Redis blob store: their TTL drops to blobs.keepDeliveredSeconds); one that did not post keeps them.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryInProgress, deliverOne, startDeliveryWorker, type DeliveryDeps } from '../../../../bots/core/delivery.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { createBlobStore } from '../../../../src/blobs/index.ts';
import type { BlobStore } from '../../../../src/blobs/store.ts';
import type { Logger } from '../../../../src/log.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type ImageResult, type JobResult } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createDeliveryQueue } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { cleanup } from '../../../doubles/spine-harness.ts';

const prefix = `t-deliv-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
let redis: Redis;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
});
afterAll(async () => {
  await cleanup(redis, prefix);
  await closeRedis(redis);
});

function countingBlobs(): BlobStore & { gets: string[]; put(bytes: Uint8Array): Promise<string> } {
  const map = new Map<string, Uint8Array>();
  const gets: string[] = [];
  return {
    gets,
    put: async (bytes: Uint8Array) => {
      const key = `blob-${map.size}`;
      map.set(key, bytes);
      return key;
    },
    get: async (key: string) => (gets.push(key), map.get(key)),
    delete: async (key: string) => void map.delete(key),
    release: async () => undefined,
    share: async () => undefined,
  };
}

type Posted = { result: JobResult; args: unknown[] };
function recordingPort(): PlatformPort & { posted: Posted[] } {
  const posted: Posted[] = [];
  return { platform: 'cli', posted, showProgress: async () => undefined, deliver: async (...args: unknown[]) => void posted.push({ result: args[0] as JobResult, args }) };
}

function logged(): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }) };
}

const depsFor = (port: PlatformPort, blobs: BlobStore, log = logged().log): DeliveryDeps => ({ config, redis, blobs, ledger: new DeliveryLedger(redis, config), port, log });
const image = (blobKey: string): ImageResult => ({
  blobKey, mime: 'image/png', width: 8, height: 8, altText: 'x', prompt: 'x', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
});
const result = (extra: Partial<JobResult> = {}): JobResult => ({
  v: CONTRACT_VERSION, jobId: `j${randomUUID().slice(0, 8)}`, kind: 'imagine', status: 'succeeded',
  destination: { platform: 'cli', clientId: 'c', channelId: 'local', userId: 'u' }, timingsMs: {}, finishedAt: 1, ...extra,
});
const bytes = (n: number) => Uint8Array.from([n, n, n]);

describe('deliverOne: images', () => {
  it('posts a gallery with every image, in order, reading each blob once', async () => {
    const blobs = countingBlobs();
    const keys = [await blobs.put(bytes(1)), await blobs.put(bytes(2)), await blobs.put(bytes(3))];
    const port = recordingPort();
    const r = result({ image: image(keys[1]!), images: keys.map(image) });
    expect(await deliverOne(depsFor(port, blobs), r)).toBe('delivered');
    expect(port.posted).toHaveLength(1);
    expect(port.posted[0]!.args).toEqual([r, bytes(2), [bytes(1), bytes(2), bytes(3)]]);
    expect(blobs.gets.sort()).toEqual([...keys].sort()); // the shown image is not read twice
  });

  it('posts a gallery with one expired image as "expired", without images, and logs the status it posted', async () => {
    const blobs = countingBlobs();
    const keys = [await blobs.put(bytes(1)), 'gone'];
    const port = recordingPort();
    const r = result({ image: image(keys[0]!), images: keys.map(image) });
    const { log, lines } = logged();
    await deliverOne(depsFor(port, blobs, log), r);
    expect(lines).toEqual([
      expect.objectContaining({ level: 40, jobId: r.jobId, msg: 'the image expired before it could be posted (blobs.ttlSeconds passed while no bot delivered it)' }),
      expect.objectContaining({ level: 30, jobId: r.jobId, status: 'failed', msg: 'delivered' }),
    ]);
    expect(port.posted[0]!.args).toEqual([
      { ...r, status: 'failed', image: undefined, images: undefined, error: { code: 'internal', message: 'The image expired before it could be posted. Please try again.', userFacing: true } },
      undefined,
    ]);
  });

  it('posts a single image without a gallery, and an answer without reading any blob', async () => {
    const blobs = countingBlobs();
    const key = await blobs.put(bytes(4));
    const port = recordingPort();
    const single = result({ image: image(key) });
    await deliverOne(depsFor(port, blobs), single);
    expect(port.posted[0]!.args).toEqual([single, bytes(4)]);
    blobs.gets.length = 0;
    const answer = result({ kind: 'ask', answer: { text: 'hi', tokenCount: 1 } });
    await deliverOne(depsFor(port, blobs), answer);
    expect(port.posted[1]!.args).toEqual([answer, undefined]);
    expect(blobs.gets).toEqual([]);
  });
});

describe('deliverOne: a result its channel no longer takes', () => {
  it("answers where the port says it went instead (the requester's DM, or nowhere), recorded as done: never retried", async () => {
    const blobs = countingBlobs();
    for (const aside of ['elsewhere', 'nowhere'] as const) {
      const port: PlatformPort = { platform: 'cli', showProgress: async () => undefined, deliver: async () => aside };
      const { log, lines } = logged();
      const r = result({ kind: 'ask', answer: { text: 'a fox', tokenCount: 2 } });
      expect(await deliverOne(depsFor(port, blobs, log), r)).toBe(aside);
      expect(lines).toEqual([expect.objectContaining({ jobId: r.jobId, to: aside, msg: aside === 'nowhere' ? 'not delivered: nowhere takes it' : 'delivered' })]);
      expect(await deliverOne(depsFor(port, blobs, log), r)).toBe('duplicate');
    }
  });
});

describe('deliverOne: the posted PNGs are released', () => {
  const ttlOf = (key: string) => (redis as unknown as { ttl(k: string): Promise<number> }).ttl(key);
  const keep = config.blobs.keepDeliveredSeconds;

  it('drops each posted PNG to blobs.keepDeliveredSeconds once the delivery is recorded, and a repeat run releases them again', async () => {
    const blobs = createBlobStore(config, redis);
    const keys = [await blobs.put(bytes(1), 'output'), await blobs.put(bytes(2), 'output')];
    expect(await ttlOf(keys[0]!)).toBeGreaterThan(keep);
    const r = result({ image: image(keys[0]!), images: keys.map(image) });
    expect(await deliverOne(depsFor(recordingPort(), blobs), r)).toBe('delivered');
    for (const k of keys) expect(await ttlOf(k)).toBeGreaterThan(0), expect(await ttlOf(k)).toBeLessThanOrEqual(keep);
    // a run that finds the ledger mark (one that posted died before releasing): released again, nothing posted
    for (const k of keys) await redis.expire(k, config.blobs.ttlSeconds);
    const port = recordingPort();
    expect(await deliverOne(depsFor(port, blobs), r)).toBe('duplicate');
    expect(port.posted).toEqual([]);
    for (const k of keys) expect(await ttlOf(k)).toBeLessThanOrEqual(keep);
  });

  it('keeps them when posting failed (the retry posts them), and never lengthens a shorter TTL', async () => {
    const blobs = createBlobStore(config, redis);
    const key = await blobs.put(bytes(3), 'output');
    const failing: PlatformPort = { platform: 'cli', showProgress: async () => undefined, deliver: async () => Promise.reject(new Error('platform said 500')) };
    await expect(deliverOne(depsFor(failing, blobs), result({ image: image(key) }))).rejects.toThrow('platform said 500');
    expect(await ttlOf(key)).toBeGreaterThan(keep);
    const short = await blobs.put(bytes(4), 'output', 5); // a channel's retention TTL
    await deliverOne(depsFor(recordingPort(), blobs), result({ image: image(short) }));
    expect(await ttlOf(short)).toBeLessThanOrEqual(5);
  });

  it('logs a release that failed and still answers delivered (the PNG then lives its TTL)', async () => {
    const blobs = { ...countingBlobs(), release: async () => Promise.reject(new Error('READONLY')) };
    const key = await blobs.put(bytes(5));
    const { log, lines } = logged();
    const r = result({ image: image(key) });
    expect(await deliverOne(depsFor(recordingPort(), blobs, log), r)).toBe('delivered');
    expect(lines.at(-1)).toMatchObject({ level: 40, jobId: r.jobId, err: 'READONLY', msg: 'could not release the delivered images; they expire with blobs.ttlSeconds' });
  });
});

describe('startDeliveryWorker', () => {
  it('runs four deliveries at once by default, or as many as asked', async () => {
    const deps = depsFor(recordingPort(), countingBlobs());
    const a = startDeliveryWorker(deps, `delivery-cli-${randomUUID().slice(0, 6)}`);
    const b = startDeliveryWorker(deps, `delivery-cli-${randomUUID().slice(0, 6)}`, 2);
    try {
      expect(a.opts.concurrency).toBe(4);
      expect(b.opts.concurrency).toBe(2);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('delivers from its queue, logs each failed attempt, and logs worker errors except a lost connection (a lost lock: a warning)', async () => {
    const name = `delivery-cli-${randomUUID().slice(0, 6)}`;
    const { log, lines } = logged();
    let calls = 0;
    const port: PlatformPort = {
      platform: 'cli', showProgress: async () => undefined,
      deliver: async () => {
        if (calls++ === 0) throw new Error('platform said 500'); // the first attempt only: the retry (10 ms later) succeeds
      },
    };
    const worker = startDeliveryWorker(depsFor(port, countingBlobs(), log), name, 1);
    const queue = createDeliveryQueue(config, redis, name);
    try {
      await worker.waitUntilReady();
      const r = result({ kind: 'ask', answer: { text: 'hi', tokenCount: 1 } });
      await queue.add('result', r, { jobId: r.jobId, attempts: 2, backoff: { type: 'fixed', delay: 10 } });
      for (let i = 0; i < 500 && (await queue.getJobState(r.jobId)) !== 'completed'; i++) await new Promise((res) => setTimeout(res, 10));
      expect(await queue.getJobState(r.jobId)).toBe('completed');
      expect(calls).toBe(2);
      expect(lines.find((l) => l.msg === 'delivery attempt failed')).toMatchObject({ level: 40, jobId: r.jobId, attempts: 1, err: 'platform said 500' });

      worker.emit('error', new Error('lua script failed'));
      worker.emit('error', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }));
      expect(lines.filter((l) => l.msg === 'delivery worker error')).toEqual([expect.objectContaining({ level: 50, err: 'lua script failed' })]);
      // a lock lapsed across a failover: a warning that says what happens next, not an error
      worker.emit('error', new Error('Missing lock for job j1. moveToFinished'));
      expect(lines.filter((l) => /^delivery worker error: a job's lock lapsed/.test(l.msg))).toEqual([expect.objectContaining({ level: 40, err: 'Missing lock for job j1. moveToFinished' })]);
    } finally {
      await worker.close();
      await queue.close();
    }
  });
});

describe('a delivery whose bots keep dying', () => {
  it('is taken back from each bot that died holding it, more often than queue.maxStalledCount, and posted by the next', async () => {
    const quick = loadConfig({ env: {}, overrides: { queue: { prefix, lockDurationMs: 400, stalledIntervalMs: 250 } } });
    expect(quick.queue.maxStalledCount).toBe(2);
    const name = `delivery-cli-${randomUUID().slice(0, 6)}`;
    const queue = createDeliveryQueue(quick, redis, name);
    const r = result({ kind: 'ask', answer: { text: 'a fox', tokenCount: 2 } });
    await queue.add('result', r, { jobId: r.jobId });
    const deps = (port: PlatformPort): DeliveryDeps => ({ ...depsFor(port, countingBlobs()), config: quick });
    const killed: ((e: Error) => void)[] = []; // the dead bots' posts, ended after the test (in a real crash, with the process)
    try {
      for (let death = 0; death <= quick.queue.maxStalledCount; death++) {
        let took!: () => void;
        const taken = new Promise<void>((res) => (took = res));
        const dying = startDeliveryWorker(deps({ platform: 'cli', showProgress: async () => undefined, deliver: () => (took(), new Promise<void>((_, reject) => killed.push(reject))) }), name, 1);
        await taken; // posting…
        await dying.close(true); // …and gone: its lock is renewed no more, as after a SIGKILL
        await redis.del(`${prefix}:delivery-claim:${r.jobId}`); // nor its claim, which lapses
      }
      const port = recordingPort();
      const healthy = startDeliveryWorker(deps(port), name, 1);
      try {
        // before: the third stall failed the job unrun ("job stalled more than allowable limit"), and nothing was posted
        for (let i = 0; i < 1_000 && port.posted.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
        expect(port.posted.map((p) => p.result.jobId), `state ${await queue.getJobState(r.jobId)}: ${(await queue.getJob(r.jobId))?.failedReason}`).toEqual([r.jobId]);
      } finally {
        await healthy.close();
      }
    } finally {
      for (const kill of killed) kill(new Error('the bot was killed'));
      await queue.close();
    }
  }, 30_000);
});

describe('DeliveryInProgress', () => {
  it('names itself and the job, for the failed-attempt log line', () => {
    const e = new DeliveryInProgress('j42');
    expect(e.name).toBe('DeliveryInProgress');
    expect(e.message).toBe('the result of j42 is being posted by another delivery run');
  });
});
