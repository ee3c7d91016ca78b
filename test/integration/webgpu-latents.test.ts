// Latents that stay in GPU memory between diffusion steps, on onnxruntime's WebGPU provider (lavapipe without a GPU;
// see test/doubles/webgpu-gate.ts): the tiny DiT and UNet step with the scheduler graphs of
// worker/pipeline/scheduler-graphs.ts, the latent is a GPU buffer after every step, the bytes that cross the binding
// per step (counted by the session wrapper, ModelSession.transfers / transferTotals) are the per-step scalars only,
// and the result is the TypeScript loop's on the same provider within 1e-5 relative and the CPU provider's within 1e-3.
// The numbers it logs are docs/gpu.md's bytes-per-step rows for the tiny checkpoint.
import { rmSync } from 'node:fs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { geometryFor } from '../../worker/pipeline/aspect.ts';
import { DitSample, runDitSteps, runUnetSteps, UnetSample, type Latent } from '../../worker/pipeline/diffusion-steps.ts';
import { Generator, openGenerationModels, type GenerationModels } from '../../worker/pipeline/generate.ts';
import { GaussianRng } from '../../worker/pipeline/rng.ts';
import { eulerDiscreteSchedule, flowMatchSchedule } from '../../worker/pipeline/schedulers.ts';
import { DeviceTensor, toDevice, toHost, transferTotals } from '../../worker/runtime/session.ts';
import { webgpuUnavailable } from '../doubles/webgpu-gate.ts';
import { maxAbsDiff, relError } from '../reference/ops.ts';
import { buildTinyGenerationGraphs, fakeConditioner, TINY_HIDDEN, TINY_N_QUERY } from '../unit/worker/pipeline/generate-harness.ts';

const unavailable = await webgpuUnavailable();

const read = async (l: Latent) => (l instanceof Float32Array ? l : ((await toHost(l)).data as Float32Array));

