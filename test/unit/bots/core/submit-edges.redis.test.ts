// Edges of core.handle() over real Redis that the other submit tests leave open: cache entries that cannot serve a
// request (no PNG, or an image under a question's address) count as misses; a served image is stored as an output
// blob; a leader's flight outlives the admission grace once its job is queued; releaseFollowers says how many it
// told; the replica warning names the job and the settings; a cancel frees the job's slot, and a cancel whose
// removal fails (a worker holds the job's lock) leaves the job to the worker.
import { Job, UnrecoverableError } from 'bullmq';
import { createQueueWorker } from '../../../../src/jobs/queue.ts';
import { dieAt } from '../../../doubles/crash-point.ts';
import { describe, expect, it } from 'vitest';
import { CACHED_TEXT } from '../../../../bots/core/submit.ts';
import { cacheAddress } from '../../../doubles/cache-address.ts';
import { CONTRACT_VERSION, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis } from '../../../../src/redis.ts';
import { capturedLog, coreDest as dest, coreHarness, invocation as inv, OPEN_LIMIT, REDIS_URL } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-edges');
const { core, data, handedOver } = h;
const jobId = (reply: unknown) => (reply as { jobId: string }).jobId;

describe('cache entries', () => {
  it('serves an image entry as a new output blob, and logs it as served from the cache', async () => {
    const { log, lines } = capturedLog();
    const c = core({ log });
    await c.cache.publishModel('m', 'w');
    const first = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a vole', seed: 1 }))));
    await c.cache.put('m', (await cacheAddress(c, first!))!, { kind: 'image', width: 32, height: 32 }, h.png);
    const again = inv({ command: 'imagine', prompt: 'a vole', seed: 1 });
    expect(await c.handle(again)).toMatchObject({ text: CACHED_TEXT });
    const id = jobIdFor('discord', again.dedupeKey);
    expect((await handedOver(c, id))!.image!.blobKey).toMatch(new RegExp(`^${c.config.queue.prefix}:blob:output:`));
    expect(lines.find((l) => l.msg === 'served without a job')).toMatchObject({ jobId: id, served: 'cache' });
  });

  it('counts an image entry without its PNG, or an image under a question\'s address, as a miss', async () => {
    const c = core({}, { cache: { singleFlight: false } });
    await c.cache.publishModel('m', 'w');
    const first = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a mole', seed: 2 }))));
    await c.cache.put('m', (await cacheAddress(c, first!))!, { kind: 'image', width: 32, height: 32 }); // no PNG
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a mole', seed: 2 }))).toMatchObject({ kind: 'queued', position: 2 });
    const ask = () => inv({ command: 'ask', question: 'what?', image: { bytes: h.png } });
    const q = await data(c, jobId(await c.handle(ask())));
    await c.cache.put('m', (await cacheAddress(c, q!))!, { kind: 'image', width: 32, height: 32 }, h.png);
    expect(await c.handle(ask())).toMatchObject({ kind: 'queued', position: 4 });
  });
  it('admits a request whose cache entry cannot serve it: it takes a slot like any miss', async () => {
    const c = core({}, { cache: { singleFlight: false }, limits: { user: { ...OPEN_LIMIT, maxConcurrent: 2 } } });
    await c.cache.publishModel('m', 'w');
    const first = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a shrew', seed: 3 }))));
    await c.cache.put('m', (await cacheAddress(c, first!))!, { kind: 'image', width: 32, height: 32 }); // no PNG
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a shrew', seed: 3 }))).toMatchObject({ kind: 'queued' });
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a third' }))).toMatchObject({ kind: 'error' }); // both slots held
  });
});

describe('single flight', () => {
  it('keeps a queued leader\'s flight past the admission grace, and releaseFollowers says how many it told', async () => {
    const c = core({}, { limits: { admitGraceMs: 5_000 } });
    const leader = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }))));
    const digest = (await cacheAddress(c, leader!))!;
    expect(await h.redis.pttl(`${c.config.queue.prefix}:{cache}:f:${digest}`)).toBeGreaterThan(60_000);
    await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }, { destination: dest('u2') }));
    await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }, { destination: dest('u3') }));
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: leader!.id, kind: 'imagine', destination: leader!.destination, status: 'failed',
      error: { code: 'internal', message: 'x', userFacing: true }, timingsMs: {}, finishedAt: Date.now(),
    };
    expect(await c.releaseFollowers(leader!, result)).toBe(2);
    const kept = { ...leader!, destination: { ...dest(), retentionSeconds: 60 } } as JobRequest; // not cacheable
    expect(await c.releaseFollowers(kept, result)).toBe(0);
  });
});

