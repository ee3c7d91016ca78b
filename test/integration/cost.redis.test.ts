// Issue 17 over real Redis and real worker processes: the result cache (a repeated /imagine with a fixed seed is
// delivered without a job reaching a worker, identical PNG bytes; with the tiny BLIP3-o pipeline too) and single
// flight (five identical requests at once → one job, five deliveries, each exactly once).
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHED_TEXT, JOINED_TEXT, createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation, Reply } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { DiscordDestination } from '../../src/jobs/contract.ts';
import { createJobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, startWorker, stopProcess, until, type Harness, type Proc } from '../doubles/spine-harness.ts';

const secrets = loadSecrets({ REDIS_URL });
let redis: Redis;
const started: { core: Core; worker?: Proc; h: Harness }[] = [];

const dest = (channelId = 'c1', userId = 'u1'): DiscordDestination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const imagine = (prompt: string, d = dest()): Invocation => ({
  input: { command: 'imagine', prompt, seed: 7, ditSteps: 3, decoderSteps: 3 }, destination: d, dedupeKey: randomUUID(), isAdmin: false,
});
const jobIdOf = (r: Reply) => {
  if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
  return r.jobId;
};

async function setup(h: Harness, withWorker = true) {
  const port = new RecordingPort('discord');
  const worker = withWorker ? await startWorker(h) : undefined;
  const core = createCore({ config: h.config, secrets, ports: [port] });
  await core.start();
  started.push({ core, worker, h });
  return { port, core, worker, queue: core.queue };
}

beforeAll(() => {
  redis = createRedis(REDIS_URL);
});
afterAll(async () => {
  for (const s of started) {
    await s.core.stop();
    await stopProcess(s.worker);
    await cleanup(redis, s.h.prefix);
  }
  await closeRedis(redis);
});

describe('result cache and single flight (test double pipeline)', () => {
  const h = makeHarness({ cache: { enabled: true, singleFlight: true }, worker: { pipelineExtra: { stepDelayMs: 30, maxSteps: 3 } } });
  let env: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    env = await setup(h);
  }, 150_000);

  it('the same /imagine with a fixed seed twice: the second is delivered from the cache, no job, identical PNG', async () => {
    const first = jobIdOf(await env.core.handle(imagine('a red fox in  snow')));
    await env.port.waitFor(first);
    // The worker stores the entry just after handing the result over (the delivery may be faster): until its job is
    // completed, an identical request joins the flight instead (tested below).
    await until(async () => (await env.queue.getJobState(first)) === 'completed', 20_000, 'the first job to complete');
    const second = await env.core.handle(imagine('a red fox in snow ')); // whitespace differs: normalised away
    expect(second).toMatchObject({ kind: 'queued', text: CACHED_TEXT });
    const secondId = jobIdOf(second);
    const delivered = await env.port.waitFor(secondId);
    expect(delivered.servedFrom).toBe('cache');
    expect(delivered.status).toBe('succeeded');
    expect(await env.queue.getJob(secondId)).toBeUndefined(); // never a job
    expect(runs(h).filter((r) => r.prompt?.startsWith('a red fox'))).toHaveLength(1); // one model run
    const png = (id: string) => Buffer.from(env.port.deliveries.find((d) => d.result.jobId === id)!.image!);
    expect(png(secondId).equals(png(first))).toBe(true);
    expect(env.port.count(secondId)).toBe(1);
    // a different seed is a different address
    const other = await env.core.handle({ ...imagine('a red fox in snow'), input: { command: 'imagine', prompt: 'a red fox in snow', seed: 8, ditSteps: 3, decoderSteps: 3 } });
    expect(other.kind === 'queued' && other.text).not.toBe(CACHED_TEXT);
    await env.port.waitFor(jobIdOf(other));
    expect(runs(h).filter((r) => r.prompt?.startsWith('a red fox'))).toHaveLength(2);
    // re-roll of the cached delivery draws a new seed: a new job
    const reroll = await env.core.handle({ input: { command: 'reroll', jobId: secondId }, destination: dest(), dedupeKey: randomUUID(), isAdmin: false });
    expect(reroll.kind === 'queued' && reroll.text).not.toBe(CACHED_TEXT);
    const rerolled = await env.port.waitFor(jobIdOf(reroll));
    expect(rerolled.image?.options.seed).not.toBe(7);
    expect(rerolled.servedFrom).toBeUndefined();
  });

  it('five identical requests at once: one job, five deliveries, each exactly once', async () => {
    const invocations = Array.from({ length: 5 }, (_, i) => imagine('five lighthouses at dusk', dest('c1', `user-${i}`)));
    const replies = await Promise.all(invocations.map((inv) => env.core.handle(inv)));
    const ids = replies.map(jobIdOf);
    expect(new Set(ids).size).toBe(5);
    expect(replies.filter((r) => r.text === JOINED_TEXT)).toHaveLength(4);
    const results = await Promise.all(ids.map((id) => env.port.waitFor(id)));
    await new Promise((r) => setTimeout(r, 500)); // a second delivery of any of them would land by now
    for (const id of ids) expect(env.port.count(id)).toBe(1);
    expect(runs(h).filter((r) => r.prompt === 'five lighthouses at dusk')).toHaveLength(1);
    expect(results.filter((r) => r.servedFrom === 'shared')).toHaveLength(4);
    // each delivery went to its own requester
    for (const [i, r] of results.entries()) expect(r.destination).toMatchObject({ userId: `user-${i}` });
    const pngs = ids.map((id) => Buffer.from(env.port.deliveries.find((d) => d.result.jobId === id)!.image!));
    for (const p of pngs) expect(p.equals(pngs[0]!)).toBe(true);
    const counts = await env.queue.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized');
    expect(counts.failed).toBe(0);
  });

  it('a greedy /ask answer is served from the cache (sampled answers have no address: test/unit/src/cache/key.test.ts)', async () => {
    const { default: sharp } = await import('sharp');
    const png = new Uint8Array(await sharp({ create: { width: 32, height: 24, channels: 3, background: '#808080' } }).png().toBuffer());
    const ask = (): Invocation => ({ input: { command: 'ask', question: 'what colour is this?', image: { bytes: png } }, destination: dest(), dedupeKey: randomUUID(), isAdmin: false });
    const a = jobIdOf(await env.core.handle(ask()));
    await env.port.waitFor(a);
    const b = await env.core.handle(ask()); // greedy by default (understanding.temperature 0): a different random seed, same answer
    expect(b).toMatchObject({ text: CACHED_TEXT });
    const answered = await env.port.waitFor(jobIdOf(b));
    expect(answered.answer?.text).toBe(env.port.deliveries.find((d) => d.result.jobId === a)!.result.answer?.text);
    expect(runs(h).filter((r) => r.question === 'what colour is this?')).toHaveLength(1);
  });
});

