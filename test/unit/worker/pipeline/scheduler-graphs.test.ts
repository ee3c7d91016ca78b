// The CFG combine + scheduler update as graphs (worker/pipeline/scheduler-graphs.ts), run here on the CPU provider
// where the tests can read every tensor: they give the TypeScript loop's latents within 1e-5 relative, step by step,
// over whole sampling runs and end to end, and batched device steps give each sample the bytes it gets alone. The
// same code path keeps the latents in GPU memory under WebGPU (test/integration/webgpu-latents.test.ts).
import { rmSync } from 'node:fs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { geometryFor } from '../../../../worker/pipeline/aspect.ts';
import { DitSample, runDitSteps, runUnetSteps, runVaeDecodes, UnetSample, type Conditioning, type Latent } from '../../../../worker/pipeline/diffusion-steps.ts';
import { Generator, openGenerationModels, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng } from '../../../../worker/pipeline/rng.ts';
import { SchedulerGraphs } from '../../../../worker/pipeline/scheduler-graphs.ts';
import { eulerDiscreteSchedule, eulerUpdate, flowMatchSchedule, flowMatchUpdate } from '../../../../worker/pipeline/schedulers.ts';
import { DeviceTensor, toDevice, toHost } from '../../../../worker/runtime/session.ts';
import { relError } from '../../../reference/ops.ts';
import { buildTinyGenerationGraphs, fakeConditioner, TINY_HIDDEN, TINY_N_QUERY } from './generate-harness.ts';

let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
let hostModels: GenerationModels;
let deviceModels: GenerationModels;

beforeAll(async () => {
  graphs = buildTinyGenerationGraphs();
  hostModels = await openGenerationModels(graphs, { executionProvider: 'cpu' });
  deviceModels = await openGenerationModels(graphs, { executionProvider: 'cpu' }, { latentsOnDevice: true });
});
afterAll(async () => {
  for (const m of [hostModels, deviceModels]) await Promise.all([m?.dit.release(), m?.unet.release(), m?.vae.release(), m?.schedulerGraphs?.release()]);
  rmSync(graphs.dir, { recursive: true, force: true });
});

async function read(l: Latent): Promise<Float32Array> {
  return l instanceof Float32Array ? l : ((await toHost(l)).data as Float32Array);
}
const device = (data: Float32Array, dims: number[]) => toDevice({ data, dims }, 'cpu');

describe('the scheduler graphs against schedulers.ts (CPU provider)', () => {
  const graphsCpu = new SchedulerGraphs('cpu');
  afterAll(() => graphsCpu.release());
  const dims = [3, 5];
  const n = 15;

  it('cfgPair writes each sample twice, scaled: [x₀·s₀, x₀·s₀, x₁·s₁, x₁·s₁]', async () => {
    const xs = [1, 2].map((seed) => new GaussianRng(seed, 3).gaussian(n));
    const pair = await graphsCpu.cfgPair(await Promise.all(xs.map((x) => device(x, [1, ...dims]))), [0.5, 0.25], dims);
    expect(pair.dims).toEqual([4, ...dims]);
    const got = await read(pair);
    const want = new Float32Array(4 * n);
    xs.forEach((x, i) => {
      const scaled = x.map((v) => v * [0.5, 0.25][i]!);
      want.set(scaled, 2 * i * n);
      want.set(scaled, (2 * i + 1) * n);
    });
    expect(Array.from(got)).toEqual(Array.from(want)); // scaling by a power of two is exact
  });

  for (const order of ['uncond-first', 'cond-first'] as const) {
    it(`guidedStep (${order}) is x + dt·(lo + g·(hi − lo)) of the TypeScript update within 1e-6, per sample of a batch of 3`, async () => {
      const rng = new GaussianRng(11, 4);
      const xs = [0, 1, 2].map(() => rng.gaussian(n));
      const out = rng.gaussian(6 * n);
      const guidance = [3, 1.5, 7];
      const dt = [-1 / 30, -0.02109375, -0.3];
      const next = await graphsCpu.guidedStep(order, await device(out, [6, ...dims]), await Promise.all(xs.map((x) => device(x, [1, ...dims]))), guidance, dt, dims);
      expect(next.map((t) => t.dims)).toEqual([0, 1, 2].map(() => [1, ...dims]));
      for (let i = 0; i < 3; i++) {
        const [lo, hi] = order === 'uncond-first' ? [2 * i, 2 * i + 1] : [2 * i + 1, 2 * i];
        const guided = new Float32Array(n);
        for (let k = 0; k < n; k++) guided[k] = out[lo * n + k]! + guidance[i]! * (out[hi * n + k]! - out[lo * n + k]!);
        const want = Float32Array.from(xs[i]!);
        (order === 'uncond-first' ? flowMatchUpdate : eulerUpdate)(want, guided, dt[i]!);
        expect(relError(await read(next[i]!), want)).toBeLessThan(1e-6);
      }
    });
  }
});

