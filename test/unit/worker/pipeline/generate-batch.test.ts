// Concurrent imagines stepping together (issue 18, worker.maxBatch.diffusion) on the tiny checkpoint: requests that
// start at different moments share DiT/UNet runs and VAE decodes, and each still gets the PNG bytes it gets alone;
// cancelling one, or one whose input breaks the model, leaves the others untouched. The LLM half is the deterministic
// double of generate-harness.ts (the real one is covered by generate-pipeline.test.ts).
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImagineOptions } from '../../../../src/jobs/contract.ts';
import { AppError } from '../../../../src/errors.ts';
import { batchedStepper, soloStepper } from '../../../../worker/pipeline/diffusion-steps.ts';
import { Generator, openGenerationModels, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import type { GenerateRequest, ProgressReport, RunContext } from '../../../../worker/pipeline/types.ts';
import type { ModelSession } from '../../../../worker/runtime/session.ts';
import { buildTinyGenerationGraphs, fakeConditioner, TINY_HIDDEN, TINY_N_QUERY } from './generate-harness.ts';

const settings = { negativeDitSteps: 4, negativeGuidance: 3, software: 'test' };
let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
let models: GenerationModels;
let solo: Generator;
const llm = fakeConditioner();

beforeAll(async () => {
  graphs = buildTinyGenerationGraphs();
  models = await openGenerationModels(graphs, { executionProvider: 'cpu' });
  solo = new Generator(models, llm, settings, undefined, soloStepper(models));
});
afterAll(async () => {
  await solo?.close();
  rmSync(graphs.dir, { recursive: true, force: true });
});

const requests: GenerateRequest[] = [
  { prompt: 'a red fox', options: { seed: 1, ditSteps: 8, decoderSteps: 10, guidance: 3, aspect: '1:1' } },
  { prompt: 'a blue whale', options: { seed: 2, ditSteps: 6, decoderSteps: 12, guidance: 5, aspect: '1:1', negative: 'blurry' } },
  { prompt: 'a green tree', options: { seed: 3, ditSteps: 7, decoderSteps: 9, guidance: 1.5, aspect: '1:1' } },
];

interface Job {
  png: Promise<Uint8Array>;
  progress: ProgressReport[];
  abort: AbortController;
}

/** Starts one request on `gen`; `at` runs on each of its progress reports (to start or cancel others from there). */
function start(gen: Generator, req: GenerateRequest, at: (p: ProgressReport) => void = () => {}): Job {
  const progress: ProgressReport[] = [];
  const abort = new AbortController();
  const ctx: RunContext = {
    signal: abort.signal,
    onProgress: (p) => {
      progress.push(p);
      at(p);
    },
  };
  return { png: gen.generate(req, ctx).then((r) => r.png), progress, abort };
}

const alone = async (req: GenerateRequest) => (await solo.generate(req, { signal: new AbortController().signal, onProgress: () => {} })).png;
const bytes = (a: Uint8Array) => Buffer.from(a);
/** Settled results of three jobs: each finished with exactly `want`'s bytes, or failed with `error`'s fields. */
const isPng = (r: PromiseSettledResult<Uint8Array> | undefined, want: Uint8Array) => r?.status === 'fulfilled' && bytes(r.value).equals(bytes(want));
const failure = (r: PromiseSettledResult<Uint8Array> | undefined): unknown => (r?.status === 'rejected' ? r.reason : undefined);

function batched(wrap: (m: GenerationModels) => GenerationModels = (m) => m): { gen: Generator; stepper: ReturnType<typeof batchedStepper> } {
  const stepper = batchedStepper(wrap(models), 4);
  return { gen: new Generator(models, llm, settings, undefined, stepper), stepper };
}

/** Per job: stages in order, steps counting up within a stage, ending at decoding total/total. */
function expectOwnProgress(progress: ProgressReport[]): void {
  const stages = progress.map((p) => p.stage).filter((s, i, a) => s !== a[i - 1]);
  expect(stages).toEqual(['conditioning', 'features', 'decoding']);
  for (let i = 1; i < progress.length; i++) if (progress[i]!.stage === progress[i - 1]!.stage) expect(progress[i]!.step).toBeGreaterThanOrEqual(progress[i - 1]!.step);
  const last = progress.at(-1)!;
  expect(last.stage === 'decoding' && last.step === last.total).toBe(true);
}

describe('concurrent imagines through the step batcher (tiny checkpoint, CPU)', () => {
  it('3 imagines joined at different moments step together and give the PNG bytes each gives alone', async () => {
    const want = await Promise.all(requests.map(alone));
    const { gen, stepper } = batched();
    const jobs: Job[] = [];
    // B joins at A's 3rd prompt-feature step, C at A's 4th UNet step
    jobs[0] = start(gen, requests[0]!, (p) => {
      if (p.stage === 'features' && p.step === 6 && !jobs[1]) jobs[1] = start(gen, requests[1]!);
      if (p.stage === 'decoding' && p.step === 3 && !jobs[2]) jobs[2] = start(gen, requests[2]!);
    });
    const first = await jobs[0].png;
    expect(jobs).toHaveLength(3);
    const got = [first, await jobs[1]!.png, await jobs[2]!.png];
    got.forEach((png, i) => expect(bytes(png).equals(bytes(want[i]!))).toBe(true));
    for (const j of jobs) expectOwnProgress(j.progress);
    // they really shared runs: at least one DiT and one UNet call carried two or more samples
    expect(stepper.stats.dit.largest).toBeGreaterThanOrEqual(2);
    expect(stepper.stats.unet.largest).toBeGreaterThanOrEqual(2);
    expect(stepper.stats.unet.calls).toBeLessThan(stepper.stats.unet.steps);
  });

  it('several images of one job (--n: seeds s, s+1, …) batched together are the images each seed gives alone', async () => {
    const base: ImagineOptions = { seed: 40, ditSteps: 5, decoderSteps: 6, guidance: 3, aspect: '1:1' };
    const seeds = [40, 41, 42, 43];
    const want = await Promise.all(seeds.map((seed) => alone({ prompt: 'a fox', options: { ...base, seed } })));
    const { gen, stepper } = batched();
    const got = await Promise.all(seeds.map((seed) => start(gen, { prompt: 'a fox', options: { ...base, seed } }).png));
    got.forEach((png, i) => expect(bytes(png).equals(bytes(want[i]!))).toBe(true));
    expect(stepper.stats.vae.largest).toBe(4); // the four VAE decodes in one run
    expect(stepper.stats.unet.largest).toBe(4);
    // started together, they never split: the " " negative's DiT steps run alone (the others wait for that feature),
    // then every prompt-feature and UNet step carries all four samples, and the four VAE decodes are one run
    expect(stepper.stats.dit).toEqual({ calls: settings.negativeDitSteps + base.ditSteps, steps: settings.negativeDitSteps + 4 * base.ditSteps, largest: 4 });
    expect(stepper.stats.unet).toEqual({ calls: base.decoderSteps, steps: 4 * base.decoderSteps, largest: 4 });
    expect(stepper.stats.vae).toEqual({ calls: 1, steps: 4, largest: 4 });
  });

  it('cancelling one job of a batch removes only it; the others finish with their solo bytes', async () => {
    const want = await Promise.all(requests.map(alone));
    const { gen } = batched();
    // B is cancelled at its 3rd UNet step (its companions are mid-UNet too)
    const jobs: Job[] = requests.map((r, i) =>
      start(gen, r, (p) => {
        if (i === 1 && p.stage === 'decoding' && p.step === 2) jobs[1]!.abort.abort();
      }),
    );
    const [a, b, c] = await Promise.allSettled(jobs.map((j) => j.png));
    expect(failure(b)).toMatchObject({ code: 'cancelled' });
    expect(isPng(a, want[0]!)).toBe(true);
    expect(isPng(c, want[2]!)).toBe(true);
    expect(jobs[1]!.progress.filter((p) => p.stage === 'decoding').at(-1)!.step).toBeLessThan(4); // it stopped stepping
  });

  it('cancelling the job that computes a shared new negative does not fail the job waiting for it', async () => {
    const req = (seed: number): GenerateRequest => ({ prompt: 'a cat', options: { seed, ditSteps: 4, decoderSteps: 4, guidance: 3, aspect: '1:1', negative: `dogs ${Date.now()}` } });
    const [r1, r2] = [req(5), req(6)];
    const want = await alone(r2);
    const { gen } = batched();
    const first = start(gen, r1, (p) => {
      if (p.stage === 'features' && p.step === 1) first.abort.abort(); // inside the negative's DiT steps
    });
    const second = start(gen, r2);
    await expect(first.png).rejects.toMatchObject({ code: 'cancelled' });
    expect(bytes(await second.png).equals(bytes(want))).toBe(true);
  });

  it('a request whose input breaks the DiT fails alone; its batch companions get their solo bytes', async () => {
    const want = await Promise.all([requests[0]!, requests[2]!].map(alone));
    // the model fails on a NaN condition (a stand-in for any input that makes one request's graph run throw)
    const poisonable = (dit: ModelSession): ModelSession =>
      Object.assign(Object.create(dit) as ModelSession, {
        run: async (inputs: Parameters<ModelSession['run']>[0], outputs?: readonly string[]) => {
          const z = inputs.z as { data?: Float32Array; tensor?: { data: Float32Array } };
          if ((z.data ?? (z.tensor!.data as Float32Array)).some(Number.isNaN)) throw new AppError('model', 'DiT produced a non-finite velocity');
          return dit.run(inputs, outputs);
        },
      });
    const { gen, stepper } = batched((m) => ({ ...m, dit: poisonable(m.dit) }));
    const poisoned = new Generator(models, { ...llm, latentHiddenStates: async () => new Float32Array(TINY_N_QUERY * TINY_HIDDEN).fill(NaN) }, settings, undefined, stepper);
    const jobs = [start(gen, requests[0]!), start(poisoned, { prompt: 'poison', options: requests[0]!.options }), start(gen, requests[2]!)];
    const [a, p, c] = await Promise.allSettled(jobs.map((j) => j.png));
    expect(failure(p)).toMatchObject({ code: 'model', message: 'DiT produced a non-finite velocity' });
    expect(isPng(a, want[0]!)).toBe(true);
    expect(isPng(c, want[1]!)).toBe(true);
    expect(stepper.stats.dit.largest).toBeGreaterThanOrEqual(2); // the poisoned one was in a shared call before it failed alone
  });
});

