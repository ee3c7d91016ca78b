// The vision graph on the tiny checkpoint's vision weights agrees with the plain-TypeScript reference
// (test/reference/qwen2_5_vl_vision.ts) to max abs error ≤ 1e-4, for a square image (several full windows) and a
// non-square one whose merged grid (6×5) is not a multiple of the 4×4 window (edge windows).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVisionGraph, VISION_OUTPUT, type VisionConfig } from '../../worker/builder/architectures/qwen2_5_vl_vision.ts';
import { Checkpoint, writeSafetensors } from '../../worker/builder/safetensors.ts';
import { tinyVisionConfig, tinyVisionTensors } from '../../worker/builder/tiny/vision.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { GaussianRng } from '../../worker/pipeline/rng.ts';
import { preprocessImage, visionFeeds, type PreprocessedImage } from '../../worker/pipeline/image.ts';
import { openSession, type ModelSession } from '../../worker/runtime/session.ts';
import { visionForward } from '../reference/qwen2_5_vl_vision.ts';

const cfg: VisionConfig = tinyVisionConfig(24);
const geometry = { patchSize: 14, temporalPatchSize: 2, mergeSize: 2 };
const limits = { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 };

let dir: string;
let ckpt: Checkpoint;
let session: ModelSession;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vision-'));
  writeSafetensors(join(dir, 'model.safetensors'), tinyVisionTensors(cfg));
  ckpt = Checkpoint.open(dir);
  const store = new WeightStore(ckpt);
  const graph = buildVisionGraph(store, cfg);
  store.assertAllUsed(); // every visual.* key is declared by the graph
  session = await openSession(graph.toBytes(), { executionProvider: 'cpu', intraOpThreads: 1 });
});

afterAll(async () => {
  await session?.release();
  ckpt?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function compare(image: PreprocessedImage): Promise<number> {
  const feeds = visionFeeds(image, geometry, cfg.window_size, cfg.hidden_size / cfg.num_heads);
  const out = await session.run({ ...feeds }, [VISION_OUTPUT]);
  const got = out[VISION_OUTPUT]!;
  const tokens = (image.grid.h / 2) * (image.grid.w / 2);
  expect(got.dims).toEqual([tokens, cfg.out_hidden_size]);
  const want = visionForward(cfg, (k) => ckpt.readFloat32(k), image.pixelValues, image.grid);
  let maxErr = 0;
  (got.data as Float32Array).forEach((v, i) => (maxErr = Math.max(maxErr, Math.abs(v - (want[i] as number)))));
  // the outputs are O(1), so 1e-4 is a real bar
  expect(Math.max(...Array.from(want, Math.abs))).toBeGreaterThan(0.1);
  return maxErr;
}

describe('qwen2_5_vl_vision graph vs reference (tiny checkpoint)', () => {
  it('square 224×224: 16×16 patches, 8×8 merged, four full windows', async () => {
    const rng = new GaussianRng(1, 0);
    const n = 256 * 1176;
    const pixelValues = new Float32Array(n);
    for (let i = 0; i < n; i++) pixelValues[i] = rng.nextGaussian();
    const err = await compare({ pixelValues, grid: { t: 1, h: 16, w: 16 }, width: 224, height: 224 });
    expect(err).toBeLessThanOrEqual(1e-4);
  });

  it('non-square 140×168 through sharp: 6×5 merged grid, edge windows of 4×1, 2×4 and 2×1', async () => {
    const raw = Buffer.alloc(140 * 168 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 37 + (i >> 7) * 11) % 256;
    const png = await sharp(raw, { raw: { width: 140, height: 168, channels: 3 } }).png().toBuffer();
    const image = await preprocessImage(png, limits, geometry);
    expect(image.grid).toEqual({ t: 1, h: 12, w: 10 });
    expect(await compare(image)).toBeLessThanOrEqual(1e-4);
  });
});
