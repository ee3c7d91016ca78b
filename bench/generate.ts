// npm run bench -- generate [--latent N] [--levels L] [--layers K] [--runs R] [--threads T] [--skip-tiny]
//
// Two measurements, side by side in one run:
//
// 1. Seconds per image for each stage (conditioning, features, decoding) through the real pipeline
//    (worker/pipeline/blip3o.ts createPipeline) on the tiny checkpoint (make-tiny + convert), first image (which also
//    computes the cached " " negative) and a second one.
//
// 2. One UNet step (a CFG batch of 2) at the REAL Emu2 UNet config (block_out_channels [320, 640, 1280], heads
//    [5, 10, 20], cross_attention_dim 1792, add embedding 3328) with random weights, built by the same builder the
//    worker uses. The full graph is ~2.5 B params (10 GB fp32) and ~6.7 TFLOP per forward at a 128×128 latent, too
//    much for a 2-core CPU, so by default the latent is 32×32 (--latent), each transformer keeps --layers 1 of its
//    [1, 2, 10] blocks, and all --levels 3 resolution levels are kept. The FLOP count is analytic (2 × multiply-adds
//    of every conv, linear and attention product at the shapes used; norms and elementwise ops not counted) and printed.
//    In the same run, onnxruntime's own MatMul is timed at a UNet GEMM size and the ratio UNet GFLOP/s ÷ MatMul GFLOP/s
//    is printed.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSdxlUNet, parseUNetConfig, type UNetConfig } from '../worker/builder/architectures/sdxl_unet.ts';
import { Graph } from '../worker/builder/onnx/graph.ts';
import { fromFloat32, type Checkpoint } from '../worker/builder/safetensors.ts';
import { unetWeightShapes } from '../worker/builder/tiny/diffusion_decoder.ts';
import { WeightStore } from '../worker/builder/weights.ts';
import { GaussianRng } from '../worker/pipeline/rng.ts';
import type { Pipeline, PipelineOptions } from '../worker/pipeline/types.ts';
import { openSession } from '../worker/runtime/session.ts';

/** Emu2's diffusion-decoder/unet/config.json values (spec §1.4). */
export const EMU2_UNET = {
  act_fn: 'silu',
  addition_embed_type: 'text_time',
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  cross_attention_dim: 1792,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  projection_class_embeddings_input_dim: 3328,
  sample_size: 128,
  transformer_layers_per_block: [1, 2, 10],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  use_linear_projection: true,
};

function arg(args: string[], name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
}

/** Analytic FLOPs (2 × MACs) of one batch-1 UNet forward at latent h×w with `tokens` cross-attention tokens. */
export function unetFlops(c: UNetConfig, h: number, w: number, tokens: number): number {
  const n = c.block_out_channels.length;
  const layers = (Array.isArray(c.transformer_layers_per_block) ? c.transformer_layers_per_block : Array(n).fill(c.transformer_layers_per_block)) as number[];
  const temb = 4 * c.block_out_channels[0]!;
  let macs = 0;
  const conv = (cin: number, cout: number, k: number, hw: number) => (macs += cin * cout * k * k * hw);
  const lin = (t: number, i: number, o: number) => (macs += t * i * o);
  const resnet = (cin: number, cout: number, hw: number) => {
    conv(cin, cout, 3, hw);
    conv(cout, cout, 3, hw);
    lin(1, temb, cout);
    if (cin !== cout) conv(cin, cout, 1, hw);
  };
  const transformer = (ch: number, hw: number, nl: number) => {
    lin(hw, ch, ch); // proj_in
    for (let l = 0; l < nl; l++) {
      lin(hw, ch, 3 * ch); // self q, k, v
      macs += 2 * hw * hw * ch; // QKᵀ and AV
      lin(hw, ch, ch); // self out
      lin(hw, ch, ch); // cross q
      lin(tokens, c.cross_attention_dim, 2 * ch); // cross k, v
      macs += 2 * hw * tokens * ch;
      lin(hw, ch, ch); // cross out
      lin(hw, ch, 8 * ch); // GEGLU proj
      lin(hw, 4 * ch, ch); // ff out
    }
    lin(hw, ch, ch); // proj_out
  };
  lin(1, c.block_out_channels[0]!, temb);
  lin(1, temb, temb);
  lin(1, c.projection_class_embeddings_input_dim, temb);
  lin(1, temb, temb);
  let hw = h * w;
  conv(c.in_channels, c.block_out_channels[0]!, 3, hw);
  let cur = c.block_out_channels[0]!;
  const skips = [cur];
  c.down_block_types.forEach((type, i) => {
    const out = c.block_out_channels[i]!;
    for (let j = 0; j < c.layers_per_block; j++) {
      resnet(cur, out, hw);
      cur = out;
      if (type.startsWith('CrossAttn')) transformer(cur, hw, layers[i]!);
      skips.push(cur);
    }
    if (i < n - 1) {
      hw /= 4;
      conv(cur, cur, 3, hw);
      skips.push(cur);
    }
  });
  resnet(cur, cur, hw);
  transformer(cur, hw, layers[n - 1]!);
  resnet(cur, cur, hw);
  const rev = [...c.block_out_channels].reverse();
  const rl = [...layers].reverse();
  c.up_block_types.forEach((type, i) => {
    for (let j = 0; j <= c.layers_per_block; j++) {
      resnet(cur + skips.pop()!, rev[i]!, hw);
      cur = rev[i]!;
      if (type.startsWith('CrossAttn')) transformer(cur, hw, rl[i]!);
    }
    if (i < n - 1) {
      hw *= 4;
      conv(cur, cur, 3, hw);
    }
  });
  conv(cur, c.out_channels, 3, hw);
  return 2 * macs;
}

