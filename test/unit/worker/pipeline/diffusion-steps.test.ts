// Several images' DiT / UNet / VAE steps in one graph run (issue 18) on the tiny checkpoint: samples at different step
// indices, with their own conditioning and guidance, give bit-for-bit the outputs they give alone (CPU provider).
import { rmSync } from 'node:fs';
import type * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../../../src/errors.ts';
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
  freeLatent,
  type Conditioning,
  type DitStep,
  type Latent,
  type UnetConditioning,
  type UnetStep,
} from '../../../../worker/pipeline/diffusion-steps.ts';
import { openGenerationModels, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng } from '../../../../worker/pipeline/rng.ts';
import type { SchedulerGraphs } from '../../../../worker/pipeline/scheduler-graphs.ts';
import { eulerDiscreteSchedule, flowMatchSchedule } from '../../../../worker/pipeline/schedulers.ts';
import { DeviceTensor, toDevice, type ModelSession } from '../../../../worker/runtime/session.ts';
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

describe('batch keys: steps batch together exactly when their shapes match', () => {
  // Only the fields the keys read; the "x" between sizes keeps 12×3 and 1×23 apart.
  const dit = (dims: [number, number], z: number[]) => ditBatchKey({ dims, z: { dims: z } } as unknown as DitStep);
  const unet = (dims: [number, number, number], tokens: number[]) =>
    unetBatchKey({ dims, cond: { encoderHiddenStates: { dims: tokens } } } as unknown as UnetStep);
  const vae = (dims: [number, number, number]) => vaeBatchKey({ latents: new Float32Array(0), dims });

  it('DiT: same latent and condition shapes share a key; another latent or condition shape does not', () => {
    expect(dit([64, 32], [64, 16])).toBe(dit([64, 32], [64, 16]));
    expect(dit([12, 3], [64, 16])).not.toBe(dit([1, 23], [64, 16]));
    expect(dit([64, 32], [12, 3])).not.toBe(dit([64, 32], [1, 23]));
  });

  it('UNet: another latent shape or number of condition tokens gets another key', () => {
    expect(unet([4, 16, 16], [64, 8])).toBe(unet([4, 16, 16], [64, 8]));
    expect(unet([4, 12, 3], [64, 8])).not.toBe(unet([4, 1, 23], [64, 8]));
    expect(unet([4, 16, 16], [12, 3])).not.toBe(unet([4, 16, 16], [1, 23]));
  });

  it('VAE: another latent shape gets another key', () => {
    expect(vae([4, 16, 16])).toBe(vae([4, 16, 16]));
    expect(vae([4, 12, 3])).not.toBe(vae([4, 1, 23]));
  });
});

describe('batched steps: conditioning, empty batches and the internal shape checks (tiny checkpoint, CPU)', () => {
  it("batched samples whose conditioning also has a device copy each get their solo bytes (the rows are every sample's, not the first's)", async () => {
    const withCopy = async (s: DitSample): Promise<DitSample> =>
      new DitSample(s.x, s.dims, s.schedule, { ...s.z, device: await toDevice({ data: s.z.host, dims: [2, ...s.z.dims] }, 'cpu') }, s.guidance);
    const samples = await Promise.all([ditSample(7, 3, 4), ditSample(8, 5, 4)].map(withCopy));
    const steps = samples.map((s) => s.next());
    const alone = await Promise.all(steps.map(async (s) => (await runDitSteps(m.dit, [s]))[0]!)); // the device copy
    const together = await runDitSteps(m.dit, steps); // the host rows, stacked
    together.forEach((v, i) => expect(bitsEqual(v, alone[i]!)).toBe(true));
    expect(bitsEqual(alone[0]!, alone[1]!)).toBe(false);
  });

  it('an empty batch runs nothing and gives no results', async () => {
    const never = { run: vi.fn(), runOnDevice: vi.fn() } as unknown as ModelSession;
    expect(await runDitSteps(never, [])).toEqual([]);
    expect(await runUnetSteps(never, [])).toEqual([]);
    expect(await runVaeDecodes(never, [])).toEqual([]);
    expect(never.run).not.toHaveBeenCalled();
  });

  async function internal(p: Promise<unknown>, message: RegExp): Promise<void> {
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).code).toBe('internal');
    expect((e as AppError).message).toMatch(message);
  }

  it('refuses to batch conditioning or latents of different sizes (the batch keys keep them apart; this catches a key that does not)', async () => {
    const [a, b] = [ditSample(1, 3, 4).next(), ditSample(2, 3, 4).next()];
    const shortZ = { ...b, z: { ...b.z, host: b.z.host.subarray(1) } };
    await internal(runDitSteps(m.dit, [a, shortZ]), /batched conditioning of \d+ values next to \d+/);
    const shortX = { ...b, x: (b.x as Float32Array).subarray(1) };
    await internal(runDitSteps(m.dit, [a, shortX]), /batched latent of \d+ values next to \d+/);
    const dims = [m.unetInChannels, 4, 4] as const;
    const n = dims[0] * dims[1] * dims[2];
    await internal(
      runVaeDecodes(m.vae, [
        { latents: new Float32Array(n), dims },
        { latents: new Float32Array(n - 1), dims },
      ]),
      new RegExp(`batched VAE latent of ${n - 1} values next to ${n}`),
    );
  });

  it('says which output a graph lacks: a VAE without `image`', async () => {
    const noImage = { run: async () => ({}) } as unknown as ModelSession;
    const dims = [m.unetInChannels, 4, 4] as const;
    const e = await runVaeDecodes(noImage, [{ latents: new Float32Array(dims[0] * dims[1] * dims[2]), dims }]).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).code).toBe('model');
    expect((e as AppError).message).toMatch(/the VAE graph has no `image` output/);
  });
});

