// Several images' DiT / UNet / VAE steps in one graph run (issue 18) on the tiny checkpoint: samples at different step
// indices, with their own conditioning and guidance, give bit-for-bit the outputs they give alone (CPU provider).
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { geometryFor } from '../../../../worker/pipeline/aspect.ts';
import {
  DitSample,
  ditBatchKey,
  runDitSteps,
  runUnetSteps,
  runVaeDecodes,
  UnetSample,
  unetBatchKey,
  vaeBatchKey,
  type Conditioning,
  type Latent,
  type UnetConditioning,
} from '../../../../worker/pipeline/diffusion-steps.ts';
import { openGenerationModels, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng } from '../../../../worker/pipeline/rng.ts';
import { eulerDiscreteSchedule, flowMatchSchedule } from '../../../../worker/pipeline/schedulers.ts';
import { buildTinyGenerationGraphs, TINY_HIDDEN, TINY_N_QUERY } from './generate-harness.ts';

let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
let m: GenerationModels;

beforeAll(async () => {
  graphs = buildTinyGenerationGraphs();
  m = await openGenerationModels(graphs, { executionProvider: 'cpu' });
});
afterAll(async () => {
  await Promise.all([m?.dit.release(), m?.unet.release(), m?.vae.release()]);
  rmSync(graphs.dir, { recursive: true, force: true });
});

