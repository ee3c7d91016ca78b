// npm run bench -- gpu [--preset blip3o-4b|tiny] [--model <onnxDir>] [--work <dir>] [--provider auto|webgpu|cuda|cpu]
//                      [--dtype fp16|fp32] [--steps <dit>,<decoder>] [--tokens N] [--compare] [--json <file>]
// Sizes a GPU before 20 GB of weights are downloaded: random weights in the real BLIP3-o layout (`model make-random`,
// or the tiny checkpoint) → convert → load on the provider `auto` picks → one 1:1 image at the default steps (1024² at
// real size) with seconds per stage → a question about an image with decode tokens/s → peak memory, and the bytes
// that crossed between host and GPU per stage. `--compare` adds each graph on that provider vs the CPU provider in
// the same run (median of 3 after a warm-up) and the CPU-fallback table. Prints a table, writes JSON.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { convertSnapshot } from '../worker/builder/convert.ts';
import { readManifest } from '../worker/builder/manifest.ts';
import { makeRandom, RANDOM_PRESETS } from '../worker/builder/random/index.ts';
import { makeTiny } from '../worker/builder/tiny/index.ts';
import { createPipeline } from '../worker/pipeline/blip3o.ts';
import { sampleFeeds } from '../worker/pipeline/sample-feeds.ts';
import { KvDecoder, kvOutputNames } from '../worker/pipeline/sampling.ts';
import type { ProgressReport } from '../worker/pipeline/types.ts';
import { openSession, transferTotals, type ExecutionProvider, type ResolvedProvider } from '../worker/runtime/session.ts';
import { probeExecutionProvider } from '../worker/setup.ts';
import { fallbackMarkdown, fallbackTable, type FallbackRow } from './gpu-fallback.ts';

const now = () => performance.now() / 1000;
const mib = (b: number) => (b / 2 ** 20).toFixed(2);

interface StageRow {
  stage: string;
  seconds: number;
  toDeviceBytes: number;
  toHostBytes: number;
  runs: number;
}

/** Stage timings of one pipeline call from its progress reports; transfers between stage changes. */
function stageClock() {
  const rows: StageRow[] = [];
  let current: { stage: string; t: number; up: number; down: number; runs: number } | undefined;
  const close = () => {
    if (!current) return;
    const t = transferTotals();
    rows.push({ stage: current.stage, seconds: now() - current.t, toDeviceBytes: t.toDevice - current.up, toHostBytes: t.toHost - current.down, runs: t.runs - current.runs });
  };
  return {
    rows,
    onProgress(p: ProgressReport) {
      if (current?.stage === p.stage) return;
      close();
      const t = transferTotals();
      current = { stage: p.stage, t: now(), up: t.toDevice, down: t.toHost, runs: t.runs };
    },
    finish() {
      close();
      current = undefined;
    },
  };
}

async function prepareModel(values: Record<string, string | boolean | undefined>, log: (s: string) => void): Promise<{ modelDir: string; stages: StageRow[] }> {
  if (typeof values.model === 'string') return { modelDir: resolve(values.model), stages: [] };
  const preset = String(values.preset);
  const work = resolve(String(values.work ?? `bench-gpu-${preset}`));
  const dtype = String(values.dtype ?? (preset === 'tiny' ? 'fp32' : 'fp16')) as 'fp16' | 'fp32';
  const snapshot = join(work, 'snapshot');
  const onnx = join(work, `onnx-${dtype}`);
  const stages: StageRow[] = [];
  const timed = async (stage: string, fn: () => Promise<unknown> | unknown) => {
    const t = now();
    await fn();
    stages.push({ stage, seconds: now() - t, toDeviceBytes: 0, toHostBytes: 0, runs: 0 });
    log(`${stage}: ${(now() - t).toFixed(1)} s`);
  };
  mkdirSync(work, { recursive: true });
  if (!existsSync(join(snapshot, 'config.json'))) {
    if (preset === 'tiny') await timed('random weights (tiny)', () => makeTiny(snapshot));
    else {
      if (!RANDOM_PRESETS[preset]) throw new Error(`unknown preset ${preset} (tiny, ${Object.keys(RANDOM_PRESETS).join(', ')})`);
      await timed(`random weights (${preset})`, () => makeRandom({ preset, dir: snapshot, overwrite: false }));
    }
  }
  if (!readManifest(onnx)) await timed(`convert (${dtype})`, () => convertSnapshot(snapshot, onnx, { dtype }));
  return { modelDir: onnx, stages };
}

async function median3(fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm-up: shader compilation, allocator growth
  const t: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = now();
    await fn();
    t.push(now() - t0);
  }
  return t.sort((a, b) => a - b)[1]!;
}

