// make-random at a shrunken preset (the real presets' structure at toy widths): the hub layout (sharded root with
// an index, EVA-CLIP in the root shards, diffusion-decoder/ bf16 files and configs, tokenizer files), the same
// bytes twice, chunk-independent values, a clean conversion of every key (EVA-CLIP and the VAE encoder skipped),
// and the real presets' parameter counts against spec §6.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertSnapshot } from '../../../../worker/builder/convert.ts';
import { makeRandom, randomFill, randomLayout, RANDOM_PRESETS, type RandomPreset } from '../../../../worker/builder/random/index.ts';
import { Checkpoint } from '../../../../worker/builder/safetensors.ts';
import { TINY_VAE_CONFIG, tinyUNetConfig, vaeWeightShapes } from '../../../../worker/builder/tiny/diffusion_decoder.ts';
import { TINY_DIT } from '../../../../worker/builder/tiny/dit.ts';
import { TINY_EVA_CLIP } from '../../../../worker/builder/tiny/eva_clip.ts';
import { TINY_TEXT } from '../../../../worker/builder/tiny/llm.ts';
import { tinyVisionConfig } from '../../../../worker/builder/tiny/vision.ts';

const root = mkdtempSync(join(tmpdir(), 'make-random-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The 4B preset's structure at toy widths (gen_hidden_size stays 1792, as config.json says). */
const SMALL: RandomPreset = {
  ...RANDOM_PRESETS['blip3o-4b']!,
  text: TINY_TEXT,
  vision: tinyVisionConfig(TINY_TEXT.hidden_size),
  dit: { ...TINY_DIT, latentChannels: 1792, captionDim: TINY_TEXT.hidden_size },
  evaClip: TINY_EVA_CLIP,
  unet: tinyUNetConfig(1792),
  vae: TINY_VAE_CONFIG,
};

function hashDir(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else h.update(p.slice(dir.length)).update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}

describe('makeRandom', () => {
  it('writes the hub layout, deterministically, and the snapshot converts with every key accounted for', async () => {
    const a = join(root, 'a');
    const progress: number[] = [];
    const summary = await makeRandom({ preset: SMALL, dir: a, maxShardBytes: 8 * 2 ** 20, onProgress: (p) => progress.push(p.bytesDone) });
    expect(progress.at(-1)).toBe(summary.bytes);
    const index = JSON.parse(readFileSync(join(a, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const shards = [...new Set(Object.values(index.weight_map))].sort();
    expect(shards.length).toBeGreaterThan(1);
    expect(shards[0]).toMatch(/^model-00001-of-0000\d\.safetensors$/);
    for (const s of shards) expect(statSync(join(a, s)).size).toBeLessThan(8 * 2 ** 20 + 4 * 151668 * 64); // cap + one vocab table
    expect(Object.keys(index.weight_map)).toEqual(expect.arrayContaining(['lm_head.weight', 'model.embed_tokens.weight', 'model.latent_queries', 'visual.merger.mlp.2.weight', 'model.dit.model.norm_out.linear_2.bias']));
    expect(Object.keys(index.weight_map).some((k) => k.startsWith('model.gen_vision_tower.vision_tower.model.blocks.'))).toBe(true);
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors', 'diffusion-decoder/vae/diffusion_pytorch_model.bf16.safetensors', 'diffusion-decoder/unet/config.json', 'diffusion-decoder/vae/config.json', 'diffusion-decoder/scheduler/scheduler_config.json', 'diffusion-decoder/model_index.json'])
      expect(existsSync(join(a, f)), f).toBe(true);
    const config = JSON.parse(readFileSync(join(a, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ tie_word_embeddings: true, vocab_size: 151668, architectures: ['blip3oQwenForCausalLM'] });
    // the VAE carries its whole encoder, as the hub file does
    const vae = Checkpoint.open(join(a, 'diffusion-decoder/vae'), 'diffusion_pytorch_model.bf16');
    expect(vae.keys()).toEqual(expect.arrayContaining(['encoder.mid_block.attentions.0.to_q.weight', 'encoder.conv_out.weight', 'encoder.down_blocks.1.downsamplers.0.conv.weight']));
    // bf16 values in the planned ranges: norms near 1, matrices ~ N(0, 1/fan_in)
    const ckpt = Checkpoint.open(a);
    const norm = ckpt.readFloat32('model.norm.weight');
    expect(Math.min(...norm)).toBeGreaterThan(0.8);
    const q = ckpt.readFloat32('model.layers.0.self_attn.q_proj.weight');
    const variance = q.reduce((s, v) => s + v * v, 0) / q.length;
    expect(variance * TINY_TEXT.hidden_size).toBeCloseTo(1, 0);
    ckpt.close();
    vae.close();

    const b = join(root, 'b');
    await makeRandom({ preset: SMALL, dir: b, maxShardBytes: 8 * 2 ** 20 });
    expect(hashDir(b)).toBe(hashDir(a));
    await expect(makeRandom({ preset: SMALL, dir: b })).rejects.toThrow(/not empty/);

    const m = await convertSnapshot(a, join(root, 'out'), { dtype: 'fp16' });
    expect(Object.keys(m.components).sort()).toEqual(['dit', 'text', 'unet', 'vae', 'vision']);
    expect(m.skipped['model.gen_vision_tower.']).toBe(4 + 12 * TINY_EVA_CLIP.layers);
    expect(m.skipped).toMatchObject({ 'diffusion-decoder/vae:encoder.': vaeWeightShapes(TINY_VAE_CONFIG).filter((w) => w.key.startsWith('encoder.')).length, 'diffusion-decoder/vae:quant_conv.': 2 });
  }, 300_000);

  it('produces the same values chunk by chunk as in one piece', () => {
    const fill = randomFill(1234, 0.5, 1);
    const whole = new Float32Array(1000);
    fill(0, whole);
    const parts = new Float32Array(1000);
    fill(0, parts.subarray(0, 300));
    fill(300, parts.subarray(300, 1000));
    expect(parts).toEqual(whole);
    const mean = whole.reduce((s, v) => s + v, 0) / whole.length;
    expect(mean).toBeCloseTo(1, 1);
  });

  it('real presets match the parameter counts of spec §6', () => {
    const count = (specs: { shape: number[] }[]) => specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0) / 1e6;
    const b4 = randomLayout('blip3o-4b');
    const b8 = randomLayout('blip3o-8b');
    const part = (l: ReturnType<typeof randomLayout>, p: (k: string) => boolean) => count(l.root.filter((s) => p(s.key)));
    expect(part(b8, (k) => k.startsWith('visual.'))).toBeCloseTo(676.6, 0);
    expect(part(b4, (k) => k.startsWith('visual.'))).toBeCloseTo(668.7, 0);
    expect(part(b8, (k) => k.startsWith('model.dit.'))).toBeCloseTo(1365.0, 0);
    expect(part(b4, (k) => k.startsWith('model.dit.'))).toBeCloseTo(1362.3, 0);
    expect(part(b8, (k) => k.startsWith('model.gen_vision_tower.'))).toBeCloseTo(4350.2, 0);
    // LLM: 8B 7,612.8 M; 4B 3,085.4 M tied + 310.6 M stored lm_head (latent_queries counted apart)
    const llm = (k: string) => k.startsWith('model.embed_tokens') || k.startsWith('model.layers.') || k === 'model.norm.weight' || k === 'lm_head.weight';
    expect(part(b8, llm)).toBeCloseTo(7612.8, 0);
    expect(part(b4, llm)).toBeCloseTo(3085.4 + 310.6, 0);
    expect(count(b8.unet)).toBeCloseTo(2525.5, 0);
    expect(count(b8.vae)).toBeCloseTo(83.7, 0);
  });
});
