// What the processor charges a job in GPU-seconds (docs/cost.md "GPU-second accounting"), with host doubles that
// drive each run's share meter as worker/thread-host.ts does: waitForRoom() while the run is queued for a thread,
// share(n) while n runs share it. Time a run waits for room is not GPU time, whichever way the job runs:
//   - the images of an `--n` job, one after another or all at once (worker.maxBatch.diffusion > 1): before, all at
//     once ran on no meter and was charged its wall clock, the images' wait for room included;
//   - a run that ends failed (a crashed model thread at the job's last attempt): before, a failure was charged the
//     wall time since its attempt started, its wait for a thread included, not the GPU time its run used.
// And the budget reservation of a job whose thread crashed: kept while the job is to be retried, released as the
// worker hands over its final failure (not left for the sweep or BullMQ's stall check).
import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { measuredSeconds, Usage } from '../../../src/accounting/usage.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { AppError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, type CliDestination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import type { GenerateRequest } from '../../../worker/pipeline/types.ts';
import { createAfterJob } from '../../../worker/after-job.ts';
import { createProcessor, type ProcessorDeps } from '../../../worker/processor.ts';
import type { RunOptions } from '../../../worker/thread-host.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-proccharge-${randomUUID().slice(0, 8)}`;
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const cli: CliDestination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const uid = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const noChecks = { answers: {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 0, captionTokens: 0 } };
/** How long each run waits for room in a thread: long next to everything else a run does here. */
const WAIT_MS = 600;

let redis: Redis;
let blobs: BlobStore;
const closers: (() => Promise<void>)[] = [];

const configWith = (diffusion: number) =>
  loadConfig({ env: {}, overrides: { queue: { prefix }, checks: { altText: false }, worker: { maxBatch: { decode: 1, diffusion } } } });

function processorWith(generate: (request: GenerateRequest, ctx: RunOptions) => Promise<{ png: Uint8Array; width: number; height: number }>, diffusion: number, extra: Partial<ProcessorDeps> = {}) {
  const host = { generate, understand: async () => ({ text: 'a cat', tokenIds: [1] }), check: async () => noChecks };
  const p = createProcessor({ config: configWith(diffusion), redis, blobs, host, log: createLogger('test', 'silent'), ...extra });
  closers.push(() => p.close());
  return p;
}

function job(data: JobRequest, extra: { attempts?: number; processedOn?: number } = {}): Job<JobRequest> {
  return {
    id: data.id, data, opts: extra.attempts === undefined ? {} : { attempts: extra.attempts }, attemptsMade: 0, processedOn: extra.processedOn,
    updateProgress: async () => undefined,
  } as unknown as Job<JobRequest>;
}
const imagine = (count: number): JobRequest => ({ v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options: { ...options, count } });

/**
 * A run as the thread host runs it: queued for a thread (WAIT_MS, charged nothing), then alone on it for a few steps.
 * `waited` collects each run's wait as it happened.
 */
function queuedThenAlone(waited: number[]) {
  return async (_request: GenerateRequest, ctx: RunOptions) => {
    ctx.meter?.waitForRoom();
    const queuedAt = Date.now();
    await sleep(WAIT_MS);
    waited.push(Date.now() - queuedAt);
    ctx.meter?.share(1);
    ctx.onProgress({ stage: 'conditioning', step: 1, total: 2 });
    await sleep(5);
    ctx.onProgress({ stage: 'decoding', step: 1, total: 2 });
    return { png: PNG, width: 1, height: 1 };
  };
}

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(configWith(1), redis);
});
afterAll(async () => {
  for (const c of closers) await c();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('GPU-seconds of the images of an --n job', () => {
  // The stages' sum is what the usage settle charges (measuredSeconds). Each image waited WAIT_MS for room and then
  // computed for a few ms: the job is charged its images' computing, far less than one image's wait.
  for (const [path, diffusion] of [['one after another (maxBatch.diffusion 1)', 1], ['all at once (maxBatch.diffusion 4)', 4]] as const) {
    it(`${path}: the images' wait for room in a thread is not charged`, async () => {
      const waited: number[] = [];
      const p = processorWith(queuedThenAlone(waited), diffusion);
      const outcome = await p.process(job(imagine(4)), 'token', new AbortController().signal);
      expect(waited).toHaveLength(4);
      const chargedMs = measuredSeconds({ timingsMs: outcome.timingsMs! }, NaN) * 1000;
      expect(chargedMs, `charged ${chargedMs} ms; each image waited ${Math.min(...waited)} ms or more`).toBeLessThan(Math.min(...waited) / 2);
    });
  }
});

describe('GPU-seconds of a run that ends failed', () => {
  it('a model thread that crashes at the last attempt: the job is charged its run, not its wait for room', async () => {
    const charged: number[] = [];
    const waited: number[] = [];
    const p = processorWith(
      async (request, ctx) => {
        await queuedThenAlone(waited)(request, ctx);
        throw new AppError('internal', 'the model thread exited (code 1) during the job');
      },
      1,
      { afterHandOver: async (_request: JobRequest, result: JobResult, ranMs: number) => void charged.push(measuredSeconds(result, ranMs) * 1000) },
    );
    const req = imagine(1);
    const failed = await p.process(job(req, { attempts: 1, processedOn: Date.now() }), 'token', new AbortController().signal).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(failed?.message).toBe('the model thread exited (code 1) during the job');
    expect(charged).toHaveLength(1); // settled at once, with the failure handed over
    expect(charged[0], `charged ${charged[0]} ms; the run waited ${waited[0]} ms for room`).toBeLessThan(waited[0]! / 2);
  });
});

describe('the budget reservation of a job whose model thread crashed', () => {
  it('is kept while the job is to be retried, and released as its final failure is handed over', async () => {
    const config = configWith(1);
    const usage = new Usage(redis, config);
    const after = createAfterJob({ config, redis, blobs, log: createLogger('test', 'silent'), manifestHash: 'm' });
    closers.push(() => after.close());
    const crash = async () => Promise.reject(new AppError('internal', 'the model thread exited (code 1) during the job'));
    const p = processorWith(crash, 1, { afterHandOver: after.afterHandOver });
    const d = { ...cli, clientId: `c${randomUUID().slice(0, 8)}` };
    const req: JobRequest = { ...imagine(1), destination: d };
    await redis.hset(`${usage.U}:est`, `imagine|${options.ditSteps}x${options.decoderSteps}|1:1|cfg`, '2'); // a known cost: 2 s an image
    expect(await usage.admit(req.id, d, req)).toEqual({ admitted: true, estimate: 2 });
    const attempt = (attemptsMade: number) =>
      p.process({ ...job(req, { attempts: 2 }), attemptsMade } as Job<JobRequest>, 'token', new AbortController().signal).then(() => undefined, (e: unknown) => e as Error);
    expect((await attempt(0))?.message).toMatch(/exited/);
    expect((await usage.today(d)).channel).toEqual({ used: 0, inflight: 2 }); // queued again: still reserved
    expect((await attempt(1))?.message).toMatch(/exited/);
    const { used, inflight } = (await usage.today(d)).channel;
    expect({ inflight, settled: await redis.exists(`${usage.U}:settled:${req.id}`) }).toEqual({ inflight: 0, settled: 1 }); // at once
    expect(used).toBeLessThan(1); // its run, not its estimate
  });
});
