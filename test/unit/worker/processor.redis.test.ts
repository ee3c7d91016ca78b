// The worker's processor in process, over real Redis, with a host double that returns known values: what each
// outcome hands to delivery (the result, or a failure the user can read), which failures are retried, and that a
// job whose result was already handed over or that was cancelled before it ran does no work; and, with a real BullMQ
// worker, that a job failed for good (by BullMQ's stall limit, or by the processor) tells its single-flight followers once.
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { Usage } from '../../../src/accounting/usage.ts';
import { cacheAddress } from '../../doubles/cache-address.ts';
import { ResultCache } from '../../../src/cache/results.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { AppError, UserError } from '../../../src/errors.ts';
import { requestCancel } from '../../../src/jobs/cancel.ts';
import { CONTRACT_VERSION, QueueNames, type CliDestination, type JobProgress, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../src/jobs/ledger.ts';
import { createDeliveryQueue, createJobsQueue, createQueueWorker, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import type { CheckRequest, GenerateRequest, RunContext, UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { createAfterJob } from '../../../worker/after-job.ts';
import { createProcessor, type JobProcessor, type ProcessOutcome } from '../../../worker/processor.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-proc-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const log = createLogger('test', 'silent');
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const destination: CliDestination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const uid = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
const askOptions = { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 };

let redis: Redis;
let blobs: BlobStore;
let processor: JobProcessor;
let behaviour: (ctx: RunContext) => Promise<void> = async () => undefined;
const calls: { kind: 'generate' | 'understand' | 'check'; request: GenerateRequest | UnderstandRequest | CheckRequest }[] = [];

type FakeJob = Job<JobRequest> & { progress: JobProgress[] };
function job(data: unknown, extra: { id?: string; attempts?: number; attemptsMade?: number } = {}): FakeJob {
  const progress: JobProgress[] = [];
  return {
    id: extra.id ?? (data as { id?: string }).id,
    data,
    opts: extra.attempts === undefined ? {} : { attempts: extra.attempts },
    attemptsMade: extra.attemptsMade ?? 0,
    progress,
    updateProgress: async (p: JobProgress) => void progress.push(p),
  } as unknown as FakeJob;
}
const imagine = (id = uid(), prompt = 'a fox'): JobRequest => ({ v: CONTRACT_VERSION, id, destination, submittedAt: 1, kind: 'imagine', prompt, options });
const run = (j: FakeJob) => processor.process(j, 'token', new AbortController().signal);
async function handedOver(id: string): Promise<JobResult | undefined> {
  const q = createDeliveryQueue(config, redis, deliveryQueueName(destination));
  try {
    return (await q.getJob(id))?.data;
  } finally {
    await q.close();
  }
}
const failureOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error);

/** The model double: records each call, runs `behaviour` in the middle of it. */
const recordingHost = {
  async generate(request: GenerateRequest, ctx: RunContext) {
    calls.push({ kind: 'generate', request });
    ctx.onProgress({ stage: 'conditioning', step: 0, total: 1 });
    await behaviour(ctx);
    ctx.onProgress({ stage: 'decoding', step: 1, total: 2 });
    await new Promise((r) => setTimeout(r, 20));
    return { png: PNG, width: 64, height: 32 };
  },
  async understand(request: UnderstandRequest, ctx: RunContext) {
    calls.push({ kind: 'understand', request });
    ctx.onProgress({ stage: 'answering', step: 1, total: 8, partialText: 'a c' });
    await behaviour(ctx);
    return { text: 'a cat', tokenIds: [7, 8, 9] };
  },
  // The model's own look at its output (issue 16): a caption only, like the default config asks for.
  async check(request: CheckRequest) {
    calls.push({ kind: 'check', request });
    return { caption: 'a red fox', answers: {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 0, captionTokens: 3 } };
  },
};

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(config, redis);
  processor = createProcessor({ config, redis, blobs, host: recordingHost, log });
});
afterAll(async () => {
  await processor.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('processor', () => {
  it('imagine: runs the pipeline, stores the PNG and hands over the result with stage timings and progress', async () => {
    behaviour = async () => undefined;
    const req = imagine();
    const j = job(req);
    const outcome = await run(j);
    expect(outcome.status).toBe('succeeded');
    expect(outcome.alreadyHandedOver).toBeUndefined();
    expect(Object.keys(outcome.timingsMs!)).toEqual(['conditioning', 'decoding']);
    expect(outcome.timingsMs!.decoding).toBeGreaterThanOrEqual(15); // the time from the stage's first report to the end
    const r = (await handedOver(req.id))!;
    expect(r).toMatchObject({ v: CONTRACT_VERSION, jobId: req.id, kind: 'imagine', status: 'succeeded', destination });
    expect(r.image).toMatchObject({ mime: 'image/png', prompt: 'a fox' });
    expect(r.image!.width * r.image!.height).toBeGreaterThan(0);
    expect(Array.from((await blobs.get(r.image!.blobKey))!.subarray(0, 8))).toEqual(Array.from(PNG.subarray(0, 8))); // the PNG (with its text fields)
    expect(r.timingsMs).toEqual(outcome.timingsMs);
    const gen = calls.filter((c) => c.kind === 'generate').at(-1)!;
    expect(gen).toMatchObject({ kind: 'generate', request: { prompt: 'a fox', options } });
    expect('image' in gen.request).toBe(false);
    expect(j.progress).toEqual([
      { v: CONTRACT_VERSION, jobId: req.id, stage: 'conditioning', step: 0, total: 1 },
      { v: CONTRACT_VERSION, jobId: req.id, stage: 'decoding', step: 1, total: 2 },
    ]);
  });

  it('progress goes to Redis coalesced: a stage at once, then the newest twice per edit interval, nothing after the run', async () => {
    // A CLI destination: the relay edits every 100 ms, so the worker writes at most every 50 ms.
    behaviour = async (ctx) => {
      for (let i = 0; i < 10; i++) ctx.onProgress({ stage: 'features', step: i, total: 20 }); // a burst of steps
      await new Promise((r) => setTimeout(r, 80)); // the newest of them (9) is written when the interval ends
      for (let i = 10; i < 20; i++) ctx.onProgress({ stage: 'features', step: i, total: 20 }); // superseded by decoding
      ctx.onProgress({ stage: 'decoding', step: 0, total: 2 }); // a new stage: at once; the double's decoding:1 then waits
    };
    const j = job(imagine());
    await run(j); // ends 20 ms after decoding:1, inside its interval: that report is pending when the run is over
    await new Promise((r) => setTimeout(r, 100)); // a pending report would be written by now
    expect(j.progress.map((p) => `${p.stage}:${p.step}`)).toEqual(['conditioning:0', 'features:0', 'features:9', 'decoding:0']);
  });

  it('vary and ask read the input image from the blob store; alt text is the model’s caption', async () => {
    behaviour = async () => undefined;
    const imageKey = await blobs.put(Uint8Array.from([1, 2, 3]), 'input');
    const vary: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination, submittedAt: 1, kind: 'vary', imageKey, prompt: '', options };
    await run(job(vary));
    expect((calls.filter((c) => c.kind === 'generate').at(-1)!.request as GenerateRequest).image).toEqual(Uint8Array.from([1, 2, 3]));
    expect((await handedOver(vary.id))!.image!.altText).toBe('a red fox'); // the model's caption of its own output (issue 16)

    const ask: JobRequest = {
      v: CONTRACT_VERSION, id: uid(), destination, submittedAt: 1, kind: 'ask', imageKey, question: 'what?',
      history: [{ role: 'user', text: 'hi' }], options: askOptions,
    };
    const j = job(ask);
    const outcome = await run(j);
    expect(calls.at(-1)).toEqual({ kind: 'understand', request: { image: Uint8Array.from([1, 2, 3]), question: 'what?', history: [{ role: 'user', text: 'hi' }], options: askOptions } });
    const r = (await handedOver(ask.id))!;
    expect(r).toMatchObject({ kind: 'ask', status: 'succeeded', answer: { text: 'a cat', tokenCount: 3 } });
    expect(Object.keys(outcome.timingsMs!)).toEqual(['answering']);
    expect(j.progress[0]).toMatchObject({ stage: 'answering', partialText: 'a c' });
  });

  it('an expired input image is a failure the user can read, not retried', async () => {
    const ask: JobRequest = {
      v: CONTRACT_VERSION, id: uid(), destination, submittedAt: 1, kind: 'ask', imageKey: `${prefix}:blob:gone`, question: 'what?', history: [], options: askOptions,
    };
    const e = await failureOf(run(job(ask, { attempts: 3 })));
    expect(e).toBeInstanceOf(UnrecoverableError);
    expect((e as Error & { code?: string }).code).toBe('bad_image');
    expect((await handedOver(ask.id))!).toMatchObject({
      status: 'failed', error: { code: 'bad_image', message: 'The image for this request has expired; please send it again.', userFacing: true },
    });
  });

  it('refuses malformed data for good, and tells the user when it knows where to', async () => {
    const bad = { ...imagine(), options: { ...options, ditSteps: 0 } };
    const e = await failureOf(run(job(bad)));
    expect(e).toBeInstanceOf(UnrecoverableError);
    expect(e!.message).toMatch(/does not match contract/);
    expect((await handedOver(bad.id))!).toMatchObject({ kind: 'imagine', status: 'failed', error: { code: 'contract', userFacing: false } });

    const mismatched = imagine();
    const e2 = await failureOf(run(job(mismatched, { id: uid() })));
    expect(e2!.message).toMatch(/carries id/);
    expect((await handedOver(mismatched.id))!.error).toMatchObject({ code: 'contract', userFacing: false });

    // no usable id or destination: nowhere to say it
    for (const data of [null, 'x', { ...imagine(), id: 5 }, { ...imagine(), destination: { platform: 'fax' } }]) {
      const id = uid();
      await expect(run(job(data, { id }))).rejects.toBeInstanceOf(UnrecoverableError);
    }
    // An unknown kind with a valid destination: the user still hears of it (issue 15).
    const noKind = { ...imagine(), kind: 'paint' };
    await expect(run(job(noKind))).rejects.toBeInstanceOf(UnrecoverableError);
    expect((await handedOver(noKind.id))!).toMatchObject({ kind: 'imagine', status: 'failed', error: { code: 'contract' } }); // a kind it does not know still hears why
    const ok = { ...imagine(), kind: 'vary' as const };
    await expect(run(job(ok))).rejects.toBeInstanceOf(UnrecoverableError); // vary without imageKey: malformed
    expect((await handedOver(ok.id))!.kind).toBe('vary');
  });

  it('runs the start hook first, for a malformed job too; nothing is decided before it ends, and nothing after it throws', async () => {
    behaviour = async () => undefined;
    const started: [string | undefined, string | undefined][] = [];
    let release: () => void = () => undefined;
    let hold: Error | undefined;
    const start = async (j: Job<JobRequest>, token: string | undefined) => {
      started.push([j.id, token]);
      await new Promise<void>((r) => (release = r));
      if (hold) throw hold;
    };
    const p = createProcessor({ config, redis, blobs, host: { generate: async () => ({ png: PNG, width: 1, height: 1 }), understand: async () => ({ text: '', tokenIds: [] }), check: async () => ({ caption: '', answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }) }, log, start });
    const settle = async <T>(outcome: Promise<T>) => {
      await new Promise((r) => setTimeout(r, 50));
      release();
      return outcome.then((v) => v, (e: unknown) => e as Error);
    };
    try {
      const req = imagine();
      const ran = p.process(job(req), 'tok', new AbortController().signal);
      expect(started).toEqual([[req.id, 'tok']]); // at once, before any await
      await new Promise((r) => setTimeout(r, 50));
      expect(await handedOver(req.id)).toBeUndefined(); // waits for the hook
      expect(await settle(ran)).toMatchObject({ status: 'succeeded' });
      expect(await handedOver(req.id)).toBeDefined();

      hold = new Error('held');
      const held = imagine();
      expect(await settle(p.process(job(held), 'tok', new AbortController().signal))).toBe(hold);
      expect(await handedOver(held.id)).toBeUndefined(); // neither run nor failed

      const malformed = { ...imagine(), options: { ...options, ditSteps: 0 } };
      expect(await settle(p.process(job(malformed), 'tok', new AbortController().signal))).toBe(hold);
      expect(await handedOver(malformed.id)).toBeUndefined(); // held, not refused
      expect(started.map(([id]) => id)).toEqual([req.id, held.id, malformed.id]);
    } finally {
      await p.close();
    }
  });

  it('does not run a job whose result was handed over or delivered already', async () => {
    behaviour = async () => undefined;
    const req = imagine();
    await run(job(req));
    const before = calls.length;
    // the stage timings of the run that made the result (for the metrics), none of its own
    expect(await run(job(req))).toEqual({ status: 'succeeded', alreadyHandedOver: true, timingsMs: (await handedOver(req.id))!.timingsMs });
    const delivered = imagine();
    await new DeliveryLedger(redis, config).markDelivered(delivered.id);
    expect(await run(job(delivered))).toEqual({ status: 'succeeded', alreadyHandedOver: true });
    expect(calls.length).toBe(before);
  });

  it('a job cancelled before it ran hands over "cancelled" without running', async () => {
    const req = imagine();
    await redis.hset(`${prefix}:${QueueNames.jobs}:${req.id}`, 'data', JSON.stringify(req)); // in the queue: flagged
    expect(await requestCancel(redis, config, req.id)).toBe(true);
    const before = calls.length;
    const e = await failureOf(run(job(req)));
    expect(e).toBeInstanceOf(UnrecoverableError);
    expect((e as Error & { code?: string }).code).toBe('cancelled');
    expect(calls.length).toBe(before);
    expect((await handedOver(req.id))!).toMatchObject({ status: 'cancelled', error: { code: 'cancelled', message: 'Cancelled.', userFacing: true } });
  });

  it('classifies failures: user errors, timeouts and cancels are final; anything else is retried, and reported on the last try', async () => {
    const cases: [Error, Partial<JobResult>][] = [
      [new UserError('bad_request', 'That prompt is too long.'), { status: 'failed', error: { code: 'bad_request', message: 'That prompt is too long.', userFacing: true } }],
      [new AppError('cancelled', 'aborted'), { status: 'cancelled', error: { code: 'cancelled', message: 'Cancelled.', userFacing: true } }],
      [new AppError('timeout', 'Took too long.'), { status: 'failed', error: { code: 'timeout', message: 'Took too long.', userFacing: true } }],
      [new AppError('bad_image', 'Broken image.'), { status: 'failed', error: { code: 'bad_image', message: 'Broken image.', userFacing: true } }],
      [new AppError('bad_request', 'Bad options.'), { status: 'failed', error: { code: 'bad_request', message: 'Bad options.', userFacing: true } }],
    ];
    for (const [err, expected] of cases) {
      behaviour = async () => Promise.reject(err);
      const req = imagine();
      const e = await failureOf(run(job(req, { attempts: 3 })));
      expect(e).toBeInstanceOf(UnrecoverableError);
      expect(await handedOver(req.id)).toMatchObject(expected);
    }

    for (const transient of [new AppError('model', 'CUDA out of memory'), new Error('socket hang up')]) {
      behaviour = async () => Promise.reject(transient);
      const req = imagine();
      const first = await failureOf(run(job(req, { attempts: 3, attemptsMade: 1 })));
      expect(first).toBe(transient); // rethrown as is: BullMQ retries with backoff
      expect(await handedOver(req.id)).toBeUndefined(); // the user keeps waiting for the retry
      const last = await failureOf(run(job(req, { attempts: 3, attemptsMade: 2 })));
      expect(last).toBe(transient);
      expect((await handedOver(req.id))!).toMatchObject({
        status: 'failed', error: { code: transient instanceof AppError ? 'model' : 'internal', message: `Generation failed (ref ${req.id}).`, userFacing: false },
      });
    }
    behaviour = async () => Promise.reject(new Error('flaky'));
    const single = imagine();
    await failureOf(run(job(single))); // no attempts option: this was the only try
    expect((await handedOver(single.id))!.status).toBe('failed');
    behaviour = async () => undefined;
  });

  it('onFinallyFailed hands over a failure for a job BullMQ failed on its own (stalled too often)', async () => {
    const req = imagine();
    await processor.onFinallyFailed(job(req), new Error('job stalled more than allowable limit'));
    expect((await handedOver(req.id))!).toMatchObject({
      status: 'failed', kind: 'imagine', error: { code: 'internal', message: `Generation failed (ref ${req.id}): job stalled more than allowable limit`, userFacing: false },
      timingsMs: {},
    });
    expect((await handedOver(req.id))!.finishedAt).toBeGreaterThan(Date.now() - 60_000);
  });

  it('several images with worker.maxBatch.diffusion > 1 run at once (seeds s, s+1, … in order); the first failure cancels the others', async () => {
    const batchedConfig = loadConfig({ env: {}, overrides: { queue: { prefix }, worker: { maxBatch: { decode: 1, diffusion: 3 } } } });
    let inFlight = 0;
    let most = 0;
    const seeds: number[] = [];
    const aborted: number[] = [];
    let failSeed = -1;
    const host = {
      async generate(request: GenerateRequest, ctx: RunContext) {
        seeds.push(request.options.seed);
        most = Math.max(most, ++inFlight);
        try {
          ctx.onProgress({ stage: 'features', step: 0, total: 1 });
          await new Promise((r) => setTimeout(r, request.options.seed === failSeed ? 5 : 60));
          if (request.options.seed === failSeed) throw new UserError('bad_request', 'no foxes today');
          if (ctx.signal.aborted) {
            aborted.push(request.options.seed);
            throw new AppError('cancelled', 'cancelled');
          }
          return { png: PNG, width: 64, height: 32 + request.options.seed }; // the height tells the images apart
        } finally {
          inFlight--;
        }
      },
      async understand(): Promise<never> {
        throw new Error('not used');
      },
      async check() {
        return { caption: '', answers: {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 0, captionTokens: 0 } };
      },
    };
    const p = createProcessor({ config: batchedConfig, redis, blobs, host, log });
    try {
      const req = { ...imagine(), options: { ...options, seed: 10, count: 3 } } as JobRequest;
      const outcome = await p.process(job(req), 'token', new AbortController().signal);
      expect(outcome.status).toBe('succeeded');
      expect(most).toBe(3); // all three in flight together
      expect(seeds.sort()).toEqual([10, 11, 12]);
      const r = (await handedOver(req.id))!;
      expect(r.images!.map((i) => i.height)).toEqual([42, 43, 44]); // in seed order
      failSeed = 21;
      seeds.length = 0;
      const bad = { ...imagine(), options: { ...options, seed: 20, count: 3 } } as JobRequest;
      const failed = await failureOf(p.process(job(bad), 'token', new AbortController().signal));
      expect(failed).toBeInstanceOf(UnrecoverableError); // a user error: final, its own message handed over
      expect((await handedOver(bad.id))!.error).toMatchObject({ code: 'bad_request', message: 'no foxes today' });
      while (inFlight > 0) await new Promise((r) => setTimeout(r, 10));
      expect(aborted.sort()).toEqual([20, 22]); // its companions saw their signal aborted and stopped
    } finally {
      await p.close();
    }
  });
});

describe('a job that led a single flight and failed for good', () => {
  // As in production: a BullMQ jobs worker, the real after-hand-over step (worker/after-job.ts), and worker/main.ts's
  // 'failed' listener. Short locks, so that a worker that dies holding the job is found out quickly.
  const quick = loadConfig({ env: {}, overrides: { queue: { prefix, lockDurationMs: 400, stalledIntervalMs: 250 } } });
  const own = (): CliDestination => ({ ...destination, clientId: `c${randomUUID().slice(0, 8)}` });

  /** A leader job's flight with one follower (another user's identical request), as the bots' admission leaves it. */
  async function flight(prompt: string) {
    const d = own();
    const leader: JobRequest = { ...imagine(uid(), prompt), destination: d };
    const follower: JobRequest = { ...leader, id: uid(), destination: { ...d, userId: 'u2' } };
    const digest = (await cacheAddress({ redis, config: quick, blobs }, leader))!;
    const cache = new ResultCache(redis, quick);
    const usage = new Usage(redis, quick);
    expect(await usage.admit(leader.id, d, leader)).toMatchObject({ admitted: true }); // a reservation, released by the settle
    expect(await cache.claim(digest, leader.id, '{}')).toEqual({ leads: true });
    expect(await cache.claim(digest, follower.id, JSON.stringify(follower))).toEqual({ leads: false, leaderJobId: leader.id });
    await cache.confirm(digest, leader.id);
    const deliveries = createDeliveryQueue(quick, redis, deliveryQueueName(d));
    return { leader, follower, digest, cache, usage, deliveries };
  }

  /**
   * A jobs worker as worker/main.ts starts one. `failedForGood` resolves once its 'failed' listener has run
   * onFinallyFailed; `first` runs in the listener just before it.
   */
  function jobsWorker(first: () => Promise<void> = async () => undefined) {
    const after = createAfterJob({ config: quick, redis, blobs, log, manifestHash: 'm' });
    const p = createProcessor({ config: quick, redis, blobs, host: recordingHost, log, afterHandOver: after.afterHandOver });
    const worker = createQueueWorker<JobRequest, ProcessOutcome>(quick, redis, QueueNames.jobs, p.process, { concurrency: 1 });
    const failedForGood = new Promise<{ id: string; err: Error }>((resolve, reject) => {
      worker.on('failed', (job, err) => {
        if (!job) return;
        void job.getState().then(async (state) => {
          if (state !== 'failed') return;
          await first();
          await p.onFinallyFailed(job, err);
          resolve({ id: job.id!, err });
        }).catch(reject);
      });
    });
    return { failedForGood, close: async () => (await worker.close(), await p.close(), await after.close()) };
  }

  it('one BullMQ failed on its stall limit, never run by our processor: the follower gets the failure, the flight ends, the job is settled', async () => {
    expect(quick.queue.maxStalledCount).toBe(2);
    const { leader, follower, digest, cache, usage, deliveries } = await flight('a stoat in the snow');
    const jobs = createJobsQueue(quick, redis);
    await jobs.add(leader.kind, leader, { jobId: leader.id });
    const before = calls.length;
    try {
      // The job kills each worker that takes it, maxStalledCount + 1 times: its lock is renewed no more, as after a SIGKILL.
      for (let death = 0; death <= quick.queue.maxStalledCount; death++) {
        let took!: () => void;
        const taken = new Promise<void>((res) => (took = res));
        const dying = createQueueWorker<JobRequest, ProcessOutcome>(quick, redis, QueueNames.jobs, () => (took(), new Promise<never>(() => undefined)), { concurrency: 1 });
        await taken;
        await dying.close(true);
      }
      const healthy = jobsWorker();
      try {
        const { id, err } = await healthy.failedForGood; // the next worker fails it unrun (BullMQ's deferred failure)
        expect(id).toBe(leader.id);
        expect(calls.length).toBe(before);
        const failure = { status: 'failed', error: { code: 'internal', message: `Generation failed (ref ${leader.id}): ${err.message}`, userFacing: false } };
        expect(err.message).toMatch(/stalled more than allowable limit/);
        expect((await deliveries.getJob(leader.id))?.data).toMatchObject({ jobId: leader.id, ...failure });
        // before: undefined, the follower was told "you will get its result too" and never got anything
        expect((await deliveries.getJob(follower.id))?.data, 'the follower was handed nothing').toMatchObject({
          jobId: follower.id, destination: follower.destination, servedFrom: 'shared', ...failure,
        });
        expect(await cache.claim(digest, uid(), '{}')).toEqual({ leads: true }); // the flight is over
        expect(await usage.release(leader.id)).toBe(false); // settled: the reservation was released by it
      } finally {
        await healthy.close();
      }
    } finally {
      await jobs.close();
      await deliveries.close();
    }
  });

  it('one whose failure the processor decided: the follower is told once, by the processor, though onFinallyFailed runs after it', async () => {
    const { leader, follower, usage, deliveries } = await flight('a weasel on a fence');
    const jobs = createJobsQueue(quick, redis);
    behaviour = async () => Promise.reject(new UserError('bad_request', 'That prompt is too long.'));
    const told = async () => {
      const j = await deliveries.getJob(follower.id);
      return { timestamp: j?.timestamp, data: j?.data, used: (await usage.today(leader.destination)).user.used, counts: await deliveries.getJobCounts() };
    };
    let byProcess: Awaited<ReturnType<typeof told>> | undefined;
    const worker = jobsWorker(async () => void (byProcess = await told()));
    try {
      await jobs.add(leader.kind, leader, { jobId: leader.id });
      await worker.failedForGood;
      expect(byProcess!.data).toMatchObject({
        jobId: follower.id, servedFrom: 'shared', status: 'failed', error: { code: 'bad_request', message: 'That prompt is too long.', userFacing: true },
      });
      expect(byProcess!.counts).toMatchObject({ waiting: 2 }); // the leader's delivery and the follower's
      expect(await told()).toEqual(byProcess); // the same delivery job, not replaced nor added again; GPU-seconds counted once
    } finally {
      behaviour = async () => undefined;
      await worker.close();
      await jobs.close();
      await deliveries.close();
    }
  });
});
