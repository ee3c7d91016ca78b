// The DiT graph on tiny random weights agrees with the plain-TypeScript reference (max abs error ≤ 1e-4, fp32),
// per batch element of a CFG-shaped batch: [zeros caption at t = 1000, real caption at t = 33].
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDiffusionTransformer } from '../../worker/builder/architectures/diffusion_transformer.ts';
import { Checkpoint, writeSafetensors } from '../../worker/builder/safetensors.ts';
import { TINY_DIT, tinyDitTensors } from '../../worker/builder/tiny/dit.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { GaussianRng } from '../../worker/pipeline/rng.ts';
import { openSession } from '../../worker/runtime/session.ts';
import { ditForward } from '../reference/dit.ts';
import { maxAbsDiff, t, type Weights } from '../reference/unet_nn.ts';

const sizes = { ...TINY_DIT, captionDim: 40 };
const grid = 4;
const T = grid * grid;
const Tc = 6;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dit-'));
  writeSafetensors(join(dir, 'model.safetensors'), tinyDitTensors(sizes));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('diffusion_transformer graph (tiny)', () => {
  it('derives its sizes from the weights, uses every DiT key, and matches the reference within 1e-4', async () => {
    const ckpt = Checkpoint.open(dir);
    const store = new WeightStore(ckpt);
    const { graph, dims } = buildDiffusionTransformer(store, { gridH: grid, gridW: grid, floatType: 'float32' });
    expect(dims).toMatchObject({ dim: 32, heads: 2, layers: 2, latentChannels: 24, captionDim: 40, ffnDim: 96, outChannels: 24 });
    expect(store.unused().unused).toEqual([]);
    const path = join(dir, 'dit.onnx');
    graph.save(path);

    const rng = new GaussianRng(3, 0);
    const x = rng.gaussian(2 * T * sizes.latentChannels);
    const z = new Float32Array(2 * Tc * sizes.captionDim);
    z.set(rng.gaussian(Tc * sizes.captionDim), Tc * sizes.captionDim); // batch 0: zeros (the CFG null), batch 1: features
    const timesteps = [1000, 33];
    const session = await openSession(path, { executionProvider: 'cpu' });
    try {
      const out = await session.run({
        x: { data: x, dims: [2, T, sizes.latentChannels] },
        timestep: { data: Float32Array.from(timesteps), dims: [2] },
        z: { data: z, dims: [2, Tc, sizes.captionDim] },
      });
      const v = out.velocity!;
      expect(v.dims).toEqual([2, T, sizes.latentChannels]);
      const weights: Weights = (key) => {
        const info = ckpt.info(key);
        if (!info) throw new Error(`no ${key}`);
        return t(ckpt.readFloat32(key), info.shape);
      };
      for (let b = 0; b < 2; b++) {
        const xb = x.slice(b * T * sizes.latentChannels, (b + 1) * T * sizes.latentChannels);
        const zb = z.slice(b * Tc * sizes.captionDim, (b + 1) * Tc * sizes.captionDim);
        const ref = ditForward(weights, 'model.dit.model.', t(xb, [T, sizes.latentChannels]), timesteps[b]!, t(zb, [Tc, sizes.captionDim]), grid, grid);
        const got = (v.data as Float32Array).slice(b * ref.data.length, (b + 1) * ref.data.length);
        const err = maxAbsDiff(got, ref.data);
        console.log(`DiT batch ${b}: max abs error ${err.toExponential(2)}`);
        expect(err).toBeLessThanOrEqual(1e-4);
        // the test can fail: outputs are not trivially small
        expect(Math.max(...ref.data.map(Math.abs))).toBeGreaterThan(0.1);
      }
    } finally {
      await session.release();
      ckpt.close();
    }
  });

  it('names the key and both shapes when a weight has the wrong shape', () => {
    const bad = tinyDitTensors(sizes).map((x) =>
      x.key === 'model.dit.model.layers.1.feed_forward.linear_2.weight' ? { ...x, shape: [48, 64] } : x,
    );
    const d2 = mkdtempSync(join(tmpdir(), 'dit-bad-'));
    try {
      writeSafetensors(join(d2, 'model.safetensors'), bad);
      const ckpt = Checkpoint.open(d2);
      expect(() => buildDiffusionTransformer(new WeightStore(ckpt), { gridH: grid, gridW: grid, floatType: 'float32' })).toThrow(
        /layers\.1\.feed_forward\.linear_2\.weight has shape \[48, 64\].*expected \[32, 96\]/,
      );
      ckpt.close();
    } finally {
      rmSync(d2, { recursive: true, force: true });
    }
  });
});

describe('diffusion_transformer graph, fp16 (model.dtype fp16 on GPUs)', () => {
  it('builds type-consistent fp16 weights/activations (RoPE, norms and softmax kept fp32) and stays near fp32', async () => {
    const rng = new GaussianRng(8, 0);
    const feeds = {
      x: { data: rng.gaussian(2 * T * sizes.latentChannels), dims: [2, T, sizes.latentChannels] },
      timestep: { data: Float32Array.from([1000, 500]), dims: [2] },
      z: { data: rng.gaussian(2 * Tc * sizes.captionDim), dims: [2, Tc, sizes.captionDim] },
    };
    const outs: Float32Array[] = [];
    for (const floatType of ['float32', 'float16'] as const) {
      const ckpt = Checkpoint.open(dir);
      const path = join(dir, `dit-${floatType}.onnx`);
      buildDiffusionTransformer(new WeightStore(ckpt), { gridH: grid, gridW: grid, floatType }).graph.save(path);
      ckpt.close();
      const s = await openSession(path, { executionProvider: 'cpu' });
      outs.push((await s.run(feeds)).velocity!.data as Float32Array);
      await s.release();
    }
    expect(maxAbsDiff(outs[0]!, outs[1]!)).toBeLessThan(5e-2);
  });
});