const host = (data: Float32Array, dims: number[]): Conditioning => ({ host: data, dims });
function bitsEqual(a: Latent, b: Latent): boolean {
  if (!(a instanceof Float32Array && b instanceof Float32Array)) throw new Error('host latents expected on the CPU provider');
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function ditSample(seed: number, guidance: number, steps: number): DitSample {
  const C = m.latentChannels;
  const z = new GaussianRng(seed, 9).gaussian(2 * TINY_N_QUERY * TINY_HIDDEN);
  z.fill(0, 0, TINY_N_QUERY * TINY_HIDDEN);
  return new DitSample(new GaussianRng(seed, 1).gaussian(TINY_N_QUERY * C), [TINY_N_QUERY, C], flowMatchSchedule(steps), host(z, [TINY_N_QUERY, TINY_HIDDEN]), guidance);
}

function unetSample(seed: number, guidance: number, steps: number, aspect: '1:1' | '16:9' = '1:1'): UnetSample {
  const C = m.latentChannels;
  const geo = geometryFor(aspect, m.unetSampleSize, m.vaeScaleFactor, m.unetLatentMultiple);
  const rng = new GaussianRng(seed, 5);
  const cond: UnetConditioning = {
    encoderHiddenStates: host(rng.gaussian(2 * TINY_N_QUERY * C), [TINY_N_QUERY, C]),
    textEmbeds: host(rng.gaussian(2 * C), [C]),
    timeIds: host(Float32Array.from([...geo.sizeIds, ...geo.sizeIds]), [6]),
  };
  const schedule = eulerDiscreteSchedule(m.scheduler, steps);
  const dims = [m.unetInChannels, geo.latentHeight, geo.latentWidth] as const;
  const x = new GaussianRng(seed, 2).gaussian(dims[0] * dims[1] * dims[2]).map((v) => v * schedule.initNoiseSigma);
  return new UnetSample(x, dims, schedule, cond, guidance);
}

describe('batched diffusion steps (tiny checkpoint, CPU)', () => {
  it('DiT: samples at steps 0, 2 and 5 with their own guidance step together as they step alone', async () => {
    const samples = [ditSample(1, 3, 8), ditSample(2, 1.5, 8), ditSample(3, 7, 6)];
    // bring each to its own step, alone
    for (const [s, to] of [[samples[1]!, 2], [samples[2]!, 5]] as const) while (s.step < to) s.advance((await runDitSteps(m.dit, [s.next()]))[0]!);
    expect(samples.map((s) => s.step)).toEqual([0, 2, 5]);
    expect(new Set(samples.map((s) => ditBatchKey(s.next()))).size).toBe(1);
    const steps = samples.map((s) => s.next());
    expect(new Set(steps.map((s) => s.timestep)).size).toBe(3); // three different timesteps in one run
    const together = await runDitSteps(m.dit, steps);
    const alone = await Promise.all(steps.map(async (s) => (await runDitSteps(m.dit, [s]))[0]!));
    together.forEach((v, i) => expect(bitsEqual(v, alone[i]!)).toBe(true));
    // and a pair in the other order gives each the same bytes again
    const swapped = await runDitSteps(m.dit, [steps[2]!, steps[0]!]);
    expect(bitsEqual(swapped[0]!, alone[2]!) && bitsEqual(swapped[1]!, alone[0]!)).toBe(true);
  });

  it('DiT: a whole sampling run is the same bytes when samples join and leave a shared batch between steps', async () => {
    const solo = async (s: DitSample) => {
      while (!s.done) s.advance((await runDitSteps(m.dit, [s.next()]))[0]!);
      return s.x;
    };
    const want = [await solo(ditSample(4, 3, 6)), await solo(ditSample(5, 2, 4)), await solo(ditSample(6, 4.5, 5))];
    const live = [ditSample(4, 3, 6)];
    const waiting = [ditSample(5, 2, 4), ditSample(6, 4.5, 5)];
    const finished: DitSample[] = [];
    for (let round = 0; live.length || waiting.length; round++) {
      if (round === 1 || round === 3) live.push(waiting.shift()!); // joins at the first's step 1, then step 3
      const v = await runDitSteps(m.dit, live.map((s) => s.next()));
      live.forEach((s, i) => s.advance(v[i]!));
      for (const s of live.filter((s) => s.done)) finished.push(s);
      live.splice(0, live.length, ...live.filter((s) => !s.done));
    }
    const byGuidance = (g: number) => finished.find((s) => s.guidance === g)!.x;
    expect(bitsEqual(byGuidance(3), want[0]!)).toBe(true);
    expect(bitsEqual(byGuidance(2), want[1]!)).toBe(true);
    expect(bitsEqual(byGuidance(4.5), want[2]!)).toBe(true);
  });

  it('UNet: samples at different steps and guidance step together as alone; other aspect ratios get another batch key', async () => {
    const samples = [unetSample(1, 3, 10), unetSample(2, 6, 10), unetSample(3, 1, 5)];
    for (const [s, to] of [[samples[0]!, 3], [samples[2]!, 4]] as const) while (s.step < to) s.advance((await runUnetSteps(m.unet, [s.next()]))[0]!);
    const steps = samples.map((s) => s.next());
    expect(new Set(steps.map((s) => s.timestep)).size).toBe(3);
    const together = await runUnetSteps(m.unet, steps);
    const alone = await Promise.all(steps.map(async (s) => (await runUnetSteps(m.unet, [s]))[0]!));
    together.forEach((e, i) => expect(bitsEqual(e, alone[i]!)).toBe(true));
    expect(unetBatchKey(steps[0]!)).toBe(unetBatchKey(steps[2]!));
    expect(unetBatchKey(unetSample(4, 3, 5, '16:9').next())).not.toBe(unetBatchKey(steps[0]!));
  });

  it('VAE: three latents decoded in one run give the bytes each gives alone', async () => {
    const dims = [m.unetInChannels, 16, 16] as const;
    const decodes = [1, 2, 3].map((seed) => ({ latents: new GaussianRng(seed, 7).gaussian(dims[0] * dims[1] * dims[2]), dims }));
    expect(new Set(decodes.map(vaeBatchKey)).size).toBe(1);
    const together = await runVaeDecodes(m.vae, decodes);
    for (const [i, d] of decodes.entries()) expect(bitsEqual(together[i]!, (await runVaeDecodes(m.vae, [d]))[0]!)).toBe(true);
  });
});
