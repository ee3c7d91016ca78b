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

describe('diffusion_transformer at the real BLIP3-o-8B shapes (spec §1.3, headers only)', () => {
  it('declares exactly the spec key list and sizes itself from it (FFN 4864, 28 heads, 24 layers)', () => {
    const H = 3584;
    const shapes = new Map<string, number[]>([
      ['caption_projection.linear_1.weight', [1792, H]], ['caption_projection.linear_1.bias', [1792]],
      ['caption_projection.linear_2.weight', [1792, 1792]], ['caption_projection.linear_2.bias', [1792]],
      ['patch_embedder.proj.weight', [1792, 1792]], ['patch_embedder.proj.bias', [1792]],
      ['time_caption_embed.timestep_embedder.linear_1.weight', [1024, 256]], ['time_caption_embed.timestep_embedder.linear_1.bias', [1024]],
      ['time_caption_embed.timestep_embedder.linear_2.weight', [1024, 1024]], ['time_caption_embed.timestep_embedder.linear_2.bias', [1024]],
      ['time_caption_embed.caption_embedder.0.weight', [1792]], ['time_caption_embed.caption_embedder.0.bias', [1792]],
      ['time_caption_embed.caption_embedder.1.weight', [1024, 1792]], ['time_caption_embed.caption_embedder.1.bias', [1024]],
      ['norm_out.linear_1.weight', [1792, 1024]], ['norm_out.linear_1.bias', [1792]],
      ['norm_out.linear_2.weight', [1792, 1792]], ['norm_out.linear_2.bias', [1792]],
    ]);
    for (let l = 0; l < 24; l++) {
      const p = `layers.${l}.`;
      shapes.set(`${p}gate`, [28]);
      for (const a of ['attn1', 'attn2']) {
        for (const m of ['to_q', 'to_k', 'to_v']) shapes.set(`${p}${a}.${m}.weight`, [1792, 1792]);
        for (const n of ['norm_q', 'norm_k']) for (const x of ['weight', 'bias']) shapes.set(`${p}${a}.${n}.${x}`, [1792]);
      }
      shapes.set(`${p}attn2.to_out.0.weight`, [1792, 1792]);
      shapes.set(`${p}feed_forward.linear_1.weight`, [4864, 1792]);
      shapes.set(`${p}feed_forward.linear_3.weight`, [4864, 1792]);
      shapes.set(`${p}feed_forward.linear_2.weight`, [1792, 4864]);
      shapes.set(`${p}norm1.linear.weight`, [7168, 1024]);
      shapes.set(`${p}norm1.linear.bias`, [7168]);
      for (const n of ['norm1.norm', 'ffn_norm1', 'norm2', 'ffn_norm2', 'norm1_context']) shapes.set(`${p}${n}.weight`, [1792]);
    }
    const keys = [...shapes.keys()].map((k) => `model.dit.model.${k}`);
    const headerOnly = {
      keys: () => keys,
      info: (key: string) => {
        const s = shapes.get(key.replace('model.dit.model.', ''));
        return s && { key, dtype: 'BF16', shape: s, begin: 0, end: 0, file: 'header-only' };
      },
      readFloat32: () => {
        throw new Error('building must not read weights');
      },
      close: () => {},
    } as unknown as Checkpoint;
    const store = new WeightStore(headerOnly);
    const { graph, dims } = buildDiffusionTransformer(store, { gridH: 8, gridW: 8, floatType: 'float16' });
    expect(dims).toEqual({ dim: 1792, heads: 28, layers: 24, latentChannels: 1792, captionDim: H, tembDim: 1024, freqDim: 256, ffnDim: 4864, outChannels: 1792 });
    expect(store.unused().unused).toEqual([]);
    expect(graph.inputs.map((i) => [i.name, i.shape])).toEqual([
      ['x', ['batch', 64, 1792]],
      ['timestep', ['batch']],
      ['z', ['batch', 'caption_tokens', H]],
    ]);
  });
});
