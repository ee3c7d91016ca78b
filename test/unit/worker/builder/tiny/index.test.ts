// make-tiny writes a complete, sharded, BLIP3-o-shaped snapshot, byte-identical on every run.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../../../../worker/builder/safetensors.ts';
import { makeTiny } from '../../../../../worker/builder/tiny/index.ts';

const root = mkdtempSync(join(tmpdir(), 'tiny-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const f of readdirSync(d).sort()) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

describe('make-tiny', () => {
  it('is deterministic and has the real layout: config, sharded index, LLM at the real vocab, latent_queries, EVA-CLIP, tokenizer', () => {
    const a = join(root, 'a');
    const b = join(root, 'b');
    makeTiny(a);
    makeTiny(b);
    const ha = hashTree(a);
    expect(ha).toEqual(hashTree(b));
    expect(Object.keys(ha)).toEqual(expect.arrayContaining(['config.json', 'generation_config.json', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json']));
    expect(Object.keys(ha).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);

    const config = JSON.parse(readFileSync(join(a, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ model_type: 'blip3o_qwen', architectures: ['blip3oQwenForCausalLM'], vocab_size: 151668, n_query: 64, gen_hidden_size: 1792 });
    expect(config.rope_scaling.mrope_section.reduce((s: number, x: number) => s + x, 0)).toBe(config.hidden_size / config.num_attention_heads / 2);

    const ckpt = Checkpoint.open(a);
    const H = config.hidden_size;
    expect(ckpt.info('model.embed_tokens.weight')).toMatchObject({ dtype: 'BF16', shape: [151668, H] });
    expect(ckpt.info('lm_head.weight')?.shape).toEqual([151668, H]);
    expect(ckpt.info('model.latent_queries')?.shape).toEqual([1, 64, H]);
    expect(ckpt.info('model.layers.1.self_attn.k_proj.bias')?.shape).toEqual([(H / config.num_attention_heads) * config.num_key_value_heads]);
    expect(ckpt.keys().some((k) => k.startsWith('model.gen_vision_tower.vision_tower.model.blocks.0.'))).toBe(true);
    ckpt.close();

    const tok = JSON.parse(readFileSync(join(a, 'tokenizer.json'), 'utf8'));
    const added = tok.added_tokens as { id: number; content: string }[];
    expect(added.slice(-3)).toMatchObject([{ id: 151665, content: '[IMG]' }, { id: 151666, content: '[/IMG]' }, { id: 151667, content: '<image>' }]);
    expect(Object.keys(tok.model.vocab).length + added.length).toBe(151668);
  });
});
