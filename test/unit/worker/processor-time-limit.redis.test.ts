// queue.jobTimeoutMs holds for a job as a whole (worker/job-time-limit.ts), over a real ThreadHost and the pipeline
// double: the processor gives all of a job's runs one limit, which they spend while under way in a thread. Before
// 2026-12-07 each model run had the whole limit, so a /describe (4 answers) or an /imagine that re-rolls could run
// several limits in all and was never stopped. The host's clock is faked (setTimeout, clearTimeout and Date of this
// thread only; the double's thread keeps real time) and each run is held open until the test lets it go (the double's
// holdRuns files), so nothing here depends on how fast it runs.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Job } from 'bullmq';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { loadConfig, type LoadOptions } from '../../../src/config/load.ts';
import { CONTRACT_VERSION, type CliDestination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import { createProcessor } from '../../../worker/processor.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';
import { untilOrStillWaiting as until } from '../../doubles/real-time-poll.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-proclimit-${randomUUID().slice(0, 8)}`;
const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());
const cli: CliDestination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const uid = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const LIMIT_MS = 60_000;
const TIMED_OUT = 'This took longer than 60 seconds and was stopped.'; // formatDuration's words

let redis: Redis;
let blobs: BlobStore;
let host: ThreadHost | undefined;
let dir: string | undefined;
const closers: (() => Promise<void>)[] = [];

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(loadConfig({ env: {}, overrides: { queue: { prefix } } }), redis);
});
afterEach(async () => {
  vi.useRealTimers();
  await host?.close();
  host = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});
afterAll(async () => {
  for (const c of closers) await c();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

/**
 * A processor over one model thread running the pipeline double, every run held until `release(n)`; the host's clock
 * is faked from then on. `runs()`: the kinds of the runs the thread started, in order.
 */
async function start(overrides: LoadOptions['overrides'], extra: Record<string, unknown> = {}) {
  dir = mkdtempSync(join(tmpdir(), 'blip3o-job-limit-'));
  const runLogFile = join(dir, 'runs.jsonl');
  const holdRuns = join(dir, 'go');
  const config = loadConfig({ env: {}, overrides: { ...overrides, queue: { prefix, jobTimeoutMs: LIMIT_MS } } });
  const maxBatch = config.worker.maxBatch;
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { maxSteps: 2, runLogFile, holdRuns, ...extra } },
    abortGraceMs: 300,
    log: createLogger('test', 'silent'),
  });
  const p = createProcessor({ config, redis, blobs, host, log: createLogger('test', 'silent') });
  closers.push(() => p.close());
  const imageKey = await blobs.put(png, 'input');
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const runs = (): string[] =>
    existsSync(runLogFile) ? readFileSync(runLogFile, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { kind: string }).kind) : [];
  /** Runs the job; `ended()` is 'succeeded' or the error's message once it is over. */
  const runJob = (data: JobRequest) => {
    let end: string | undefined;
    const job = { id: data.id, data, opts: {}, attemptsMade: 0, updateProgress: async () => undefined } as unknown as Job<JobRequest>;
    void p.process(job, 'token', new AbortController().signal).then(
      () => (end = 'succeeded'),
      (e: unknown) => (end = (e as Error).message),
    );
    return () => end;
  };
  return { runs, runJob, imageKey, release: (n: number) => writeFileSync(`${holdRuns}.${n}`, '') };
}


/**
 * Lets the job's runs go one at a time: run n (1 for the first) is under way for `underWayMs(kind)` on the fake clock,
 * then released; until the job ends. The kinds of the runs it started.
 */
async function drive(started: Awaited<ReturnType<typeof start>>, ended: () => string | undefined, underWayMs: (kind: string) => number) {
  for (let n = 1; ; n++) {
    const next = await until(() => (ended() !== undefined ? 'ended' : started.runs().length >= n ? 'started' : undefined));
    if (next !== 'started') return;
    vi.advanceTimersByTime(underWayMs(started.runs()[n - 1]!));
    started.release(n);
  }
}

async function handedOver(id: string): Promise<JobResult | undefined> {
  const q = createDeliveryQueue(loadConfig({ env: {}, overrides: { queue: { prefix } } }), redis, deliveryQueueName(cli));
  try {
    return (await q.getJob(id))?.data;
  } finally {
    await q.close();
  }
}

const askOptions = { maxNewTokens: 8, temperature: 0.7, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 };
const imagineOptions = { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 4, aspect: '1:1' as const };

describe('queue.jobTimeoutMs is a limit for the job as a whole', () => {
  it('a /describe whose four answers each take 0.4 of the limit is stopped in its third, as "took longer than"', async () => {
    const started = await start({ checks: { altText: false } });
    const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', mode: 'describe', imageKey: started.imageKey, question: 'Describe it as a prompt.', history: [], options: askOptions };
    const ended = started.runJob(req);
    await drive(started, ended, () => 24_000); // 0.4 of the limit each
    expect(await until(ended)).toBe(TIMED_OUT); // before: 'succeeded', each answer with a whole limit
    expect(started.runs()).toEqual(['understand', 'understand', 'understand']); // the fourth never started
    const result = await handedOver(req.id);
    expect(result?.status).toBe('failed');
    expect(result?.error).toMatchObject({ code: 'timeout', message: TIMED_OUT, userFacing: true });
  }, 45_000);

  it('an /imagine whose re-rolls together pass the limit is stopped, its checks\' time counted too', async () => {
    // match on, every image scores 0.1 (< 0.5): a draw and a check per try, up to 1 + maxRerolls (2) tries
    const started = await start({ checks: { altText: false, match: { enabled: true, threshold: 0.5, maxRerolls: 2 } } }, { checkScores: { match: 0.1 } });
    const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options: imagineOptions };
    const ended = started.runJob(req);
    // each draw 0.3 of the limit, each check 0.1: 1.1 in all by the end of the third draw
    await drive(started, ended, (kind) => (kind === 'generate' ? 18_000 : 6_000));
    expect(await until(ended)).toBe(TIMED_OUT); // before: 'succeeded' after 3 tries
    expect(started.runs()).toEqual(['generate', 'check', 'generate', 'check', 'generate']);
    expect((await handedOver(req.id))?.error).toMatchObject({ code: 'timeout', message: TIMED_OUT });
  }, 45_000);

  it('the images of an --n job drawn at once spend the limit once, at the wall clock\'s pace: 0.6 of it each is not 1.2', async () => {
    const started = await start({ checks: { altText: false }, worker: { maxBatch: { decode: 1, diffusion: 2 } } });
    const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options: { ...imagineOptions, count: 2 } };
    const ended = started.runJob(req);
    expect(await until(() => (started.runs().length === 2 ? true : undefined))).toBe(true); // both in the thread at once
    vi.advanceTimersByTime(36_000); // 0.6 of the limit
    started.release(1);
    started.release(2);
    expect(await until(ended)).toBe('succeeded');
    expect((await handedOver(req.id))?.images).toHaveLength(2);
  }, 45_000);
});
