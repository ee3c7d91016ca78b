// The Qwen2.5-VL text decoder graph on the tiny checkpoint against the plain-TS reference (fp32, ≤ 1e-4):
// prefill logits + last_hidden_state, KV-cached decoding = full recompute, M-RoPE with identical rows = 1-D RoPE,
// and distinct (t, h, w) rows = HF's M-RoPE.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTextDecoder, buildTokenEmbedding, TextConfig } from '../../worker/builder/architectures/qwen2_5_vl_text.ts';
import { Checkpoint } from '../../worker/builder/safetensors.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { llmComponent } from '../../worker/builder/tiny/llm.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { openSession, type ModelSession, type TensorInput } from '../../worker/runtime/session.ts';
import { maxAbsDiff, randomArray } from '../reference/ops.ts';
import { mropeCosSin, referenceEmbed, referenceTextForward, ropeCosSin1d } from '../reference/qwen2_5_vl_text.ts';

const TOL = 1e-4;
const dir = mkdtempSync(join(tmpdir(), 'qwen-text-'));
let ckpt: Checkpoint;
let cfg: TextConfig;
let decoder: ModelSession;
let embedder: ModelSession;

beforeAll(async () => {
  makeTiny(dir, [llmComponent]); // the LLM part of the tiny snapshot is all this file needs
  cfg = TextConfig.parse(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));
  ckpt = Checkpoint.open(dir);
  const store = new WeightStore(ckpt);
  decoder = await openSession(buildTextDecoder(store, cfg, { dtype: 'float32' }).toBytes(), { executionProvider: 'cpu' });
  embedder = await openSession(buildTokenEmbedding(store, cfg, { dtype: 'float32' }).toBytes(), { executionProvider: 'cpu' });
  // every LLM key is declared (latent_queries is read by the convert component, not a graph)
  expect(store.unused(['model.latent_queries']).unused).toEqual([]);
}, 120_000);
afterAll(async () => {
  await decoder?.release();
  await embedder?.release();
  ckpt?.close();
  rmSync(dir, { recursive: true, force: true });
});

const hd = () => cfg.hidden_size / cfg.num_attention_heads;
function feeds(embeds: Float32Array, S: number, pos: number[][], past?: Record<string, TensorInput>, P = 0): Record<string, TensorInput> {
  const f: Record<string, TensorInput> = {
    inputs_embeds: { data: embeds, dims: [1, S, cfg.hidden_size] },
    attention_mask: { data: new BigInt64Array(P + S).fill(1n), dims: [1, P + S] },
    position_ids: { data: BigInt64Array.from(pos.flat().map(BigInt)), dims: [3, 1, S] },
  };
  for (let i = 0; i < cfg.num_hidden_layers; i++)
    for (const kv of ['key', 'value'])
      f[`past_key_values.${i}.${kv}`] = past?.[`present.${i}.${kv}`] ?? { data: new Float32Array(0), dims: [1, cfg.num_key_value_heads, 0, hd()] };
  return f;
}
const f32 = (x: { data: unknown } | undefined) => x!.data as Float32Array;

