// `npm run model -- make-tiny <dir>`: a complete BLIP3-o-shaped snapshot at toy sizes, with the real key names,
// the real vocabulary (151668 ids) and real tokenizer files, so every graph, the tokenizer and the end-to-end
// pipeline can be tested on CPU in seconds. Deterministic: the same bytes every run (no clocks, no unseeded
// randomness, sorted keys). Each component is one entry of the explicit table below; a component adds tensors
// to the root shards, sections to config.json, and/or files of its own (diffusion-decoder/…).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeShardedSafetensors, type TensorToWrite } from '../safetensors.ts';
import type { TinyComponent, TinyContext } from './component.ts';
import { diffusionDecoderComponent } from './diffusion_decoder.ts';
import { ditComponent } from './dit.ts';
import { evaClipComponent } from './eva_clip.ts';
import { llmComponent, TINY_TEXT } from './llm.ts';
import { tokenizerComponent } from './tokenizer.ts';
import { visionComponent } from './vision.ts';

export type { TinyComponent, TinyContext, TinyTextSizes } from './component.ts';

/** The components, in order. Vision tower (helper V), DiT and diffusion-decoder/ (helper G) add one line each. */
export const TINY_COMPONENTS: readonly TinyComponent[] = [llmComponent, tokenizerComponent, evaClipComponent, ditComponent, diffusionDecoderComponent, visionComponent];

/** Root shards are capped at this size so the tiny snapshot is sharded and indexed like a real one. */
const SHARD_BYTES = 16 * 1024 * 1024;

export function makeTiny(dir: string, components: readonly TinyComponent[] = TINY_COMPONENTS): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const root: TensorToWrite[] = [];
  const config: Record<string, unknown> = {};
  const writeFile = (rel: string, data: string | Uint8Array) => {
    const p = join(dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
  };
  const ctx: TinyContext = {
    dir,
    text: TINY_TEXT,
    config,
    addRootTensors: (t) => root.push(...t),
    writeFile,
    writeJson: (rel, v) => writeFile(rel, JSON.stringify(v, null, 2) + '\n'),
  };
  for (const c of components) c.write(ctx);
  const seen = new Set<string>();
  for (const t of root) {
    if (seen.has(t.key)) throw new Error(`tiny checkpoint: ${t.key} written twice`);
    seen.add(t.key);
  }
  writeShardedSafetensors(dir, root, SHARD_BYTES);
  ctx.writeJson('config.json', sortKeys(config));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}