/** Uniform weights of variance 1/fan_in (matrices) or near 1 (1-D norms): xorshift32, seeded by the key. */
function fastRandom(shape: number[], key: string): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const fanIn = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 0;
  const amp = fanIn ? Math.sqrt(3 / fanIn) : 0.05;
  let x = 2166136261;
  for (let i = 0; i < key.length; i++) x = Math.imul(x ^ key.charCodeAt(i), 16777619) >>> 0;
  x ||= 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 4294967296 - 0.5) * 2 * amp + (fanIn ? 0 : key.endsWith('weight') ? 1 : 0);
  }
  return out;
}

async function timeIt(runs: number, fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm-up (allocations, kernel selection)
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

async function realUNetStep(args: string[]): Promise<void> {
  const latent = arg(args, 'latent', 32);
  const levels = arg(args, 'levels', 3);
  const keepLayers = arg(args, 'layers', 1);
  const runs = arg(args, 'runs', 2);
  const threads = arg(args, 'threads', 0);
  const tokens = 64;
  const full = parseUNetConfig(EMU2_UNET);
  const cfg = parseUNetConfig({
    ...EMU2_UNET,
    block_out_channels: EMU2_UNET.block_out_channels.slice(0, levels),
    attention_head_dim: EMU2_UNET.attention_head_dim.slice(0, levels),
    down_block_types: EMU2_UNET.down_block_types.slice(0, levels),
    up_block_types: EMU2_UNET.up_block_types.slice(-levels),
    transformer_layers_per_block: EMU2_UNET.transformer_layers_per_block.slice(0, levels).map((l) => Math.min(l, keepLayers)),
  });
  const dir = mkdtempSync(join(tmpdir(), 'bench-unet-'));
  try {
    const t0 = performance.now();
    // Random weights generated lazily, one tensor at a time while the graph is written (never all in memory, no
    // safetensors round trip): a checkpoint-shaped view over the key/shape list of the real topology.
    const shapes = unetWeightShapes(cfg as unknown as Record<string, unknown>);
    const params = shapes.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    const byKey = new Map(shapes.map((t) => [t.key, t.shape]));
    const randomCheckpoint = {
      keys: () => [...byKey.keys()],
      info: (key: string) => (byKey.has(key) ? { key, dtype: 'F32', shape: byKey.get(key)!, begin: 0, end: 0, file: 'random' } : undefined),
      readFloat32: (key: string) => fastRandom(byKey.get(key)!, key),
      close: () => {},
    } as unknown as Checkpoint;
    buildSdxlUNet(new WeightStore(randomCheckpoint), cfg, { floatType: 'float32' }).graph.save(join(dir, 'unet.onnx'));
    const s = await openSession(join(dir, 'unet.onnx'), { executionProvider: 'cpu', intraOpThreads: threads });
    console.log(`UNet at the real config: ${levels} levels, transformer layers ${JSON.stringify(cfg.transformer_layers_per_block)} (real [1, 2, 10]), ` +
      `${(params / 1e6).toFixed(1)} M params, latent ${latent}×${latent} (real 128×128), built and loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const rng = new GaussianRng(1, 0);
    const feeds = {
      sample: { data: rng.gaussian(2 * 4 * latent * latent), dims: [2, 4, latent, latent] },
      timestep: { data: Float32Array.from([981, 981]), dims: [2] },
      encoder_hidden_states: { data: rng.gaussian(2 * tokens * 1792), dims: [2, tokens, 1792] },
      text_embeds: { data: rng.gaussian(2 * 1792), dims: [2, 1792] },
      time_ids: { data: Float32Array.from([1024, 1024, 0, 0, 1024, 1024, 1024, 1024, 0, 0, 1024, 1024]), dims: [2, 6] },
    };
    const sec = await timeIt(runs, () => s.run(feeds));
    await s.release();
    const flops = 2 * unetFlops(cfg, latent, latent, tokens); // CFG batch of 2
    const unetGflops = flops / sec / 1e9;

    // onnxruntime's own MatMul at a UNet GEMM size: the 640-channel level's GEGLU projection, [2·h·w/4, 640] × [640, 5120]
    const M = (2 * latent * latent) / 4;
    const K = 640;
    const N = 5120;
    const g = new Graph('matmul');
    const a = g.input('a', 'float32', [M, K]);
    const b = g.initializer('b', 'float32', [K, N], fromFloat32('F32', rng.gaussian(K * N)));
    g.output(a.matmul(b), 'y');
    const mmPath = join(dir, 'matmul.onnx');
    g.save(mmPath);
    const mm = await openSession(mmPath, { executionProvider: 'cpu', intraOpThreads: threads });
    const aData = rng.gaussian(M * K);
    const mmSec = await timeIt(Math.max(runs, 5), () => mm.run({ a: { data: aData, dims: [M, K] } }));
    await mm.release();
    const mmGflops = (2 * M * K * N) / mmSec / 1e9;

    const fullFlops = unetFlops(full, 128, 128, tokens);
    console.log(`UNet step (batch 2): ${(flops / 1e9).toFixed(1)} GFLOP counted, ${sec.toFixed(3)} s → ${unetGflops.toFixed(1)} GFLOP/s`);
    console.log(`onnxruntime MatMul [${M}×${K}]·[${K}×${N}]: ${mmSec.toFixed(4)} s → ${mmGflops.toFixed(1)} GFLOP/s`);
    console.log(`ratio UNet / MatMul throughput: ${(unetGflops / mmGflops).toFixed(3)}`);
    console.log(`(full real UNet forward at 128×128, batch 1, by the same count: ${(fullFlops / 1e12).toFixed(2)} TFLOP; ` +
      `one 50-step CFG decode = ${((fullFlops * 100) / 1e12).toFixed(0)} TFLOP → ${((fullFlops * 100) / (unetGflops * 1e9) / 3600).toFixed(1)} h at this CPU rate)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<void> {
  if (!args.includes('--skip-tiny')) await tinyStages(args);
  await realUNetStep(args);
}

/** make-tiny + convert (fp32) under `dir`; returns the ONNX folder (bench gen and bench batch's imagine row). */
export async function convertTiny(dir: string): Promise<string> {
  const { makeTiny } = await import('../worker/builder/tiny/index.ts');
  const { convertSnapshot } = await import('../worker/builder/convert.ts');
  const snap = join(dir, 'snapshot');
  const onnx = join(dir, 'onnx');
  mkdirSync(onnx, { recursive: true });
  makeTiny(snap);
  await convertSnapshot(snap, onnx, { dtype: 'fp32' });
  return onnx;
}

/** The full pipeline on the converted tiny checkpoint, fp32 on the CPU provider, with the worker's image limits. */
export async function tinyCpuPipeline(onnx: string, threads: number, maxBatch?: PipelineOptions['maxBatch']): Promise<Pipeline> {
  const { createPipeline } = await import('../worker/pipeline/blip3o.ts');
  return createPipeline({
    modelDir: onnx,
    dtype: 'fp32',
    executionProvider: 'cpu',
    intraOpThreads: threads,
    understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
    ...(maxBatch ? { maxBatch } : {}),
  });
}

async function tinyStages(args: string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-gen-'));
  try {
    const p = await tinyCpuPipeline(await convertTiny(dir), arg(args, 'threads', 0));
    try {
      for (const label of ['first image (+ negative)', 'second image']) {
        const marks: Record<string, number> = {};
        let stage = '';
        let t = performance.now();
        await p.generate(
          { prompt: 'a red fox in snow', options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } },
          {
            signal: new AbortController().signal,
            onProgress: (r) => {
              if (r.stage !== stage) {
                const now = performance.now();
                if (stage) marks[stage] = (now - t) / 1000;
                stage = r.stage;
                t = now;
              }
            },
          },
        );
        marks[stage] = (performance.now() - t) / 1000;
        console.log(`tiny checkpoint, ${label}: ${Object.entries(marks).map(([k, v]) => `${k} ${v.toFixed(3)} s`).join(', ')}`);
      }
    } finally {
      await p.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