describe('qwen2_5_vl_text decoder on the tiny checkpoint', () => {
  const ids = [9707, 1879, 11, 151644, 872, 198, 151665]; // "Hello world," <|im_start|>user\n [IMG]
  const S = ids.length;
  const pos1d = ids.map((_, i) => i);

  it('embeds token ids like the table rows, and prefill matches the reference (logits and last_hidden_state)', async () => {
    const emb = await embedder.run({ input_ids: { data: BigInt64Array.from(ids.map(BigInt)), dims: [1, S] } });
    const embeds = f32(emb.inputs_embeds);
    expect(maxAbsDiff(embeds, referenceEmbed(ckpt, cfg.hidden_size, ids))).toBe(0);
    const out = await decoder.run(feeds(embeds, S, [pos1d, pos1d, pos1d]));
    expect(out.logits!.dims).toEqual([1, S, 151668]);
    const ref = referenceTextForward(ckpt, cfg, embeds, ropeCosSin1d(cfg, pos1d));
    expect(maxAbsDiff(f32(out.last_hidden_state), ref.hidden)).toBeLessThan(TOL);
    expect(maxAbsDiff(f32(out.logits), ref.logits)).toBeLessThan(TOL);
  });

  it('decoding token by token with the KV cache equals recomputing the full sequence', async () => {
    const embeds = randomArray(S * cfg.hidden_size, 7);
    const full = await decoder.run(feeds(embeds, S, [pos1d, pos1d, pos1d]));
    const H = cfg.hidden_size;
    const V = 151668;
    const prefill = 3;
    const first = pos1d.slice(0, prefill);
    let step = await decoder.run(feeds(embeds.slice(0, prefill * H), prefill, [first, first, first]));
    for (let t = prefill; t < S; t++) {
      const past = Object.fromEntries(Object.entries(step).map(([k, v]) => [k, { data: v.data as Float32Array, dims: v.dims }]));
      step = await decoder.run(feeds(embeds.slice(t * H, (t + 1) * H), 1, [[t], [t], [t]], past, t));
      expect(step['present.0.key']!.dims).toEqual([1, cfg.num_key_value_heads, t + 1, hd()]);
      expect(maxAbsDiff(f32(step.logits), f32(full.logits).subarray(t * V, (t + 1) * V))).toBeLessThan(TOL);
      expect(maxAbsDiff(f32(step.last_hidden_state), f32(full.last_hidden_state).subarray(t * H, (t + 1) * H))).toBeLessThan(TOL);
    }
  });

  it('M-RoPE with identical (t, h, w) rows is 1-D RoPE; distinct rows follow HF apply_multimodal_rotary_pos_emb', async () => {
    const embeds = randomArray(S * cfg.hidden_size, 8);
    const offset = pos1d.map((p) => p + 5);
    const same = await decoder.run(feeds(embeds, S, [offset, offset, offset]));
    const oneD = referenceTextForward(ckpt, cfg, embeds, ropeCosSin1d(cfg, offset));
    expect(maxAbsDiff(f32(same.last_hidden_state), oneD.hidden)).toBeLessThan(TOL);
    // an image-like grid: t constant, h and w walking a 2×3 grid after 1 text token
    const t = [0, 1, 1, 1, 1, 1, 1];
    const h = [0, 1, 1, 1, 2, 2, 2];
    const w = [0, 1, 2, 3, 1, 2, 3];
    const mm = await decoder.run(feeds(embeds, S, [t, h, w]));
    const ref = referenceTextForward(ckpt, cfg, embeds, mropeCosSin(cfg, [t, h, w]));
    expect(maxAbsDiff(f32(mm.last_hidden_state), ref.hidden)).toBeLessThan(TOL);
    expect(maxAbsDiff(f32(mm.logits), ref.logits)).toBeLessThan(TOL);
    expect(maxAbsDiff(f32(mm.last_hidden_state), oneD.hidden)).toBeGreaterThan(1e-3); // the rows matter
  });

  it('left padding: masked keys do not change the outputs of real tokens', async () => {
    const embeds = randomArray(S * cfg.hidden_size, 9);
    const H = cfg.hidden_size;
    const pad = 2;
    const padded = new Float32Array((S + pad) * H);
    padded.set(randomArray(pad * H, 10), 0);
    padded.set(embeds, pad * H);
    const f = feeds(padded, S + pad, [0, 0, 0].map(() => [0, 0, ...pos1d]));
    f.attention_mask = { data: BigInt64Array.from([0n, 0n, ...ids.map(() => 1n)]), dims: [1, S + pad] };
    const out = await decoder.run(f);
    const ref = await decoder.run(feeds(embeds, S, [pos1d, pos1d, pos1d]));
    expect(maxAbsDiff(f32(out.last_hidden_state).subarray(pad * H), f32(ref.last_hidden_state))).toBeLessThan(TOL);
  });
});