// The device-latent path's bookkeeping, with GPU buffers played by tensors whose dispose() is counted: what each step
// frees decides whether a long-running worker leaks GPU memory.
describe('device latents: what a step frees and the errors of a wrong set-up', () => {
  const gpuTensor = (dims: number[]) => {
    const tensor = { dims, type: 'float32', dispose: vi.fn() } as unknown as ort.Tensor;
    return { latent: new DeviceTensor(tensor, true), freed: () => (tensor.dispose as ReturnType<typeof vi.fn>).mock.calls.length };
  };
  function deviceStep(): DitStep {
    const s = ditSample(3, 2, 4).next();
    return { ...s, x: gpuTensor([1, ...s.dims]).latent };
  }

  it('frees the CFG pair input and the model output after the guided update, and keeps the samples’ own latents', async () => {
    const input = gpuTensor([2, 1]);
    const output = gpuTensor([2, 1]);
    const next = gpuTensor([1, 1]);
    const graphs = {
      cfgPair: vi.fn(async () => input.latent),
      guidedStep: vi.fn(async () => [next.latent]),
    } as unknown as SchedulerGraphs;
    const session = { runOnDevice: vi.fn(async () => ({ host: {}, device: { velocity: output.latent } })) } as unknown as ModelSession;
    const step = deviceStep();
    const [got] = await runDitSteps(session, [step], graphs);
    expect(got).toBe(next.latent);
    expect([input.freed(), output.freed(), next.freed()]).toEqual([1, 1, 0]);
    expect((step.x as DeviceTensor).dims).toEqual([1, ...step.dims]);
    expect(graphs.guidedStep).toHaveBeenCalledWith('uncond-first', output.latent, [step.x], [step.guidance], [step.dt], step.dims);
  });

  it('a session that does not keep the output on the device: an internal error naming it, and the input still freed', async () => {
    const input = gpuTensor([2, 1]);
    const graphs = { cfgPair: async () => input.latent, guidedStep: vi.fn() } as unknown as SchedulerGraphs;
    const session = { runOnDevice: async () => ({ host: {}, device: {} }) } as unknown as ModelSession;
    const e = await runDitSteps(session, [deviceStep()], graphs).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).message).toMatch(/does not keep `velocity` on the device/);
    expect(input.freed()).toBe(1);
  });

  it('device latents without scheduler graphs, or mixed with host latents in one batch: internal errors that say so', async () => {
    const e1 = await runDitSteps(m.dit, [deviceStep()]).catch((err: unknown) => err);
    expect((e1 as AppError).message).toMatch(/device latents need the scheduler graphs/);
    const e2 = await runDitSteps(m.dit, [deviceStep(), ditSample(4, 2, 4).next()]).catch((err: unknown) => err);
    expect((e2 as AppError).message).toMatch(/a diffusion batch mixes host and device latents/);
  });

  it('a sample frees the latent it leaves behind, never the one it takes (a step that returns its input in place)', () => {
    const first = gpuTensor([1, 1]);
    const second = gpuTensor([1, 1]);
    const s = new DitSample(first.latent, [1, 1], flowMatchSchedule(3), host(new Float32Array(2), [1, 1]), 1);
    s.advance(first.latent); // in place: still in use
    expect(first.freed()).toBe(0);
    s.advance(second.latent);
    expect([first.freed(), second.freed(), s.step]).toEqual([1, 0, 2]);
    freeLatent(second.latent);
    expect(second.freed()).toBe(1);
  });
});
