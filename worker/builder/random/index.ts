// `npm run model -- make-random --preset blip3o-4b|blip3o-8b <dir>`: a BLIP3-o snapshot at REAL size with random
// weights, laid out like the hub repo (spec §1.1, §1.3, §6): root config.json, generation_config.json, tokenizer
// files, `model-0000k-of-0000n.safetensors` shards of at most 5 GB plus model.safetensors.index.json holding the
// Qwen2.5-VL text model (lm_head stored), `visual.*`, the DiT, latent_queries and the training-only EVA-CLIP tower,
// and `diffusion-decoder/{unet,vae}/diffusion_pytorch_model.bf16.safetensors` with their configs. All bf16.
//
// Written streaming (16 MiB of values at a time, never a whole tensor) and deterministic: every tensor's values are
// a counter-based hash of (preset seed, key, element index), so the same preset gives the same bytes, and any chunk
// can be produced on its own. Values are uniform with the variance of the tiny maker's Gaussian of the same kind
// (N(0, 1/fan_in) matrices, norms near 1, small biases), so activations stay in a realistic range.
//
//   import { makeRandom } from 'worker/builder/random/index.ts';
//   await makeRandom({ preset: 'blip3o-4b', dir, onProgress: (p) => … });   // p: { file, bytesDone, bytesTotal }
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AppError } from '../../../src/errors.ts';
import { tensorBytes, writeSafetensorsStreaming, writeShardedSafetensorsStreaming, type StreamedTensor } from '../safetensors.ts';
import { specScale, type WeightSpec } from '../tiny/component.ts';
import { MODEL_INDEX, SCHEDULER_CONFIG, unetWeightShapes, vaeWeightShapes } from '../tiny/diffusion_decoder.ts';
import { ditWeightSpecs } from '../tiny/dit.ts';
import { evaClipWeightSpecs } from '../tiny/eva_clip.ts';
import { GENERATION_CONFIG, qwenRootConfig, textWeightSpecs } from '../tiny/llm.ts';
import { tinyTokenizerFiles } from '../tiny/tokenizer.ts';
import { visionConfigJson, visionWeightSpecs } from '../tiny/vision.ts';
import { RANDOM_PRESETS, type RandomPreset } from './presets.ts';

export { RANDOM_PRESETS, type RandomPreset } from './presets.ts';

/** The parts of a snapshot; `components` picks a subset (e.g. a GPU benchmark that needs only the text model). */
export type RandomComponent = 'text' | 'vision' | 'dit' | 'eva-clip' | 'diffusion-decoder' | 'tokenizer';
export const RANDOM_COMPONENTS: readonly RandomComponent[] = ['text', 'vision', 'dit', 'eva-clip', 'diffusion-decoder', 'tokenizer'];

export interface RandomProgress {
  /** The file being written, relative to the snapshot dir. */
  file: string;
  bytesDone: number;
  bytesTotal: number;
}

export interface MakeRandomOptions {
  /** A key of RANDOM_PRESETS, or a preset object (tests shrink one). */
  preset: string | RandomPreset;
  dir: string;
  /** @defaultValue all of RANDOM_COMPONENTS */
  components?: readonly RandomComponent[];
  /** Root shard cap, like HF's max_shard_size="5GB". @defaultValue 5e9 */
  maxShardBytes?: number;
  /** Replace a non-empty `dir` (otherwise refused, so a typo cannot wipe a folder). @defaultValue false */
  overwrite?: boolean;
  onProgress?(p: RandomProgress): void;
}

export interface RandomSummary {
  dir: string;
  files: { file: string; bytes: number }[];
  bytes: number;
  parameters: number;
}