describe.skipIf(unavailable !== undefined)(`latents between diffusion steps on WebGPU${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
  let cpu: GenerationModels;
  /** WebGPU with the TypeScript update (latentsOnDevice off): what every step cost before the scheduler graphs. */
  let hostLoop: GenerationModels;
  /** WebGPU as the worker opens it: latents on the device. */
  let gpu: GenerationModels;
  beforeAll(async () => {
    graphs = buildTinyGenerationGraphs();
    cpu = await openGenerationModels(graphs, { executionProvider: 'cpu' });
    hostLoop = await openGenerationModels(graphs, { executionProvider: 'webgpu' }, { latentsOnDevice: false });
    gpu = await openGenerationModels(graphs, { executionProvider: 'webgpu' });
  }, 300_000);
  afterAll(async () => {
    for (const m of [cpu, hostLoop, gpu]) await Promise.all([m?.dit.release(), m?.unet.release(), m?.vae.release(), m?.schedulerGraphs?.release()]);
    if (graphs) rmSync(graphs.dir, { recursive: true, force: true });
  });

  /** Runs `steps` steps of a sample on `m`; returns the final latent on the host and the bytes per step. */
  async function sampleLoop<S extends { done: boolean; x: Latent; advance(l: Latent): void }>(
    m: GenerationModels,
    sample: S,
    step: (s: S) => Promise<Latent>,
    steps: number,
  ): Promise<{ x: Float32Array; up: number; down: number }> {
    const t0 = transferTotals(); // after the first latent and the conditioning went up
    while (!sample.done) {
      sample.advance(await step(sample));
      if (m.schedulerGraphs) expect(sample.x instanceof DeviceTensor && sample.x.onDevice, 'the latent is a GPU buffer between steps').toBe(true);
    }
    const t1 = transferTotals();
    const x = await read(sample.x);
    if (sample.x instanceof DeviceTensor) sample.x.dispose();
    return { x, up: (t1.toDevice - t0.toDevice) / steps, down: (t1.toHost - t0.toHost) / steps };
  }

  it('DiT: the latent stays a GPU buffer, each step moves only its scalars, and the result matches', async () => {
    const steps = 4;
    const C = cpu.latentChannels;
    const run = async (m: GenerationModels) => {
      const zz = new GaussianRng(3, 9).gaussian(2 * TINY_N_QUERY * TINY_HIDDEN).fill(0, 0, TINY_N_QUERY * TINY_HIDDEN);
      const z = { host: zz, device: await toDevice({ data: zz, dims: [2, TINY_N_QUERY, TINY_HIDDEN] }, m.dit.provider), dims: [TINY_N_QUERY, TINY_HIDDEN] };
      const x0 = new GaussianRng(3, 1).gaussian(TINY_N_QUERY * C);
      const x = m.schedulerGraphs ? await toDevice({ data: x0, dims: [1, TINY_N_QUERY, C] }, m.dit.provider) : x0;
      const sample = new DitSample(x, [TINY_N_QUERY, C], flowMatchSchedule(steps), z, 3);
      try {
        return await sampleLoop(m, sample, async (s) => (await runDitSteps(m.dit, [s.next()], m.schedulerGraphs))[0]!, steps);
      } finally {
        z.device.dispose();
      }
    };
    const [want, before, after] = [await run(cpu), await run(hostLoop), await run(gpu)];
    console.log(
      `DiT step (tiny: ${TINY_N_QUERY} tokens × ${C}, CFG batch 2), host↔device bytes: TypeScript update ${before.up} up + ${before.down} down; ` +
        `scheduler graphs ${after.up} up + ${after.down} down; vs TypeScript loop ${relError(after.x, before.x).toExponential(1)}, vs CPU ${relError(after.x, want.x).toExponential(1)} relative`,
    );
    expect(before.up).toBeGreaterThanOrEqual(2 * TINY_N_QUERY * C * 4); // the latent pair went up every step …
    expect(before.down).toBeGreaterThanOrEqual(2 * TINY_N_QUERY * C * 4); // … and the velocity pair came down
    expect(after.up).toBeLessThanOrEqual(4 * 2 + 4 * 3); // timestep [2], scale, guidance, dt: 4 B each
    expect(after.down).toBe(0);
    expect(relError(after.x, before.x)).toBeLessThan(1e-5);
    expect(relError(after.x, want.x)).toBeLessThan(1e-3);
  }, 600_000);

  it('UNet: the latent stays a GPU buffer, each step moves only its scalars, and the result matches', async () => {
    const steps = 4;
    const run = async (m: GenerationModels) => {
      const C = m.latentChannels;
      const geo = geometryFor('1:1', m.unetSampleSize, m.vaeScaleFactor, m.unetLatentMultiple);
      const rng = new GaussianRng(5, 5);
      const up = async (host: Float32Array, dims: number[]) => ({ host, device: await toDevice({ data: host, dims: [2, ...dims] }, m.unet.provider), dims });
      const cond = {
        encoderHiddenStates: await up(rng.gaussian(2 * TINY_N_QUERY * C), [TINY_N_QUERY, C]),
        textEmbeds: await up(rng.gaussian(2 * C), [C]),
        timeIds: await up(Float32Array.from([...geo.sizeIds, ...geo.sizeIds]), [6]),
      };
      const schedule = eulerDiscreteSchedule(m.scheduler, steps);
      const dims = [m.unetInChannels, geo.latentHeight, geo.latentWidth] as const;
      const x0 = new GaussianRng(5, 2).gaussian(dims[0] * dims[1] * dims[2]).map((v) => v * schedule.initNoiseSigma);
      const x = m.schedulerGraphs ? await toDevice({ data: x0, dims: [1, ...dims] }, m.unet.provider) : x0;
      try {
        const r = await sampleLoop(m, new UnetSample(x, dims, schedule, cond, 3), async (s) => (await runUnetSteps(m.unet, [s.next()], m.schedulerGraphs))[0]!, steps);
        return { ...r, n: x0.length };
      } finally {
        for (const c of Object.values(cond)) c.device.dispose();
      }
    };
    const [want, before, after] = [await run(cpu), await run(hostLoop), await run(gpu)];
    console.log(
      `UNet step (tiny: latent ${before.n} values, CFG batch 2), host↔device bytes: TypeScript update ${before.up} up + ${before.down} down; ` +
        `scheduler graphs ${after.up} up + ${after.down} down; vs TypeScript loop ${relError(after.x, before.x).toExponential(1)}, vs CPU ${relError(after.x, want.x).toExponential(1)} relative`,
    );
    expect(before.up).toBeGreaterThanOrEqual(2 * before.n * 4);
    expect(before.down).toBeGreaterThanOrEqual(2 * before.n * 4);
    expect(after.up).toBeLessThanOrEqual(4 * 2 + 4 * 3);
    expect(after.down).toBe(0);
    expect(relError(after.x, before.x)).toBeLessThan(1e-5);
    expect(relError(after.x, want.x)).toBeLessThan(1e-3);
  }, 600_000);

  it('imagine with device latents gives the CPU provider\'s image within 1 level per channel', async () => {
    const settings = { negativeDitSteps: 2, negativeGuidance: 3, software: 'test' };
    const req = { prompt: 'a red fox', options: { seed: 7, ditSteps: 2, decoderSteps: 3, guidance: 3, aspect: '1:1' as const } };
    const ctx = () => ({ signal: new AbortController().signal, onProgress: () => {} });
    const [a, b] = [await new Generator(cpu, fakeConditioner(), settings).generate(req, ctx()), await new Generator(gpu, fakeConditioner(), settings).generate(req, ctx())];
    const [pa, pb] = await Promise.all([sharp(a.png).raw().toBuffer(), sharp(b.png).raw().toBuffer()]);
    expect(maxAbsDiff(pa, pb)).toBeLessThanOrEqual(1); // 8-bit levels; throws on a size mismatch
  }, 600_000);
});