describe("logits: 'at' (what convert writes): each row's logits at its own position", () => {
  it('a batch of two rows asking for different positions gets exactly those rows of the full logits, and no others', async () => {
    const picking = await openSession(buildTextDecoder(new WeightStore(ckpt), cfg, { dtype: 'float32', logits: 'at' }).toBytes(), { executionProvider: 'cpu' });
    try {
      expect(picking.inputNames).toContain('logits_index');
      const H = cfg.hidden_size;
      const V = 151668;
      const S = 5;
      const pos = Array.from({ length: S }, (_, i) => i);
      const rows = [randomArray(S * H, 11), randomArray(S * H, 12)];
      const embeds = new Float32Array(2 * S * H);
      rows.forEach((r, b) => embeds.set(r, b * S * H));
      const f = feeds(embeds, S, [pos, pos, pos]);
      f.inputs_embeds = { data: embeds, dims: [2, S, H] };
      f.attention_mask = { data: new BigInt64Array(2 * S).fill(1n), dims: [2, S] };
      f.position_ids = { data: BigInt64Array.from([pos, pos, pos, pos, pos, pos].flat().map(BigInt)), dims: [3, 2, S] };
      for (const [k, v] of Object.entries(f)) if (k.startsWith('past_key_values')) f[k] = { data: v.data, dims: [2, ...v.dims.slice(1)] };
      const at = [S - 1, 1];
      const out = await picking.run({ ...f, logits_index: { data: BigInt64Array.from(at.map(BigInt)), dims: [2] } });
      expect(out.logits!.dims).toEqual([2, 1, V]);
      for (let b = 0; b < 2; b++) {
        const full = await decoder.run(feeds(rows[b]!, S, [pos, pos, pos]));
        const want = f32(full.logits).subarray(at[b]! * V, (at[b]! + 1) * V);
        expect(maxAbsDiff(f32(out.logits).subarray(b * V, (b + 1) * V), want)).toBeLessThan(TOL);
        // and not some other position's (the rows differ enough to tell)
        const other = f32(full.logits).subarray(((at[b]! + 1) % S) * V, (((at[b]! + 1) % S) + 1) * V);
        expect(maxAbsDiff(f32(out.logits).subarray(b * V, (b + 1) * V), other)).toBeGreaterThan(1e-3);
      }
    } finally {
      await picking.release();
    }
  });
});

describe('generation loop on the tiny decoder', () => {
  it('KvDecoder + generateTokens (greedy) picks the argmax of full recomputation at every step, streaming tokens', async () => {
    const { KvDecoder, generateTokens, GREEDY } = await import('../../worker/pipeline/sampling.ts');
    const H = cfg.hidden_size;
    const V = 151668;
    const embed = async (ids: number[]) => f32((await embedder.run({ input_ids: { data: BigInt64Array.from(ids.map(BigInt)), dims: [1, ids.length] } })).inputs_embeds);
    const prompt = [151644, 872, 198, 9707, 1879];
    const dec = new KvDecoder(decoder, { numLayers: cfg.num_hidden_layers, numKvHeads: cfg.num_key_value_heads, headDim: hd(), hiddenSize: H, vocabSize: V });
    const streamed: number[] = [];
    const r = await generateTokens({
      prefill: async () => (await dec.prefill(await embed(prompt))).logits,
      step: async (id) => dec.step(await embed([id])),
      promptIds: prompt, maxNewTokens: 4, stopIds: [151645, 151643], sampling: GREEDY, onToken: (id) => streamed.push(id),
    });
    expect(streamed).toEqual(r.tokens);
    // recompute the whole sequence without a cache: each generated token is the argmax at the previous position
    const all = [...prompt, ...r.tokens];
    const pos = all.map((_, i) => i);
    const full = f32((await decoder.run(feeds(await embed(all), all.length, [pos, pos, pos]))).logits);
    r.tokens.forEach((tok, k) => {
      const row = full.subarray((prompt.length - 1 + k) * V, (prompt.length + k) * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
      expect(tok).toBe(best);
    });
  });
});

describe('fp16 decoder (the GPU dtype)', () => {
  it('stores fp16 weights, keeps fp32 I/O, and stays within 1e-2 of fp32', async () => {
    const g = buildTextDecoder(new WeightStore(ckpt), cfg, { dtype: 'float16' });
    expect(g.initializers.get('model.layers.0.mlp.up_proj.weight')!.dtype).toBe('float16');
    expect(g.initializers.get('model.norm.weight')!.dtype).toBe('float16');
    const s16 = await openSession(g.toBytes(), { executionProvider: 'cpu' });
    const S = 5;
    const pos = [0, 1, 2, 3, 4];
    const embeds = randomArray(S * cfg.hidden_size, 11);
    const a = await decoder.run(feeds(embeds, S, [pos, pos, pos]));
    const b = await s16.run(feeds(embeds, S, [pos, pos, pos]));
    await s16.release();
    expect(b.last_hidden_state!.type).toBe('float32');
    expect(maxAbsDiff(f32(a.last_hidden_state), f32(b.last_hidden_state))).toBeLessThan(1e-2);
    expect(maxAbsDiff(f32(a.logits), f32(b.logits))).toBeLessThan(5e-2);
  });
});