/** FNV-1a of the key: each tensor's own stream, independent of which other tensors are written. */
function keySeed(key: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** value(i) = mean + std·√3·(2u − 1), u = Mix32(seed + (i+1)·φ) / 2³²: uniform with variance std², index-addressable. */
export function randomFill(seed: number, std: number, mean: number): (start: number, out: Float32Array) => void {
  const k = (2 * Math.sqrt(3) * std) / 4294967296;
  const c = mean - Math.sqrt(3) * std;
  return (start, out) => {
    let s = (seed + Math.imul(start, 0x9e3779b9)) >>> 0;
    for (let i = 0; i < out.length; i++) {
      s = (s + 0x9e3779b9) >>> 0;
      let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      out[i] = ((z ^ (z >>> 16)) >>> 0) * k + c;
    }
  };
}

const streamed = (specs: readonly WeightSpec[], seed: number): StreamedTensor[] =>
  specs.map((s) => {
    const { std, mean } = specScale(s);
    return { key: s.key, dtype: 'BF16', shape: s.shape, fill: randomFill(keySeed(s.key, seed), std, mean) };
  });

/** diffusers weights: 1-D `.weight` are norms, `.bias` biases, the rest matrices/convs (fan-in = all but dim 0). */
const diffusersSpecs = (shapes: readonly { key: string; shape: number[] }[]): WeightSpec[] =>
  shapes.map(({ key, shape }) => ({
    key,
    shape,
    kind: key.endsWith('.bias') ? 'bias' : shape.length === 1 ? 'norm' : 'matrix',
    fanIn: shape.slice(1).reduce((a, b) => a * b, 1),
  }));

function resolvePreset(p: string | RandomPreset): RandomPreset {
  if (typeof p !== 'string') return p;
  const preset = RANDOM_PRESETS[p];
  if (!preset) throw new AppError('config', `unknown preset ${p} (known: ${Object.keys(RANDOM_PRESETS).join(', ')})`);
  return preset;
}

/** What `makeRandom` would write (key lists and byte counts, no values): for planning disk and memory. */
export function randomLayout(preset: string | RandomPreset, components: readonly RandomComponent[] = RANDOM_COMPONENTS) {
  const p = resolvePreset(preset);
  const has = (c: RandomComponent) => components.includes(c);
  const root: WeightSpec[] = [
    ...(has('text') ? textWeightSpecs(p.text, { lmHead: p.lmHeadStored }) : []),
    ...(has('vision') ? visionWeightSpecs(p.vision) : []),
    ...(has('dit') ? ditWeightSpecs(p.dit) : []),
    ...(has('eva-clip') ? evaClipWeightSpecs(p.evaClip) : []),
  ];
  const unet = has('diffusion-decoder') ? diffusersSpecs(unetWeightShapes(p.unet)) : [];
  const vae = has('diffusion-decoder') ? diffusersSpecs(vaeWeightShapes(p.vae)) : [];
  return { preset: p, root, unet, vae };
}

/** Writes the snapshot. Weights first, config.json last (a folder without it is an interrupted run). */
export async function makeRandom(opts: MakeRandomOptions): Promise<RandomSummary> {
  const components = opts.components ?? RANDOM_COMPONENTS;
  const { preset: p, root, unet, vae } = randomLayout(opts.preset, components);
  const dir = opts.dir;
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    if (!opts.overwrite) throw new AppError('config', `${dir} is not empty; pass --overwrite to replace it`);
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dir, { recursive: true });
  const files: RandomSummary['files'] = [];
  const writeText = (rel: string, text: string) => {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), text);
    files.push({ file: rel, bytes: Buffer.byteLength(text) });
  };
  const json = (rel: string, v: unknown) => writeText(rel, JSON.stringify(v, null, 2) + '\n');

  const all = [...root, ...unet, ...vae];
  const bytesTotal = all.reduce((a, s) => a + tensorBytes({ dtype: 'BF16', shape: s.shape }), 0);
  let bytesDone = 0;
  let file = '';
  let lastReport = 0;
  const onBytes = (n: number) => {
    bytesDone += n;
    // at most every 64 MiB (and at the end): a progress bar redraw per 8 MiB chunk would cost more than the chunk
    if (bytesDone - lastReport >= 64 * 2 ** 20 || bytesDone === bytesTotal) {
      lastReport = bytesDone;
      opts.onProgress?.({ file, bytesDone, bytesTotal });
    }
  };
  const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

  if (root.length) {
    file = 'model-*.safetensors';
    const names = writeShardedSafetensorsStreaming(dir, streamed(root, p.seed), opts.maxShardBytes ?? 5e9, 'model', onBytes);
    for (const n of [...names, 'model.safetensors.index.json']) files.push({ file: n, bytes: statSync(join(dir, n)).size });
    await yieldToLoop();
  }
  if (components.includes('diffusion-decoder')) {
    const dd = 'diffusion-decoder';
    for (const [sub, specs, cfg] of [['unet', unet, p.unet], ['vae', vae, p.vae]] as const) {
      file = `${dd}/${sub}/diffusion_pytorch_model.bf16.safetensors`;
      mkdirSync(join(dir, dd, sub), { recursive: true });
      writeSafetensorsStreaming(join(dir, file), streamed(specs, p.seed), onBytes);
      files.push({ file, bytes: statSync(join(dir, file)).size });
      json(`${dd}/${sub}/config.json`, cfg);
      await yieldToLoop();
    }
    json(`${dd}/scheduler/scheduler_config.json`, SCHEDULER_CONFIG);
    json(`${dd}/model_index.json`, MODEL_INDEX);
  }
  if (components.includes('tokenizer'))
    for (const [name, value] of Object.entries(tinyTokenizerFiles())) typeof value === 'string' ? writeText(name, value) : json(name, value);
  json('generation_config.json', GENERATION_CONFIG);
  const config = qwenRootConfig(p.text, p.tieWordEmbeddings);
  config.max_window_layers = p.text.num_hidden_layers;
  if (components.includes('vision')) config.vision_config = visionConfigJson(p.vision);
  json('config.json', config);

  const parameters = all.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  return { dir, files, bytes: bytesTotal, parameters };
}