describe('acceptReplicas', () => {
  it('names the job and the replica settings in its warning', async () => {
    const r = createRedis(REDIS_URL);
    r.wait = (async () => 0) as typeof r.wait;
    const { log, lines } = capturedLog();
    try {
      const c = core({ redis: r, log }, { redis: { acceptReplicas: 1, acceptReplicaWaitMs: 70 } });
      const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'x' })));
      expect(lines.find((l) => l.level === 40)).toMatchObject({ jobId: id, acceptReplicas: 1, acceptReplicaWaitMs: 70 });
      await c.stop();
    } finally {
      await closeRedis(r);
    }
  });
});

describe('cancel', () => {
  it('frees the cancelled job\'s slot', async () => {
    const c = core({}, { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } });
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'a' })));
    expect(await c.handle(inv({ command: 'imagine', prompt: 'b' }))).toMatchObject({ kind: 'error' });
    await c.handle(inv({ command: 'cancel', jobId: id }));
    expect(await c.handle(inv({ command: 'imagine', prompt: 'c' }))).toMatchObject({ kind: 'queued' });
  });

  it('leaves a job it cannot remove (a worker took it after the state was read) to the worker, "Cancelled." handed over already (that run finds it and stops)', async () => {
    const c = core();
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'locked' })));
    await h.redis.set(`${c.config.queue.prefix}:jobs:${id}:lock`, 'a-worker-token', 'PX', 30_000);
    expect(await c.handle(inv({ command: 'cancel', jobId: id }))).toEqual({ kind: 'text', text: 'Cancelling…', private: true });
    expect(await c.queue.getJob(id)).toBeDefined();
    expect(await handedOver(c, id)).toMatchObject({ jobId: id, status: 'cancelled' });
    expect(await c.gate.scheduler.position(id)).not.toEqual({ state: 'none' }); // still the worker's: not taken out of the scheduler's line
  });

  it('a bot that dies between handing "Cancelled." over and removing the job: the result is delivered all the same, once', async () => {
    const c = core();
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'a heron' })));
    const removal = dieAt(Job.prototype, 'remove', (job) => (job as Job).id === id); // the process is gone there
    try {
      void c.handle(inv({ command: 'cancel', jobId: id }));
      await removal.reached;
    } finally {
      removal.restore();
    }
    // before: the job was removed first, and a bot dying before the hand-over left it with no result at all
    expect(await handedOver(c, id)).toMatchObject({ jobId: id, status: 'cancelled' });
  });

  it('a Cancel pressed on a job that has finished says so (a button left on a message the result did not replace)', async () => {
    const c = core();
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'done already' })));
    const worker = createQueueWorker(c.config, h.redis, c.queue.name, async () => 'done'); // a worker that runs it
    await new Promise<void>((resolve) => worker.on('completed', () => resolve()));
    await worker.close();
    expect(await c.handle(inv({ command: 'cancel', jobId: id }))).toEqual({ kind: 'error', text: 'That job has already finished.', private: true }); // before: "Cancelling…"
    expect(await handedOver(c, id)).toBeUndefined();
  });

  it('a Cancel pressed on a job that failed says it has finished too', async () => {
    const c = core();
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'fails anyway' })));
    const worker = createQueueWorker(c.config, h.redis, c.queue.name, async () => {
      throw new UnrecoverableError('the model refused');
    });
    await new Promise<void>((resolve) => worker.on('failed', () => resolve()));
    await worker.close();
    expect(await c.handle(inv({ command: 'cancel', jobId: id }))).toEqual({ kind: 'error', text: 'That job has already finished.', private: true });
  });
});

describe('duplicates', () => {
  it('answers a repeated interaction without a second admission: it takes no rate-limit token', async () => {
    const c = core({}, { limits: { user: { ...OPEN_LIMIT, requestsPerWindow: 1, burst: 1 } } });
    const first = inv({ command: 'imagine', prompt: 'once' });
    const a = await c.handle(first);
    expect(a).toMatchObject({ kind: 'queued', position: 1 });
    expect(await c.handle({ ...first })).toEqual(a);
  });

  it('answers a repeated interaction "Queued." when its place cannot be read (the connection ended under it), not "Nothing was queued"', async () => {
    const c = core();
    const first = inv({ command: 'imagine', prompt: 'once' });
    const a = (await c.handle(first)) as { jobId: string };
    const r = c.redis as unknown as { blip3oSchedPosition: (...args: unknown[]) => Promise<number[]> };
    const position = r.blip3oSchedPosition;
    r.blip3oSchedPosition = async () => Promise.reject(new Error('Connection is closed.'));
    try {
      expect(await c.handle({ ...first })).toEqual({ kind: 'queued', jobId: a.jobId, position: 0, text: 'Queued.' });
    } finally {
      r.blip3oSchedPosition = position;
    }
  });
});

