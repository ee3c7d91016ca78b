// The processor's paths processor.redis.test.ts leaves out, over real Redis with hosts that return known values:
// /describe's prompts, several images one after another, the model's own checks (caption in the PNG, match score and
// re-rolls, withheld images), a channel's retention and no-log mode, the CLI queue's expiry, afterHandOver, and what
// it logs. Each test builds the processor it needs (config, host, logger).
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { UnrecoverableError, type Job } from 'bullmq';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { loadConfig, type LoadOptions } from '../../../src/config/load.ts';
import type { Config } from '../../../src/config/schema.ts';
import { AppError, UserError } from '../../../src/errors.ts';
import {
  CONTRACT_VERSION,
  MAX_DESCRIBED_PROMPT_CHARS,
  type CliDestination,
  type Destination,
  type DiscordDestination,
  type JobProgress,
  type JobRequest,
  type JobResult,
} from '../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../src/jobs/ledger.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import type { CheckRequest, CheckResult, GenerateRequest, UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { cleanDescribedPrompt, createProcessor, type ProcessorDeps } from '../../../worker/processor.ts';
import type { RunOptions } from '../../../worker/thread-host.ts';
import { scopeOf } from '../../../src/checks/policy.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-procout-${randomUUID().slice(0, 8)}`;
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const cli: CliDestination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const uid = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
const askOptions = { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const failureOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error);
const noChecks = { answers: {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 0, captionTokens: 0 } };

let redis: Redis;
let blobs: BlobStore;
const closers: (() => Promise<void>)[] = [];

type Overrides = LoadOptions['overrides'];
const configWith = (overrides: Overrides = {}): Config => loadConfig({ env: {}, overrides: { ...overrides, queue: { prefix } } });

interface Host {
  generate?(request: GenerateRequest, ctx: RunOptions): Promise<{ png: Uint8Array; width: number; height: number }>;
  understand?(request: UnderstandRequest, ctx: RunOptions): Promise<{ text: string; tokenIds: number[] }>;
  check?(request: CheckRequest, ctx: RunOptions): Promise<CheckResult>;
}
/** A processor over `host` (unset methods: a 1×1 image, "a cat", no caption) that logs into `lines`. */
function processorWith(host: Host, config = configWith(), extra: Partial<ProcessorDeps> = {}) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const full = {
    generate: host.generate ?? (async () => ({ png: PNG, width: 1, height: 1 })),
    understand: host.understand ?? (async () => ({ text: 'a cat', tokenIds: [1] })),
    check: host.check ?? (async () => noChecks),
  };
  const p = createProcessor({ config, redis, blobs, host: full, log: pino({ level: 'info' }, sink), ...extra });
  closers.push(() => p.close());
  return { p, lines, config, logged: (msg: string) => lines.filter((l) => l.msg === msg) };
}

type FakeJob = Job<JobRequest> & { progress: JobProgress[] };
function job(data: unknown, extra: { attempts?: number; attemptsMade?: number; processedOn?: number; updateProgress?: () => Promise<void> } = {}): FakeJob {
  const progress: JobProgress[] = [];
  return {
    id: (data as { id?: string }).id,
    data,
    opts: extra.attempts === undefined ? {} : { attempts: extra.attempts },
    attemptsMade: extra.attemptsMade ?? 0,
    processedOn: extra.processedOn,
    progress,
    updateProgress: extra.updateProgress ?? (async (p: JobProgress) => void progress.push(p)),
  } as unknown as FakeJob;
}
const imagine = (extra: Partial<Extract<JobRequest, { kind: 'imagine' }>> = {}): JobRequest =>
  ({ v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options, ...extra }) as JobRequest;
