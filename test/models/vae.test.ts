// The VAE decoder graph on tiny random weights agrees with the plain-TypeScript reference (≤ 1e-4, fp32) on a
// non-square latent, and leaves only the encoder half unused.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVaeDecoder, VAE_UNUSED_PREFIXES, vaeScaleFactor, parseVaeConfig } from '../../worker/builder/architectures/vae_decoder.ts';
import { Checkpoint, writeSafetensors } from '../../worker/builder/safetensors.ts';
import { TINY_VAE_CONFIG, tinyVaeTensors } from '../../worker/builder/tiny/diffusion_decoder.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { GaussianRng } from '../../worker/pipeline/rng.ts';
import { openSession } from '../../worker/runtime/session.ts';
import { vaeDecode } from '../reference/vae.ts';
import { maxAbsDiff, t, type Weights } from '../reference/unet_nn.ts';

const [h, w] = [3, 5];
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vae-'));
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tinyVaeTensors(TINY_VAE_CONFIG));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('vae_decoder graph (tiny)', () => {
  it('matches the reference within 1e-4 and upsamples by 2^(blocks−1)', async () => {
    const ckpt = Checkpoint.open(dir, 'diffusion_pytorch_model');
    const store = new WeightStore(ckpt);
    const { graph, config } = buildVaeDecoder(store, TINY_VAE_CONFIG);
    expect(store.unused([...VAE_UNUSED_PREFIXES]).unused).toEqual([]);
    const f = vaeScaleFactor(config);
    expect(f).toBe(8);
    const path = join(dir, 'vae.onnx');
    graph.save(path);
    const latents = new GaussianRng(9, 0).gaussian(2 * 4 * h * w).map((v) => v * 0.13025 * 2);
    const session = await openSession(path, { executionProvider: 'cpu' });
    try {
      const out = await session.run({ latents: { data: latents, dims: [2, 4, h, w] } });
      const img = out.image!;
      expect(img.dims).toEqual([2, 3, h * f, w * f]);
      const weights: Weights = (key) => {
        const info = ckpt.info(key);
        if (!info) throw new Error(`no ${key}`);
        return t(ckpt.readFloat32(key), info.shape);
      };
      const n = 4 * h * w;
      const m = 3 * h * f * w * f;
      for (let b = 0; b < 2; b++) {
        const ref = vaeDecode(weights, parseVaeConfig(TINY_VAE_CONFIG), t(latents.slice(b * n, (b + 1) * n), [4, h, w]));
        const err = maxAbsDiff((img.data as Float32Array).slice(b * m, (b + 1) * m), ref.data);
        console.log(`VAE batch ${b}: max abs error ${err.toExponential(2)}`);
        expect(err).toBeLessThanOrEqual(1e-4);
        expect(Math.max(...ref.data.map(Math.abs))).toBeGreaterThan(0.1);
      }
    } finally {
      await session.release();
      ckpt.close();
    }
  });
});

describe('vae_decoder at the real SDXL-VAE config (headers only)', () => {
  it('has the spec decoder size (≈ 49.5 M of 83.7 M) and builds without reading a weight', () => {
    const real = { ...TINY_VAE_CONFIG, block_out_channels: [128, 256, 512, 512], layers_per_block: 2, norm_num_groups: 32, sample_size: 1024 };
    const shapes = new Map(tinyVaeTensors(real, 0, 'F32', true).map((s) => [s.key, s.shape]));
    const decoder = [...shapes].filter(([k]) => k.startsWith('decoder.') || k.startsWith('post_quant_conv.'));
    expect(decoder.reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0) / 1e6).toBeCloseTo(49.5, 0); // spec §6
    const headerOnly = {
      keys: () => [...shapes.keys()],
      info: (key: string) => shapes.has(key) && { key, dtype: 'BF16', shape: shapes.get(key)!, begin: 0, end: 0, file: 'header-only' },
      readFloat32: () => {
        throw new Error('building must not read weights');
      },
      close: () => {},
    } as unknown as Checkpoint;
    const store = new WeightStore(headerOnly);
    const { config } = buildVaeDecoder(store, real);
    expect(vaeScaleFactor(config)).toBe(8);
    expect(store.unused([...VAE_UNUSED_PREFIXES]).unused).toEqual([]);
  });
});