/** Host↔device bytes of `steps` KV-cached decode steps, with the cache kept in GPU buffers and without. */
async function kvTransfers(modelDir: string, provider: ResolvedProvider, steps: number): Promise<{ keptPerStep: number; hostPerStep: number }> {
  const manifest = readManifest(modelDir)!;
  const info = manifest.components.text!.info as Record<string, number>;
  const dims = { numLayers: info.num_hidden_layers!, numKvHeads: info.num_key_value_heads!, headDim: info.head_dim!, hiddenSize: info.hidden_size!, vocabSize: info.vocab_size! };
  const file = join(modelDir, manifest.components.text!.graphs.decoder!.file);
  const perStep = async (keep: boolean) => {
    const s = await openSession(file, { executionProvider: provider, ...(keep ? { keepOnDevice: kvOutputNames(dims.numLayers) } : {}) });
    try {
      const d = new KvDecoder(s, dims);
      const embed = () => Float32Array.from({ length: dims.hiddenSize }, (_, i) => Math.sin(i) * 0.05);
      const prompt = new Float32Array(64 * dims.hiddenSize).map((_, i) => Math.cos(i) * 0.05);
      await d.prefill(prompt);
      const t0 = { ...s.transfers };
      for (let i = 0; i < steps; i++) await d.step(embed());
      d.reset();
      return (s.transfers.toDevice - t0.toDevice + s.transfers.toHost - t0.toHost) / steps;
    } finally {
      await s.release();
    }
  };
  return { keptPerStep: await perStep(true), hostPerStep: await perStep(false) };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      preset: { type: 'string', default: 'blip3o-4b' },
      model: { type: 'string' },
      work: { type: 'string' },
      provider: { type: 'string', default: 'auto' },
      dtype: { type: 'string' },
      steps: { type: 'string' },
      tokens: { type: 'string', default: '32' },
      compare: { type: 'boolean', default: false },
      json: { type: 'string' },
    },
  });
  const log = (s: string) => console.log(`[gpu bench] ${s}`);
  const t0 = now();
  const { modelDir, stages } = await prepareModel(values, log);
  const manifest = readManifest(modelDir);
  if (!manifest) throw new Error(`no converted model in ${modelDir}`);

  const choice = await probeExecutionProvider(values.provider as ExecutionProvider);
  log(`provider ${choice.provider} on ${choice.adapter}${choice.skipped.map((k) => `; skipped ${k.provider}: ${k.why}`).join('')}`);
  const provider = choice.provider;

  let t = now();
  const pipeline = await createPipeline({
    modelDir,
    dtype: manifest.dtype as 'fp16' | 'fp32',
    executionProvider: provider,
    intraOpThreads: 0,
    understanding: { minPixels: 3136, maxPixels: 1_003_520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
  });
  stages.push({ stage: 'load graphs', seconds: now() - t, toDeviceBytes: 0, toHostBytes: 0, runs: 0 });
  log(`loaded in ${(now() - t).toFixed(1)} s`);
  const signal = new AbortController().signal;

  // one image at the default steps (config/default.yaml generation.defaultDitSteps / defaultDecoderSteps / defaultGuidance)
  const [ditSteps, decoderSteps] = (values.steps ?? '30,50').split(',').map(Number) as [number, number];
  const clock = stageClock();
  t = now();
  const image = await pipeline.generate({ prompt: 'a lighthouse on a cliff at dusk, oil painting', options: { seed: 1, ditSteps, decoderSteps, guidance: 3, aspect: '1:1' } }, { signal, onProgress: (p) => clock.onProgress(p) });
  clock.finish();
  const imagineSeconds = now() - t;
  for (const r of clock.rows) stages.push({ ...r, stage: `imagine: ${r.stage}` });
  log(`imagine ${image.width}×${image.height} (${ditSteps} DiT + ${decoderSteps} UNet steps, the one-off negative feature included) in ${imagineSeconds.toFixed(1)} s`);

  // a question about an image: prefill, then greedy decode; tokens/s over the decode steps only
  const maxNewTokens = Number(values.tokens);
  const photo = await sharp(Buffer.from(image.png)).resize(448, 448).png().toBuffer();
  const marks: number[] = [];
  const vqa = stageClock();
  const answer = await pipeline.understand(
    { image: photo, question: 'Describe this image in detail.', history: [], options: { maxNewTokens, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1.05, seed: 1 } },
    {
      signal,
      onProgress: (p) => {
        vqa.onProgress(p);
        if (p.stage === 'answering') marks.push(now());
      },
    },
  );
  vqa.finish();
  for (const r of vqa.rows) stages.push({ ...r, stage: `ask: ${r.stage}` });
  const decodeTokens = answer.tokenIds.length - 1; // marks[1] is the first token (after prefill)
  const decodeSeconds = (marks.at(-1) ?? 0) - (marks[1] ?? 0);
  const tokPerSec = decodeTokens > 0 && decodeSeconds > 0 ? decodeTokens / decodeSeconds : 0;
  log(`ask: prefill ${((marks[1] ?? 0) - (marks[0] ?? 0)).toFixed(2)} s, ${decodeTokens} decode steps at ${tokPerSec.toFixed(2)} tok/s`);
  await pipeline.close();

  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  const result: Record<string, unknown> = {
    architecture: manifest.architecture,
    dtype: manifest.dtype,
    model: modelDir,
    provider,
    adapter: choice.adapter,
    skipped: choice.skipped,
    image: { width: image.width, height: image.height, ditSteps, decoderSteps, seconds: imagineSeconds },
    vqa: { decodeTokens, decodeSeconds, tokensPerSecond: tokPerSec },
    stages,
    peakHostRssBytes: peakRssBytes,
    gpuMemory: provider === 'cpu' ? 'n/a (CPU provider)' : 'not reported: onnxruntime-node exposes no GPU memory counters for this provider',
    loadAverage: (await import('node:os')).loadavg()[0],
  };

  if (values.compare && provider !== 'cpu') {
    const samples = sampleFeeds(manifest);
    const ratios: { graph: string; cpuSeconds: number; gpuSeconds: number; speedup: number }[] = [];
    for (const s of samples) {
      const [cpu, gpu] = [await openSession(join(modelDir, s.file), { executionProvider: 'cpu' }), await openSession(join(modelDir, s.file), { executionProvider: provider })];
      const c = await median3(() => cpu.run(s.feeds));
      const g = await median3(() => gpu.run(s.feeds));
      await Promise.all([cpu.release(), gpu.release()]);
      ratios.push({ graph: s.name, cpuSeconds: c, gpuSeconds: g, speedup: c / g });
      log(`${s.name}: cpu ${c.toFixed(4)} s, ${provider} ${g.toFixed(4)} s → ${(c / g).toFixed(2)}×`);
    }
    result.providerVsCpu = ratios;
    const kv = await kvTransfers(modelDir, provider, 4);
    result.kvBytesPerDecodeStep = { cacheOnDevice: kv.keptPerStep, cacheThroughHost: kv.hostPerStep };
    const fallback: FallbackRow[] = await fallbackTable(modelDir, samples, provider);
    result.fallback = fallback;
    console.log(`\nnodes on the CPU inside ${provider} sessions:\n${fallbackMarkdown(fallback)}`);
    console.log(`\nKV-cached decode step, host↔device bytes: cache in GPU buffers ${kv.keptPerStep.toFixed(0)} B, cache through host memory ${kv.hostPerStep.toFixed(0)} B (${(kv.hostPerStep / Math.max(1, kv.keptPerStep)).toFixed(1)}×)`);
  }
  result.totalSeconds = now() - t0;

  console.log(`\n${manifest.architecture} (${manifest.dtype}) on ${provider} — ${choice.adapter}`);
  console.log('| stage | seconds | host→device MiB | device→host MiB | runs |\n|---|---:|---:|---:|---:|');
  for (const r of stages) console.log(`| ${r.stage} | ${r.seconds.toFixed(2)} | ${mib(r.toDeviceBytes)} | ${mib(r.toHostBytes)} | ${r.runs} |`);
  console.log(`\nimage ${image.width}×${image.height}: ${imagineSeconds.toFixed(1)} s · VQA decode ${tokPerSec.toFixed(2)} tok/s · peak host RSS ${mib(peakRssBytes)} MiB · GPU memory ${String(result.gpuMemory)}`);
  if (result.providerVsCpu) {
    console.log(`\n| graph | cpu s | ${provider} s | ${provider} vs cpu |\n|---|---:|---:|---:|`);
    for (const r of result.providerVsCpu as { graph: string; cpuSeconds: number; gpuSeconds: number; speedup: number }[])
      console.log(`| ${r.graph} | ${r.cpuSeconds.toFixed(4)} | ${r.gpuSeconds.toFixed(4)} | ${r.speedup.toFixed(2)}× |`);
  }
  const jsonFile = resolve(String(values.json ?? 'gpu-bench.json'));
  writeFileSync(jsonFile, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nJSON: ${jsonFile} (load average ${Number(result.loadAverage).toFixed(1)})`);
}