async function handedOver(id: string, destination: Destination = cli): Promise<JobResult | undefined> {
  const q = createDeliveryQueue(configWith(), redis, deliveryQueueName(destination));
  try {
    return (await q.getJob(id))?.data;
  } finally {
    await q.close();
  }
}
/** iTXt chunks' text (keyword\0…\0text) of a PNG, as latin1. */
const pngText = (png: Uint8Array) => Buffer.from(png).toString('latin1');

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(configWith(), redis);
});
afterAll(async () => {
  for (const c of closers) await c();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('cleanDescribedPrompt', () => {
  it('keeps the first non-empty line without numbering, bullet, "Prompt:" label or quotes', () => {
    const cases: [string, string][] = [
      ['a red fox in snow', 'a red fox in snow'],
      ['\n  \n  a fox  \nsecond line', 'a fox'],
      ['1. a fox', 'a fox'],
      ['12. a fox', 'a fox'],
      ['2) a fox', 'a fox'],
      ['1.a fox', 'a fox'],
      ['- a fox', 'a fox'],
      ['* a fox', 'a fox'],
      ['• a fox', 'a fox'],
      ['Prompt: a fox', 'a fox'],
      ['PROMPT :   a fox', 'a fox'],
      ['prompt:a fox', 'a fox'],
      ['"a fox"', 'a fox'],
      ['“a fox”', 'a fox'],
      ["''a fox''", 'a fox'],
      ['`a fox`', 'a fox'],
      ['1. Prompt: "a fox"', 'a fox'],
      ['" a fox "', 'a fox'],
      // only at the start (or the ends, for quotes): the same marks inside a prompt stay
      ['12 foxes', '12 foxes'],
      ['a fox - running', 'a fox - running'],
      ['a 1. fox', 'a 1. fox'],
      ['the prompt: a fox', 'the prompt: a fox'],
      ['a "red" fox', 'a "red" fox'],
      ['', ''],
      [' \n \n', ''],
    ];
    for (const [text, prompt] of cases) expect(cleanDescribedPrompt(text), JSON.stringify(text)).toBe(prompt);
  });

  it(`cuts a prompt longer than ${MAX_DESCRIBED_PROMPT_CHARS} characters to that length, ending in "…"`, () => {
    const exact = 'x'.repeat(MAX_DESCRIBED_PROMPT_CHARS);
    expect(cleanDescribedPrompt(exact)).toBe(exact);
    const long = cleanDescribedPrompt(`${'y'.repeat(MAX_DESCRIBED_PROMPT_CHARS)}z`);
    expect(long).toHaveLength(MAX_DESCRIBED_PROMPT_CHARS);
    expect(long).toBe(`${'y'.repeat(MAX_DESCRIBED_PROMPT_CHARS - 1)}…`);
  });
});

describe('processor outputs', () => {
  it('/describe asks the question once per seed s…s+3 (wrapping at 2^32) and hands over the cleaned, numbered prompts', async () => {
    const answers = ['1. a fox', '   ', 'Prompt: "a cat"', '- a dog'];
    const asked: UnderstandRequest[] = [];
    const { p } = processorWith({
      async understand(request, ctx) {
        asked.push(request);
        ctx.onProgress({ stage: 'answering', step: 1, total: 2 });
        await sleep(5);
        return { text: answers[asked.length - 1]!, tokenIds: Array.from({ length: asked.length }, (_, i) => i) };
      },
    });
    const imageKey = await blobs.put(Uint8Array.from([4, 5, 6]), 'input');
    const req: JobRequest = {
      v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', mode: 'describe', imageKey, question: 'Write a prompt.',
      history: [{ role: 'user', text: 'earlier' }], options: { ...askOptions, seed: 2 ** 32 - 2 },
    };
    const outcome = await p.process(job(req), 'token', new AbortController().signal);
    expect(asked.map((a) => a.options.seed)).toEqual([2 ** 32 - 2, 2 ** 32 - 1, 0, 1]);
    for (const a of asked) {
      expect(a).toMatchObject({ image: Uint8Array.from([4, 5, 6]), question: 'Write a prompt.', history: [], options: { ...askOptions, seed: a.options.seed } });
    }
    const r = (await handedOver(req.id))!;
    expect(r).toMatchObject({ kind: 'ask', status: 'succeeded' });
    expect(r.answer).toEqual({ text: '1. a fox\n2. a cat\n3. a dog', tokenCount: 1 + 2 + 3 + 4, prompts: ['a fox', 'a cat', 'a dog'] });
    expect(Object.keys(outcome.timingsMs!)).toEqual(['answering']);
    expect(outcome.timingsMs!.answering).toBeGreaterThanOrEqual(15); // all four answers, not only the first
  });

  it('/describe with no usable answer is a failure the user can read', async () => {
    const { p } = processorWith({ understand: async () => ({ text: '\n"" \n', tokenIds: [1] }) });
    const imageKey = await blobs.put(Uint8Array.from([4, 5, 6]), 'input');
    const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', mode: 'describe', imageKey, question: 'q', history: [], options: askOptions };
    const e = await failureOf(p.process(job(req, { attempts: 3 }), 'token', new AbortController().signal));
    expect(e).toBeInstanceOf(UnrecoverableError);
    expect((await handedOver(req.id))!.error).toEqual({ code: 'bad_image', message: "I couldn't turn that image into prompts this time; please try again, or with another image.", userFacing: true });
  });

  it('an ask with no progress reports has no stage timings; the run gets the job time limit and a signal even when BullMQ passes none; a /describe\'s runs share one limit', async () => {
    const seen: RunOptions[] = [];
    const { p, config } = processorWith({
      async understand(_request, ctx) {
        seen.push(ctx);
        expect(ctx.signal.aborted).toBe(false);
        return { text: 'a cat', tokenIds: [1, 2] };
      },
    });
    const imageKey = await blobs.put(Uint8Array.from([1]), 'input');
    const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', mode: 'ask', imageKey, question: 'q', history: [], options: askOptions };
    const outcome = await p.process(job(req), 'token');
    expect(outcome).toEqual({ status: 'succeeded', timingsMs: {} });
    expect(seen[0]!.timeLimit.limitMs).toBe(config.queue.jobTimeoutMs);
    expect(seen[0]!.timeLimit.leftMs()).toBe(config.queue.jobTimeoutMs); // a host double never starts it
    expect(seen[0]!.signal).toBeInstanceOf(AbortSignal);
    expect((await handedOver(req.id))!.answer).toEqual({ text: 'a cat', tokenCount: 2 });
    const describe: JobRequest = { ...req, id: uid(), mode: 'describe' };
    expect(await p.process(job(describe), 'token')).toEqual({ status: 'succeeded', timingsMs: {} });
    // its four answers spend one limit (worker/job-time-limit.ts); each process() call, an attempt, has its own
    expect(seen).toHaveLength(5);
    expect(new Set(seen.slice(1).map((o) => o.timeLimit)).size).toBe(1);
    expect(seen[1]!.timeLimit).not.toBe(seen[0]!.timeLimit);
  });

  it('a stage reported again adds to its time; a failed progress update is logged and the job goes on', async () => {
    // The run's own clock (its share meter) when features began, when conditioning began again, and at the return.
    const at = { features: 0, again: 0, returned: 0 };
    const { p, logged } = processorWith(
      {
        async generate(_request, ctx) {
          ctx.onProgress({ stage: 'conditioning', step: 0, total: 1 });
          await sleep(40);
          at.features = ctx.meter!.now();
          ctx.onProgress({ stage: 'features', step: 0, total: 1 });
          await sleep(10);
          at.again = ctx.meter!.now();
          ctx.onProgress({ stage: 'conditioning', step: 1, total: 1 });
          await sleep(40);
          at.returned = ctx.meter!.now();
          return { png: PNG, width: 1, height: 1 };
        },
      },
      configWith({ checks: { altText: false } }), // nothing runs between the model's return and the last stage's end
    );
    const req = imagine();
    const outcome = await p.process(job(req, { updateProgress: () => Promise.reject(new Error('redis away')) }), 'token', new AbortController().signal);
    expect(Object.keys(outcome.timingsMs!)).toEqual(['conditioning', 'features']);
    const { conditioning = NaN, features = NaN } = outcome.timingsMs!;
    expect(conditioning).toBeGreaterThanOrEqual(75); // both spells of 40 ms
    // the first spell counts from the run's start (clock 0); 30 ms for the steps between the return and the last reading
    expect(conditioning).toBeLessThanOrEqual(at.features + (at.returned - at.again) + 30);
    expect(features).toBeGreaterThanOrEqual(5);
    expect(Math.abs(features - (at.again - at.features))).toBeLessThanOrEqual(5);
    await sleep(10);
    expect(logged('progress update failed')[0]).toMatchObject({ level: 40, jobId: req.id, err: 'redis away' });
  });

  it('several images without batching: one after another, seeds s, s+1, …, alt text "n of count", stored at once; one image has no count in it', async () => {
    let inFlight = 0;
    let most = 0;
    const drawn: GenerateRequest[] = [];
    const contexts: RunOptions[] = [];
    let storing = 0;
    let mostStored = 0;
    const stores: BlobStore = {
      get: (key) => blobs.get(key),
      delete: (key) => blobs.delete(key),
      release: (key, grace) => blobs.release(key, grace),
      share: (key, readerId, ttl) => blobs.share(key, readerId, ttl),
      put: async (bytes, hint, ttl) => {
        mostStored = Math.max(mostStored, ++storing);
        await sleep(5);
        storing--;
        return blobs.put(bytes, hint, ttl);
      },
    };
    const { p } = processorWith(
      {
        async generate(request, ctx) {
          drawn.push(request);
          contexts.push(ctx);
          most = Math.max(most, ++inFlight);
          await sleep(10);
          inFlight--;
          return { png: PNG, width: 8, height: 100 + request.options.seed };
        },
      },
      configWith({ checks: { altText: false } }),
      { blobs: stores },
    );
    const req = imagine({ options: { ...options, seed: 5, count: 3 } });
    await p.process(job(req), 'token', new AbortController().signal);
    expect(most).toBe(1);
    expect(mostStored).toBe(3); // the three images stored at once (one round trip), not one after another
    expect(drawn.map((d) => d.options)).toEqual([5, 6, 7].map((seed) => ({ ...options, seed })));
    expect(contexts.every((c) => c.meter !== undefined)).toBe(true); // one after another: the job's share meter
    const r = (await handedOver(req.id))!;
    expect(r.images!.map((i) => [i.height, i.altText, i.prompt])).toEqual([
      [105, 'a fox (1 of 3)', 'a fox'], [106, 'a fox (2 of 3)', 'a fox'], [107, 'a fox (3 of 3)', 'a fox'],
    ]);
    expect(r.image).toEqual(r.images![0]);
    expect(r.image!.options).toEqual({ ...options, seed: 5 });
    for (const image of r.images!) expect(image).not.toHaveProperty('caption');

    const one = imagine();
    expect(await p.process(job(one), 'token', new AbortController().signal)).toStrictEqual({ status: 'succeeded', timingsMs: {} }); // no stage, no score
    const single = (await handedOver(one.id))!;
    expect(single).not.toHaveProperty('images');
    expect(single.image).toEqual({ blobKey: single.image!.blobKey, mime: 'image/png', width: 8, height: 101, altText: 'a fox', prompt: 'a fox', options });
  });

  it('one image with worker.maxBatch.diffusion > 1 still runs on the job’s share meter', async () => {
    const contexts: RunOptions[] = [];
    const { p } = processorWith(
      {
        async generate(_request, ctx) {
          contexts.push(ctx);
          return { png: PNG, width: 1, height: 1 };
        },
      },
      configWith({ worker: { maxBatch: { decode: 1, diffusion: 3 } } }),
    );
    await p.process(job(imagine()), 'token', new AbortController().signal);
    expect(contexts).toHaveLength(1);
    expect(contexts[0]!.meter).toBeDefined();
  });

  it('the model’s caption becomes the alt text and the PNG’s Description; an empty caption is none; vary without a prompt has a plain alt text', async () => {
    let caption = 'a red fox on snow';
    const { p, logged } = processorWith({ check: async () => ({ ...noChecks, caption }) });
    const req = imagine();
    await p.process(job(req), 'token', new AbortController().signal);
    const r = (await handedOver(req.id))!;
    expect(r.image).toMatchObject({ altText: 'a red fox on snow', caption: 'a red fox on snow' });
    expect(logged('prompt match')).toEqual([]); // a check without a match score
    const png = (await blobs.get(r.image!.blobKey))!;
    expect(pngText(png)).toContain('Description');
    expect(pngText(png)).toContain('a red fox on snow');

    caption = '';
    const imageKey = await blobs.put(Uint8Array.from([1, 2]), 'input');
    const vary: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'vary', imageKey, prompt: '', options };
    await p.process(job(vary), 'token', new AbortController().signal);
    const v = (await handedOver(vary.id))!;
    expect(v.image!.altText).toBe('A variation of your image');
    expect(v.image).not.toHaveProperty('caption');
    expect(Buffer.from((await blobs.get(v.image!.blobKey))!)).toEqual(Buffer.from(PNG)); // no text chunk added
  });

  it('prompt match: re-rolls below the threshold, delivers the best try and reports every try’s score', async () => {
    const scores: (number | undefined)[] = [undefined, 0.9, 0.1, 0.2, 0.3];
    const { p, logged } = processorWith(
      {
        async check() {
          const match = scores.shift();
          return { ...noChecks, caption: 'c', ...(match === undefined ? {} : { match }) };
        },
      },
      configWith({ checks: { match: { enabled: true, threshold: 0.5, maxRerolls: 2 } } }),
    );
    // image 0: no score, then 0.9 (stops); image 1: 0.1, 0.2, 0.3 (all rerolls, best 0.3)
    const req = imagine({ options: { ...options, count: 2 } });
    const outcome = await p.process(job(req), 'token', new AbortController().signal);
    expect(outcome).toEqual({ status: 'succeeded', timingsMs: outcome.timingsMs, matchScore: 0.9, matchScores: [null, 0.9], tries: 2 });
    const r = (await handedOver(req.id))!;
    expect(r.images!.map((i) => [i.matchScore, i.tries])).toEqual([[0.9, 2], [0.3, 3]]);
    expect(logged('prompt match').map((l) => [l.jobId, l.image, l.matchScore, l.tries, l.scores])).toEqual([
      [req.id, 0, 0.9, 2, [null, 0.9]],
      [req.id, 1, 0.3, 3, [0.1, 0.2, 0.3]],
    ]);

    scores.push(0.8);
    const once = imagine();
    expect(await p.process(job(once), 'token', new AbortController().signal)).toEqual({ status: 'succeeded', timingsMs: expect.any(Object), matchScore: 0.8, matchScores: [0.8] });
    expect((await handedOver(once.id))!.image).not.toHaveProperty('tries');
  });

  it('moderation: a flagged input image is deleted and a flagged output withheld, each told privately', async () => {
    const { p, logged } = processorWith(
      { check: async (request) => ({ ...noChecks, answers: request.questions.length ? { nudity: 0.2, violence: 0.9 } : ({} as Record<string, number>) }) },
      configWith({ checks: { moderation: { enabled: true, checkInputs: true } } }),
    );
    const imageKey = await blobs.put(Uint8Array.from([9, 9]), 'input');
    const vary: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'vary', imageKey, prompt: 'x', options };
    expect(await failureOf(p.process(job(vary, { attempts: 3 }), 'token', new AbortController().signal))).toBeInstanceOf(UnrecoverableError);
    expect(await blobs.get(imageKey)).toBeUndefined();
    expect((await handedOver(vary.id))!.error).toEqual({
      code: 'input_withheld', message: "I can't work with that image here: this channel's content checks flagged it (violence).", userFacing: true, private: true,
    });
    expect(logged('input image withheld by the content checks')).toMatchObject([{ jobId: vary.id, flagged: ['violence'] }]);

    const req = imagine();
    expect(await failureOf(p.process(job(req, { attempts: 3 }), 'token', new AbortController().signal))).toBeInstanceOf(UnrecoverableError);
    expect((await handedOver(req.id))!.error).toMatchObject({ code: 'withheld', userFacing: true, private: true });
    expect(logged('generated image withheld by the content checks')).toMatchObject([{ jobId: req.id, flagged: ['violence'] }]);
  });

  it('other final failures are not private and do not log a withheld image; configured limits refuse before anything runs', async () => {
    let drawn = 0;
    const { p, logged } = processorWith(
      {
        async generate() {
          drawn++;
          throw new UserError('bad_request', 'no foxes today');
        },
      },
      configWith({ generation: { defaultDitSteps: 2, maxDitSteps: 2 } }),
    );
    const req = imagine();
    await failureOf(p.process(job(req), 'token', new AbortController().signal));
    expect((await handedOver(req.id))!.error).toEqual({ code: 'bad_request', message: 'no foxes today', userFacing: true });
    expect(logged('generated image withheld by the content checks')).toEqual([]);

    const tooMany = imagine({ options: { ...options, ditSteps: 3 } });
    await failureOf(p.process(job(tooMany), 'token', new AbortController().signal));
    expect(drawn).toBe(1);
    expect((await handedOver(tooMany.id))!.error).toMatchObject({ code: 'bad_request', message: expect.stringMatching(/^steps is 3; the limit is 2\./) });

    const bigImage = await blobs.put(new Uint8Array(3), 'input');
    const { p: small } = processorWith({}, configWith({ understanding: { maxInputImageBytes: 2 } }));
    const ask: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', imageKey: bigImage, question: 'q', history: [], options: askOptions };
    await failureOf(small.process(job(ask), 'token', new AbortController().signal));
    expect((await handedOver(ask.id))!).toMatchObject({ kind: 'ask', error: { code: 'bad_image', userFacing: true } });

    const malformedAsk = { ...ask, id: uid(), imageKey: undefined };
    await failureOf(p.process(job(malformedAsk), 'token', new AbortController().signal));
    expect((await handedOver(malformedAsk.id))!).toMatchObject({ kind: 'ask', error: { code: 'contract' } });
  });

  it('a channel’s retention bounds the output blob and travels with the result; a CLI result’s delivery queue expires with the blobs', async () => {
    const { p, config } = processorWith({});
    const discord: DiscordDestination = { platform: 'discord', guildId: 'g', channelId: `c${randomUUID().slice(0, 6)}`, userId: 'u', applicationId: 'a', retentionSeconds: 120 };
    const req = imagine({ destination: discord });
    await p.process(job(req), 'token', new AbortController().signal);
    const r = (await handedOver(req.id, discord))!;
    const blobTtl = await redis.ttl(r.image!.blobKey);
    expect(blobTtl).toBeGreaterThan(0);
    expect(blobTtl).toBeLessThanOrEqual(120);
    const q = createDeliveryQueue(config, redis, deliveryQueueName(discord));
    closers.push(() => q.close());
    const delivery = (await q.getJob(req.id))!;
    // the TTL travels in the result; its BullMQ options are the queue's (a TTL as their age deleted every channel's
    // finished results when this one finished: src/jobs/retention.ts), and the retention sweep deletes it
    expect(delivery.data.destination).toMatchObject({ retentionSeconds: 120 });
    expect(delivery.opts).toMatchObject({ removeOnComplete: { age: config.queue.keepCompletedSeconds }, removeOnFail: { age: config.queue.keepFailedSeconds } });
    expect(delivery.name).toBe('result');
    expect(await redis.ttl(q.toKey(req.id))).toBe(-1); // a bot's delivery queue is read until it is done

    const local = imagine();
    await p.process(job(local), 'token', new AbortController().signal);
    const cq = createDeliveryQueue(config, redis, deliveryQueueName(cli));
    closers.push(() => cq.close());
    for (const key of [cq.toKey(local.id), cq.keys.wait!]) {
      const ttl = await redis.ttl(key);
      expect(ttl, key).toBeGreaterThan(config.blobs.ttlSeconds - 60);
      expect(ttl, key).toBeLessThanOrEqual(config.blobs.ttlSeconds);
    }
  });

  it('logs what happened, and in no-log mode never a user-facing failure text', async () => {
    let fail: Error | undefined;
    const host = {
      async generate() {
        if (fail) throw fail;
        return { png: PNG, width: 1, height: 1 };
      },
    };
    const { p, logged } = processorWith(host);
    const ok = imagine();
    await p.process(job(ok), 'token', new AbortController().signal);
    expect(logged('job done')).toMatchObject([{ level: 30, jobId: ok.id, kind: 'imagine', timingsMs: {} }]);
    await p.process(job(ok), 'token', new AbortController().signal);
    expect(logged('result already handed over; not running again')).toMatchObject([{ level: 30, jobId: ok.id }]);

    fail = new UserError('bad_request', 'the fox is secret');
    const userFacing = imagine();
    await failureOf(p.process(job(userFacing), 'token', new AbortController().signal));
    expect(logged('job failed (not retried)').at(-1)).toMatchObject({ level: 30, jobId: userFacing.id, code: 'bad_request', err: 'the fox is secret' });

    fail = new Error('socket hang up');
    const transient = imagine();
    await failureOf(p.process(job(transient, { attempts: 3, attemptsMade: 1 }), 'token', new AbortController().signal));
    expect(logged('job attempt failed')).toMatchObject([{ level: 40, jobId: transient.id, attempt: 2, attempts: 3, err: 'socket hang up' }]);

    const malformed = { ...imagine(), prompt: 7 };
    await failureOf(p.process(job(malformed), 'token', new AbortController().signal));
    const reason = expect.stringMatching(new RegExp(`^job ${malformed.id} does not match contract v${CONTRACT_VERSION}: prompt: `));
    expect(logged('rejected malformed job')).toMatchObject([{ level: 50, jobId: malformed.id, err: reason }]);
    expect((await handedOver(malformed.id))!.error).toEqual({ code: 'contract', message: reason, userFacing: false });

    const quiet = processorWith(host);
    fail = new UserError('bad_request', 'the fox is secret');
    const secret = imagine({ destination: { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a', noLog: true } });
    await failureOf(quiet.p.process(job(secret), 'token', new AbortController().signal));
    expect(quiet.logged('job failed (not retried)')).toMatchObject([{ jobId: secret.id, code: 'bad_request', err: 'bad_request (withheld: noLog)' }]);
    fail = undefined;
  });

  it('a re-run that finds its result handed over returns that result’s stage timings (the GPU-seconds the metrics charge once)', async () => {
    let afterFails = true;
    const { p } = processorWith(
      {
        async generate(_request, ctx) {
          ctx.onProgress({ stage: 'features', step: 0, total: 1 });
          await sleep(30);
          ctx.onProgress({ stage: 'decoding', step: 0, total: 1 });
          await sleep(10);
          return { png: PNG, width: 1, height: 1 };
        },
      },
      configWith({ checks: { altText: false } }),
      { afterHandOver: async () => { if (afterFails) throw new Error('cache away'); } },
    );
    const req = imagine();
    await expect(p.process(job(req), 'token', new AbortController().signal)).rejects.toThrow('cache away'); // not final: no metrics
    afterFails = false;
    const rerun = await p.process(job(req), 'token', new AbortController().signal); // ran nothing on the device
    const timings = (await handedOver(req.id))!.timingsMs;
    expect(timings.features).toBeGreaterThanOrEqual(25);
    expect(rerun).toEqual({ status: 'succeeded', alreadyHandedOver: true, timingsMs: timings });
  });

  it('afterHandOver: after every result handed over (again on a re-run), with the run time; not for a retried failure', async () => {
    const calls: [string, JobResult['status'], number][] = [];
    const pngs: (Uint8Array | undefined)[] = [];
    const scopes: (string | undefined)[] = [];
    let afterFails = false;
    let fail: Error | undefined;
    const { p } = processorWith(
      {
        async generate() {
          if (fail) throw fail;
          return { png: PNG, width: 1, height: 1 };
        },
      },
      configWith(),
      {
        afterHandOver: async (request, result, ranMs, png, checksScope) => {
          calls.push([request.id, result.status, ranMs]);
          pngs.push(png);
          scopes.push(checksScope);
          if (afterFails) throw new Error('cache away');
        },
      },
    );
    const run = (data: JobRequest, extra: Parameters<typeof job>[1] = {}) => p.process(job(data, extra), 'token', new AbortController().signal);

    const ok = imagine();
    await run(ok, { processedOn: Date.now() - 5_000 });
    expect(calls).toEqual([[ok.id, 'succeeded', expect.any(Number)]]);
    expect(calls[0]![2]).toBeLessThan(5_000); // its run's time on the job's GPU clock, not the 5 s since its attempt started
    // the content checks its run read, in its tenant, for whom its result may be shared with (worker/after-job.ts): the
    // scope the bot queued it in (bots/core/submit.ts), or its result would never be stored
    expect(scopes).toEqual([scopeOf(configWith(), ok.destination, undefined)]);

    afterFails = true;
    const flaky = imagine();
    await expect(run(flaky)).rejects.toThrow('cache away'); // BullMQ retries the job …
    expect((await handedOver(flaky.id))!.status).toBe('succeeded'); // … whose result stays handed over
    afterFails = false;
    await run(flaky); // the re-run finds it handed over and calls afterHandOver again
    expect(calls.slice(1).map(([id, status]) => [id, status])).toEqual([[flaky.id, 'succeeded'], [flaky.id, 'succeeded']]);
    const stored = await blobs.get((await handedOver(flaky.id))!.image!.blobKey);
    expect(pngs.slice(0, 3)).toEqual([PNG, stored, undefined]); // the bytes it stored (cached without reading them back); none on a re-run
    expect(stored).toEqual(PNG);
    expect(calls[1]![2]).toBeLessThan(5_000); // no processedOn: no run time to speak of

    const delivered = imagine();
    await new DeliveryLedger(redis, configWith()).markDelivered(delivered.id);
    // delivered, its hand-over gone: the flight it led still ends, its followers told it failed; with no run of its own,
    // its time is the attempt's since processedOn, here on a clock ahead of ours: never a negative time
    await run(delivered, { processedOn: Date.now() + 60_000 });
    expect(calls.slice(3)).toEqual([[delivered.id, 'failed', 0]]); // before: not called, followers left waiting

    fail = new AppError('timeout', 'Took too long.');
    const timedOut = imagine();
    await failureOf(run(timedOut, { processedOn: Date.now() - 60_000 })); // charged its run, not the minute since its attempt started
    expect(calls.at(-1)!.slice(0, 2)).toEqual([timedOut.id, 'failed']);
    expect(calls.at(-1)![2]).toBeLessThan(60_000);

    fail = new Error('socket hang up');
    const retried = imagine();
    await failureOf(run(retried, { attempts: 2, attemptsMade: 0 }));
    expect(calls).toHaveLength(5);
    await failureOf(run(retried, { attempts: 2, attemptsMade: 1 }));
    expect(calls.at(-1)!.slice(0, 2)).toEqual([retried.id, 'failed']);

    await failureOf(run({ ...imagine(), options: { ...options, ditSteps: 0 } } as JobRequest)); // malformed: no request to pass
    expect(calls).toHaveLength(6);
  });

  it('onFinallyFailed: afterHandOver with the result handed over, or else its own failure; none for malformed data; its error logged, not thrown', async () => {
    const calls: [string, Partial<JobResult>][] = [];
    let afterFails = false;
    const { p, logged } = processorWith({}, configWith(), {
      afterHandOver: async (request, result) => {
        calls.push([request.id, { status: result.status, error: result.error }]);
        if (afterFails) throw new Error('cache away');
      },
    });
    const stalled = new Error('job stalled more than allowable limit');

    const never = imagine(); // failed by BullMQ, never run: its failure is handed over, then passed on
    await p.onFinallyFailed(job(never), stalled);
    const failure = { status: 'failed' as const, error: { code: 'internal', message: `Generation failed (ref ${never.id}): ${stalled.message}`, userFacing: false } };
    expect(await handedOver(never.id)).toMatchObject(failure);
    expect(calls).toEqual([[never.id, failure]]);

    afterFails = true;
    const last = imagine(); // a result handed over, then afterHandOver threw at the last attempt: the job failed for good
    await expect(p.process(job(last, { attempts: 1 }), 'token', new AbortController().signal)).rejects.toThrow('cache away');
    await p.onFinallyFailed(job(last), new Error('cache away')); // resolves: the error is logged
    expect(calls.slice(1)).toEqual([[last.id, { status: 'succeeded' }], [last.id, { status: 'succeeded' }]]); // its followers get the image
    expect((await handedOver(last.id))!.status).toBe('succeeded');
    expect(logged('could not end the single flight of a failed job; its followers are not told')).toMatchObject([{ jobId: last.id, err: 'cache away' }]);

    afterFails = false;
    const malformed = { ...imagine(), options: { ...options, ditSteps: 0 } };
    await p.onFinallyFailed(job(malformed), stalled);
    expect((await handedOver(malformed.id))!.status).toBe('failed'); // told, but no request to pass on
    expect(calls).toHaveLength(3);
    // a job whose data names another job (no enqueue makes one): malformed too, as in process; afterHandOver would
    // settle the usage and close the flight of the job its data names
    const forged = imagine();
    await p.onFinallyFailed({ ...job(forged), id: `other-${forged.id}` } as unknown as Parameters<typeof p.onFinallyFailed>[0], stalled);
    expect(calls).toHaveLength(3);
  });

  it('close() closes the delivery queues it opened (their listeners leave the shared connection)', async () => {
    const baseline = redis.listenerCount('error') + redis.listenerCount('close');
    const { p } = processorWith({});
    await p.process(job(imagine()), 'token', new AbortController().signal);
    await p.process(job(imagine({ destination: { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a' } })), 'token', new AbortController().signal);
    expect(redis.listenerCount('error') + redis.listenerCount('close')).toBeGreaterThan(baseline);
    await p.close();
    expect(redis.listenerCount('error') + redis.listenerCount('close')).toBe(baseline);
  });

  it('an ask’s or a /describe’s stage times are parts of the run: each stage from its first report to the next', async () => {
    let returnedAt = 0;
    const { p } = processorWith({
      async understand(_request, ctx) {
        ctx.onProgress({ stage: 'encoding', step: 0, total: 1 });
        await sleep(40);
        ctx.onProgress({ stage: 'answering', step: 0, total: 1 });
        await sleep(10);
        returnedAt = performance.now();
        return { text: 'a cat', tokenIds: [1] };
      },
    });
    for (const mode of ['ask', 'describe'] as const) {
      const imageKey = await blobs.put(Uint8Array.from([1]), 'input');
      const req: JobRequest = { v: CONTRACT_VERSION, id: uid(), destination: cli, submittedAt: 1, kind: 'ask', mode, imageKey, question: 'q', history: [], options: askOptions };
      const began = performance.now();
      const { timingsMs } = await p.process(job(req), 'token', new AbortController().signal);
      expect(Object.keys(timingsMs!).sort(), mode).toEqual(['answering', 'encoding']);
      const answers = mode === 'ask' ? 1 : 4; // describe: the same question four times, each encoding then answering
      expect(timingsMs!.encoding, mode).toBeGreaterThanOrEqual(35 * answers);
      expect(timingsMs!.answering, mode).toBeGreaterThanOrEqual(5 * answers);
      expect(timingsMs!.encoding! + timingsMs!.answering!, mode).toBeLessThanOrEqual(returnedAt - began + 30);
    }
  });
});
