// What a user reads while a several-image job (`/imagine … --n 4`) runs: the worker's processor over real Redis with a
// host double that reports each image's stages as the real pipeline does (worker/pipeline/generate.ts), every report
// written (progressWriteMs 0), and each written report rendered as the Discord and Slack status lines and the CLI bar's
// value/total. One after another and all at once (worker.maxBatch.diffusion > 1), the drawing count must never go back
// to step 1 for the next image, and must end at every image's steps (4 × 3 here), not one image's.
import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { CONTRACT_VERSION, JobProgress, type CliDestination, type JobRequest } from '../../../src/jobs/contract.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import type { GenerateRequest, RunContext } from '../../../worker/pipeline/types.ts';
import { createProcessor } from '../../../worker/processor.ts';
import { progressText as discordLine } from '../../../bots/discord/render.ts';
import { progressText as slackLine } from '../../../bots/slack/blocks.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-progimg-${randomUUID().slice(0, 8)}`;
const log = createLogger('test', 'silent');
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const destination: CliDestination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const DIT_STEPS = 3;
const DECODER_STEPS = 2;
const options = { seed: 1, ditSteps: DIT_STEPS, decoderSteps: DECODER_STEPS, guidance: 4, aspect: '1:1' as const, count: 4 };

let redis: Redis;
let blobs: BlobStore;

/** A host whose generate reports like worker/pipeline/generate.ts: conditioning 0→1, features 0…n/n, decoding 0…d+1/d+1. */
const host = {
  async generate(request: GenerateRequest, ctx: RunContext) {
    const tick = () => new Promise((r) => setTimeout(r, 2)); // lets batched siblings interleave their steps
    ctx.onProgress({ stage: 'conditioning', step: 0, total: 1 });
    await tick();
    ctx.onProgress({ stage: 'conditioning', step: 1, total: 1 });
    for (let step = 0; step < request.options.ditSteps; step++) {
      ctx.onProgress({ stage: 'features', step, total: request.options.ditSteps });
      await tick();
    }
    ctx.onProgress({ stage: 'features', step: request.options.ditSteps, total: request.options.ditSteps });
    for (let step = 0; step <= request.options.decoderSteps + 1; step++) {
      ctx.onProgress({ stage: 'decoding', step, total: request.options.decoderSteps + 1 });
      await tick();
    }
    return { png: PNG, width: 64, height: 64 };
  },
  async understand(): Promise<never> {
    throw new Error('not used');
  },
  async check() {
    return { caption: '', answers: {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 0, captionTokens: 0 } };
  },
};

/** Every progress report the processor wrote for a --n 4 job under `diffusion` (worker.maxBatch.diffusion). */
async function progressOf(diffusion: number): Promise<JobProgress[]> {
  const config = loadConfig({ env: {}, overrides: { queue: { prefix }, worker: { maxBatch: { decode: 1, diffusion } } } });
  const processor = createProcessor({ config, redis, blobs, host, log, progressWriteMs: () => 0 });
  const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  const request = { v: CONTRACT_VERSION, id, destination, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options } as JobRequest;
  const written: JobProgress[] = [];
  const job = { id, data: request, opts: {}, attemptsMade: 0, updateProgress: async (p: JobProgress) => void written.push(p) } as unknown as Job<JobRequest>;
  try {
    expect((await processor.process(job, 'token', new AbortController().signal)).status).toBe('succeeded');
  } finally {
    await processor.close();
  }
  return written;
}

/** The steps of one stage, in the order shown, and whether any report went back to a lower step. */
function stageSteps(written: JobProgress[], stage: JobProgress['stage']) {
  const reports = written.filter((p) => p.stage === stage);
  const wentBack = reports.some((p, i) => i > 0 && p.step < reports[i - 1]!.step);
  return { reports, wentBack, last: reports.at(-1)! };
}

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(loadConfig({ env: {}, overrides: { queue: { prefix } } }), redis);
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('progress of a several-image job', () => {
  it('one image after another: the drawing count runs once over the whole job, never back to step 1', async () => {
    const written = await progressOf(1);
    for (const p of written) expect(JobProgress.safeParse(p).success).toBe(true); // what a bot of any version parses
    const drawing = stageSteps(written, 'features');
    // Discord's status line for each report, in order: image 2 starts at step 3/12, where image 1 ended
    const steps = [0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12];
    expect(drawing.reports.map(discordLine)).toEqual(steps.map((s) => `⏳ Drawing: step ${s}/12`));
    expect(drawing.wentBack).toBe(false);
    // Slack, and the CLI bar (value/total, labelled with the stage)
    expect(discordLine(drawing.last)).toBe('⏳ Drawing: step 12/12');
    expect(slackLine(drawing.last)).toBe('Drawing 12/12');
    expect([drawing.last.step, drawing.last.total]).toEqual([4 * DIT_STEPS, 4 * DIT_STEPS]);
    const decoding = stageSteps(written, 'decoding');
    expect(decoding.wentBack).toBe(false);
    expect(discordLine(decoding.last)).toBe('⏳ Decoding pixels: step 12/12'); // 4 × (2 decoder steps + the VAE)
    const reading = stageSteps(written, 'conditioning');
    expect(reading.wentBack).toBe(false);
    expect(reading.reports.map(discordLine)).toEqual([
      '⏳ Reading the prompt: step 0/4', '⏳ Reading the prompt: step 1/4', // image 1
      '⏳ Reading the prompt: step 1/4', '⏳ Reading the prompt: step 2/4', // image 2: its prompt is the second of four
      '⏳ Reading the prompt: step 2/4', '⏳ Reading the prompt: step 3/4',
      '⏳ Reading the prompt: step 3/4', '⏳ Reading the prompt: step 4/4',
    ]);
  });

  it('all at once (worker.maxBatch.diffusion 4): the count is every image\'s steps together, never back', async () => {
    const written = await progressOf(4);
    for (const p of written) expect(JobProgress.safeParse(p).success).toBe(true);
    const drawing = stageSteps(written, 'features');
    expect(drawing.wentBack).toBe(false);
    expect(discordLine(drawing.last)).toBe('⏳ Drawing: step 12/12');
    expect(stageSteps(written, 'decoding').wentBack).toBe(false);
    expect(discordLine(stageSteps(written, 'decoding').last)).toBe('⏳ Decoding pixels: step 12/12');
  });

  it('one image: the counts are that image\'s, as before', async () => {
    const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
    const processor = createProcessor({ config, redis, blobs, host, log, progressWriteMs: () => 0 });
    const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
    const request = { v: CONTRACT_VERSION, id, destination, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options: { ...options, count: 1 } } as JobRequest;
    const written: JobProgress[] = [];
    const job = { id, data: request, opts: {}, attemptsMade: 0, updateProgress: async (p: JobProgress) => void written.push(p) } as unknown as Job<JobRequest>;
    try {
      await processor.process(job, 'token', new AbortController().signal);
    } finally {
      await processor.close();
    }
    expect(written.filter((p) => p.stage === 'features').map(discordLine)).toEqual(['⏳ Drawing: step 0/3', '⏳ Drawing: step 1/3', '⏳ Drawing: step 2/3', '⏳ Drawing: step 3/3']);
  });
});