describe('device latents on the tiny checkpoint (CPU provider, scheduler graphs forced on)', () => {
  it('opens the scheduler graphs only when asked (the CPU default is the TypeScript loop)', () => {
    expect(hostModels.schedulerGraphs).toBeUndefined();
    expect(deviceModels.schedulerGraphs?.provider).toBe('cpu');
  });

  const z = (seed: number): Conditioning => {
    const data = new GaussianRng(seed, 9).gaussian(2 * TINY_N_QUERY * TINY_HIDDEN);
    data.fill(0, 0, TINY_N_QUERY * TINY_HIDDEN);
    return { host: data, dims: [TINY_N_QUERY, TINY_HIDDEN] };
  };
  async function ditRun(m: GenerationModels, onDevice: boolean, seed: number, guidance: number, steps: number): Promise<DitSample> {
    const C = m.latentChannels;
    const x0 = new GaussianRng(seed, 1).gaussian(TINY_N_QUERY * C);
    const x = onDevice ? await device(x0, [1, TINY_N_QUERY, C]) : x0;
    return new DitSample(x, [TINY_N_QUERY, C], flowMatchSchedule(steps), z(seed), guidance);
  }

  it('DiT: 8 flow-matching steps keep the latent a DeviceTensor and end within 1e-5 of the TypeScript loop', async () => {
    const [a, b] = [await ditRun(hostModels, false, 3, 3, 8), await ditRun(deviceModels, true, 3, 3, 8)];
    while (!a.done) a.advance((await runDitSteps(hostModels.dit, [a.next()]))[0]!);
    while (!b.done) {
      b.advance((await runDitSteps(deviceModels.dit, [b.next()], deviceModels.schedulerGraphs))[0]!);
      expect(b.x).toBeInstanceOf(DeviceTensor);
    }
    const err = relError(await read(b.x), a.x as Float32Array);
    console.log(`DiT, 8 steps: device-latent graphs vs TypeScript loop ${err.toExponential(1)} relative`);
    expect(err).toBeLessThan(1e-5);
  });

  it('DiT: device samples at different steps batched together get the bytes they get alone', async () => {
    const samples = [await ditRun(deviceModels, true, 1, 3, 8), await ditRun(deviceModels, true, 2, 1.5, 8), await ditRun(deviceModels, true, 4, 7, 6)];
    for (const [s, to] of [[samples[1]!, 2], [samples[2]!, 5]] as const) while (s.step < to) s.advance((await runDitSteps(deviceModels.dit, [s.next()], deviceModels.schedulerGraphs))[0]!);
    const steps = samples.map((s) => s.next());
    const together = await runDitSteps(deviceModels.dit, steps, deviceModels.schedulerGraphs);
    const alone = await Promise.all(steps.map(async (s) => (await runDitSteps(deviceModels.dit, [s], deviceModels.schedulerGraphs))[0]!));
    const bytes = async (l: Latent) => {
      const f = await read(l);
      return Buffer.from(f.buffer, f.byteOffset, f.byteLength);
    };
    for (let i = 0; i < 3; i++) expect((await bytes(together[i]!)).equals(await bytes(alone[i]!))).toBe(true);
  });

  it('UNet: 10 Euler steps (16:9 latent) keep the latent a DeviceTensor and end within 1e-5 of the TypeScript loop', async () => {
    const run = async (m: GenerationModels, onDevice: boolean) => {
      const C = m.latentChannels;
      const geo = geometryFor('16:9', m.unetSampleSize, m.vaeScaleFactor, m.unetLatentMultiple);
      const rng = new GaussianRng(5, 5);
      const cond = {
        encoderHiddenStates: { host: rng.gaussian(2 * TINY_N_QUERY * C), dims: [TINY_N_QUERY, C] },
        textEmbeds: { host: rng.gaussian(2 * C), dims: [C] },
        timeIds: { host: Float32Array.from([...geo.sizeIds, ...geo.sizeIds]), dims: [6] },
      };
      const schedule = eulerDiscreteSchedule(m.scheduler, 10);
      const dims = [m.unetInChannels, geo.latentHeight, geo.latentWidth] as const;
      const x0 = new GaussianRng(5, 2).gaussian(dims[0] * dims[1] * dims[2]).map((v) => v * schedule.initNoiseSigma);
      const s = new UnetSample(onDevice ? await device(x0, [1, ...dims]) : x0, dims, schedule, cond, 4);
      while (!s.done) {
        s.advance((await runUnetSteps(m.unet, [s.next()], m.schedulerGraphs))[0]!);
        expect(s.x instanceof DeviceTensor).toBe(onDevice);
      }
      return read(s.x);
    };
    const err = relError(await run(deviceModels, true), await run(hostModels, false));
    console.log(`UNet, 10 steps: device-latent graphs vs TypeScript loop ${err.toExponential(1)} relative`);
    expect(err).toBeLessThan(1e-5);
  });

  it('VAE: a device latent alone is decoded where it is, several are gathered on the host; the bytes of host latents', async () => {
    const dims = [deviceModels.unetInChannels, 16, 16] as const;
    const xs = [1, 2].map((seed) => new GaussianRng(seed, 7).gaussian(dims[0] * dims[1] * dims[2]));
    const want = await runVaeDecodes(hostModels.vae, xs.map((latents) => ({ latents, dims })));
    const onDevice = await Promise.all(xs.map((x) => device(x, [1, ...dims])));
    const alone = await runVaeDecodes(deviceModels.vae, [{ latents: onDevice[0]!, dims }]);
    const together = await runVaeDecodes(deviceModels.vae, onDevice.map((latents) => ({ latents, dims })));
    const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    expect(same(alone[0]!, want[0]!)).toBe(true);
    expect(together.every((img, i) => same(img, want[i]!))).toBe(true);
  });

  it('imagine end to end: the DiT feature within 1e-5 and the PNG within 1 level of the TypeScript loop', async () => {
    const settings = { negativeDitSteps: 4, negativeGuidance: 3, software: 'test' };
    const [host, dev] = [new Generator(hostModels, fakeConditioner(), settings), new Generator(deviceModels, fakeConditioner(), settings)];
    const feature = async (g: Generator) => g.sampleFeatures(new GaussianRng(2, 9).gaussian(TINY_N_QUERY * TINY_HIDDEN), 6, 3, new GaussianRng(2, 1), () => {});
    expect(relError(await feature(dev), await feature(host))).toBeLessThan(1e-5);
    const req = { prompt: 'a red fox', options: { seed: 7, ditSteps: 6, decoderSteps: 8, guidance: 3, aspect: '1:1' as const } };
    const ctx = () => ({ signal: new AbortController().signal, onProgress: () => {} });
    const [a, b] = [await host.generate(req, ctx()), await dev.generate(req, ctx())];
    const [pa, pb] = await Promise.all([sharp(a.png).raw().toBuffer(), sharp(b.png).raw().toBuffer()]);
    expect(pb.length).toBe(pa.length);
    let worst = 0;
    for (let i = 0; i < pa.length; i++) worst = Math.max(worst, Math.abs(pa[i]! - pb[i]!));
    expect(worst).toBeLessThanOrEqual(1);
  });
});
