// The SDXL-topology UNet graph on tiny random weights agrees with the plain-TypeScript reference (≤ 1e-4, fp32),
// per batch element of a CFG batch [cond, neg], on a non-square latent (the spatial dims are dynamic).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSdxlUNet } from '../../worker/builder/architectures/sdxl_unet.ts';
import { Checkpoint, writeSafetensors } from '../../worker/builder/safetensors.ts';
import { tinyUNetConfig, tinyUNetTensors, unetWeightShapes } from '../../worker/builder/tiny/diffusion_decoder.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { GaussianRng } from '../../worker/pipeline/rng.ts';
import { openSession } from '../../worker/runtime/session.ts';
import { unetForward, type UNetRefConfig } from '../reference/unet.ts';
import { maxAbsDiff, t, type Weights } from '../reference/unet_nn.ts';

const cross = 24;
const cfg = tinyUNetConfig(cross);
const [h, w] = [8, 12];
const Tc = 5;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'unet-'));
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tinyUNetTensors(cfg));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sdxl_unet graph (tiny)', () => {
  it('uses every key and matches the reference within 1e-4', async () => {
    const ckpt = Checkpoint.open(dir, 'diffusion_pytorch_model');
    const store = new WeightStore(ckpt);
    const { graph } = buildSdxlUNet(store, cfg, { floatType: 'float32' });
    expect(store.unused().unused).toEqual([]);
    const path = join(dir, 'unet.onnx');
    graph.save(path);

    const rng = new GaussianRng(4, 0);
    const sample = rng.gaussian(2 * 4 * h * w);
    const enc = rng.gaussian(2 * Tc * cross);
    const text = new Float32Array(2 * cross);
    for (let b = 0; b < 2; b++)
      for (let j = 0; j < cross; j++) {
        let s = 0;
        for (let i = 0; i < Tc; i++) s += enc[(b * Tc + i) * cross + j]!;
        text[b * cross + j] = s / Tc;
      }
    const ids = [64, 96, 0, 0, 64, 96];
    const timestep = 981;
    const session = await openSession(path, { executionProvider: 'cpu' });
    try {
      const out = await session.run({
        sample: { data: sample, dims: [2, 4, h, w] },
        timestep: { data: Float32Array.from([timestep, timestep]), dims: [2] },
        encoder_hidden_states: { data: enc, dims: [2, Tc, cross] },
        text_embeds: { data: text, dims: [2, cross] },
        time_ids: { data: Float32Array.from([...ids, ...ids]), dims: [2, 6] },
      });
      const eps = out.noise_pred!;
      expect(eps.dims).toEqual([2, 4, h, w]);
      const weights: Weights = (key) => {
        const info = ckpt.info(key);
        if (!info) throw new Error(`no ${key}`);
        return t(ckpt.readFloat32(key), info.shape);
      };
      const n = 4 * h * w;
      for (let b = 0; b < 2; b++) {
        const ref = unetForward(
          weights,
          cfg as unknown as UNetRefConfig,
          t(sample.slice(b * n, (b + 1) * n), [4, h, w]),
          timestep,
          t(enc.slice(b * Tc * cross, (b + 1) * Tc * cross), [Tc, cross]),
          t(text.slice(b * cross, (b + 1) * cross), [cross]),
          ids,
        );
        const err = maxAbsDiff((eps.data as Float32Array).slice(b * n, (b + 1) * n), ref.data);
        console.log(`UNet batch ${b}: max abs error ${err.toExponential(2)}`);
        expect(err).toBeLessThanOrEqual(1e-4);
        expect(Math.max(...ref.data.map(Math.abs))).toBeGreaterThan(0.1);
      }
    } finally {
      await session.release();
      ckpt.close();
    }
  });

  it('refuses a config it does not implement, naming the key', () => {
    const ckpt = Checkpoint.open(dir, 'diffusion_pytorch_model');
    expect(() => buildSdxlUNet(new WeightStore(ckpt), { ...cfg, use_linear_projection: false }, { floatType: 'float32' })).toThrow(/use_linear_projection/);
    expect(() => buildSdxlUNet(new WeightStore(ckpt), { ...cfg, projection_class_embeddings_input_dim: 2816 }, { floatType: 'float32' })).toThrow(/projection_class_embeddings_input_dim/);
    ckpt.close();
  });
});

describe('sdxl_unet graph, fp16 (model.dtype fp16 on GPUs)', () => {
  it('builds a type-consistent fp16 graph (GroupNorm and softmax kept fp32) that stays near fp32', async () => {
    const rng = new GaussianRng(8, 0);
    const ids = [64, 64, 0, 0, 64, 64];
    const feeds = {
      sample: { data: rng.gaussian(2 * 4 * 8 * 8), dims: [2, 4, 8, 8] },
      timestep: { data: Float32Array.from([981, 981]), dims: [2] },
      encoder_hidden_states: { data: rng.gaussian(2 * Tc * cross), dims: [2, Tc, cross] },
      text_embeds: { data: rng.gaussian(2 * cross), dims: [2, cross] },
      time_ids: { data: Float32Array.from([...ids, ...ids]), dims: [2, 6] },
    };
    const outs: Float32Array[] = [];
    for (const floatType of ['float32', 'float16'] as const) {
      const ckpt = Checkpoint.open(dir, 'diffusion_pytorch_model');
      const path = join(dir, `unet-${floatType}.onnx`);
      buildSdxlUNet(new WeightStore(ckpt), cfg, { floatType }).graph.save(path);
      ckpt.close();
      const s = await openSession(path, { executionProvider: 'cpu' });
      outs.push((await s.run(feeds)).noise_pred!.data as Float32Array);
      await s.release();
    }
    expect(maxAbsDiff(outs[0]!, outs[1]!)).toBeLessThan(5e-2);
  });
});

describe('sdxl_unet at the real Emu2 config (headers only)', () => {
  it('has the spec parameter count (2,525.5 M) and up-block input channels, and builds without reading a weight', () => {
    const real = { ...cfg, attention_head_dim: [5, 10, 20], block_out_channels: [320, 640, 1280], cross_attention_dim: 1792, addition_time_embed_dim: 256,
      norm_num_groups: 32, projection_class_embeddings_input_dim: 3328, sample_size: 128, transformer_layers_per_block: [1, 2, 10] };
    const shapes = new Map(unetWeightShapes(real).map((s) => [s.key, s.shape]));
    const params = [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
    expect(params / 1e6).toBeCloseTo(2525.5, 0); // spec §6
    const upIn = [0, 1, 2].flatMap((b) => [0, 1, 2].map((r) => shapes.get(`up_blocks.${b}.resnets.${r}.conv1.weight`)![1]));
    expect(upIn).toEqual([2560, 2560, 1920, 1920, 1280, 960, 960, 640, 640]); // spec §4 "Up path"
    const headerOnly = {
      keys: () => [...shapes.keys()],
      info: (key: string) => shapes.has(key) && { key, dtype: 'BF16', shape: shapes.get(key)!, begin: 0, end: 0, file: 'header-only' },
      readFloat32: () => {
        throw new Error('building must not read weights');
      },
      close: () => {},
    } as unknown as Checkpoint;
    const store = new WeightStore(headerOnly);
    buildSdxlUNet(store, real, { floatType: 'float16' });
    expect(store.unused().unused).toEqual([]);
  });
});