describe('result cache with the tiny BLIP3-o pipeline (make-tiny → convert → real worker)', () => {
  let work: string;
  let env: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'cost-tiny-'));
    makeTiny(join(work, 'snapshot'));
    const h = makeHarness({
      cache: { enabled: true, singleFlight: true },
      queue: { jobTimeoutMs: 300_000 },
      worker: { pipelineModule: 'worker/pipeline/blip3o.ts' },
      model: { hubId: '', snapshotDir: join(work, 'snapshot'), onnxDir: join(work, 'onnx'), dtype: 'fp32', executionProvider: 'cpu', convertOnStart: true },
    });
    env = await setup(h);
  }, 200_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('the second identical /imagine is delivered from the cache with byte-identical PNG and no job', async () => {
    const first = jobIdOf(await env.core.handle(imagine('a tiny red fox')));
    const one = await env.port.waitFor(first, 180_000);
    expect(one.status).toBe('succeeded');
    // the worker marks the job completed just after handing the result over: wait for that before counting
    const completed = await until(async () => {
      const c = await env.queue.getJobCounts('completed');
      return c.completed === 1 ? c : undefined;
    }, 20_000, 'the first job to complete');
    const second = await env.core.handle(imagine('a tiny red fox'));
    expect(second).toMatchObject({ text: CACHED_TEXT });
    const two = await env.port.waitFor(jobIdOf(second));
    expect(two.servedFrom).toBe('cache');
    expect(await env.queue.getJob(jobIdOf(second))).toBeUndefined();
    expect(await env.queue.getJobCounts('completed')).toEqual(completed); // no job reached the worker
    const png = (id: string) => Buffer.from(env.port.deliveries.find((d) => d.result.jobId === id)!.image!);
    expect(png(first).subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
    expect(png(jobIdOf(second)).equals(png(first))).toBe(true);
    expect(env.worker!.output()).toMatch(/worker ready/);
    const jobs = createJobsQueue(env.core.config, redis);
    expect((await jobs.getJobs(['completed'])).map((j) => j.id)).toEqual([first]);
    await jobs.close();
  }, 240_000);
});

