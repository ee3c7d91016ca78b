// Qwen2.5-VL text decoder (the LLM of BLIP3-o) with KV cache and M-RoPE, plus its token-embedding graph.
// Reference: transformers modeling_qwen2_5_vl.py (Qwen2_5_VLTextModel, Qwen2_5_VLDecoderLayer, Qwen2_5_VLAttention,
// Qwen2MLP, Qwen2RMSNorm, Qwen2_5_VLRotaryEmbedding, apply_multimodal_rotary_pos_emb) at 00b676f8; spec §2.4, §3.2.
// Weight keys (transformers-4.51 layout): model.embed_tokens, model.layers.N.*, model.norm, lm_head (optional when
// tie_word_embeddings). I/O names follow HF Optimum / transformers.js:
//
//   inputs:  inputs_embeds (B, S, H) f32 · attention_mask (B, P+S) i64 · position_ids (3, B, S) i64
//            past_key_values.{i}.key / .value (B, kvH, P, hd) f32 · logits_index (B) i64 (with logits: 'at' only)
//   outputs: logits (B, S, V) f32, or (B, 1, V) with logits: 'at' · last_hidden_state (B, S, H) f32 (after model.norm)
//            present.{i}.key / .value (B, kvH, P+S, hd) f32
//
// Graph I/O is always float32 so callers feed Float32Arrays; with dtype fp16 the weights and the compute inside are
// fp16 (norm statistics and softmax stay fp32).
import { z } from 'zod';
import { Graph } from '../onnx/graph.ts';
import { and, cast, concat, lessOrEqual, range, split, where, type Tensor } from '../onnx/ops.ts';
import { linear, rmsNorm, sdpa } from '../nn.ts';
import type { NBitsOptions } from '../quant.ts';
import type { Scope, WeightStore } from '../weights.ts';

/** The text fields of config.json, keys verbatim (root level in transformers 4.51 checkpoints). */
export const TextConfig = z.looseObject({
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_key_value_heads: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
  rms_norm_eps: z.number().positive(),
  rope_theta: z.number().positive(),
  rope_scaling: z.looseObject({ mrope_section: z.array(z.number().int().positive()).length(3) }),
  tie_word_embeddings: z.boolean().default(false),
  hidden_act: z.literal('silu').default('silu'),
});
export type TextConfig = z.infer<typeof TextConfig>;

export const headDim = (c: TextConfig) => c.hidden_size / c.num_attention_heads;

/** Which of the (t, h, w) position rows drives each of the hd/2 rotary frequencies: mrope_section [16, 24, 24] →
 *  16 zeros, 24 ones, 24 twos (apply_multimodal_rotary_pos_emb's split of cat(freqs, freqs), half by half). */
export function mropeRowOfFrequency(c: TextConfig): number[] {
  const rows: number[] = [];
  c.rope_scaling.mrope_section.forEach((n, row) => rows.push(...Array<number>(n).fill(row)));
  if (rows.length !== headDim(c) / 2) throw new Error(`mrope_section ${c.rope_scaling.mrope_section} does not sum to head_dim/2 = ${headDim(c) / 2}`);
  return rows;
}

/** inv_freq_i = θ^(−2i/hd), i < hd/2 (Qwen2_5_VLRotaryEmbedding, default rope type). */
export const inverseFrequencies = (c: TextConfig) => Array.from({ length: headDim(c) / 2 }, (_, i) => 1 / c.rope_theta ** ((2 * i) / headDim(c)));

interface Rope {
  cos: Tensor; // (B, 1, S, hd)
  sin: Tensor;
}

/** M-RoPE tables from position_ids (3, B, S): angle[b, s, j] = pos[row(j), b, s] · inv_freq[j mod hd/2] over
 *  cat(freqs, freqs). With identical rows this is ordinary 1-D RoPE.
 *
 *   position_ids ─Cast(f32)─Transpose(1,2,0)─Gather(rows, axis 2)─Mul(inv_freq)─Concat(self, self)─┬─Cos─▶ cos
 *                                                                                                └─Sin─▶ sin
 */
function mrope(g: Graph, c: TextConfig, positionIds: Tensor, dtype: 'float32' | 'float16'): Rope {
  return g.within('/model/rotary_emb', () => {
    const rows = g.constant('int64', [headDim(c) / 2], mropeRowOfFrequency(c));
    const invFreq = g.constant('float32', [headDim(c) / 2], inverseFrequencies(c));
    const pos = positionIds.cast('float32').transpose(1, 2, 0); // (B, S, 3)
    const freqs = pos.gather(rows, 2).mul(invFreq); // (B, S, hd/2)
    const emb = concat([freqs, freqs], -1).unsqueeze(1); // (B, 1, S, hd)
    return { cos: emb.cos().cast(dtype), sin: emb.sin().cast(dtype) };
  });
}

/** x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x₂, x₁) over the two halves of hd. */
function applyRope(x: Tensor, rope: Rope): Tensor {
  const hd = x.size(-1);
  const [x1, x2] = split(x, [hd / 2, hd / 2], -1);
  return x.mul(rope.cos).add(concat([x2!.neg(), x1!], -1).mul(rope.sin));
}

/** Additive mask (B, 1, S, P+S): 0 where key j ≤ query P+i and attention_mask[b, j] = 1, else the fp32 minimum.
 *
 *   Range(P, P+S)─Unsqueeze(1)─┐
 *   Range(0, P+S)──────────────LessOrEqual─┐
 *   attention_mask─Cast(bool)─Unsqueeze(1,2)┴And─Where(0, min)─▶ (B, 1, S, P+S)
 */
function causalMask(g: Graph, attentionMask: Tensor, pastLen: Tensor, seqLen: Tensor): Tensor {
  return g.within('/model/attn_mask', () => {
    const one = g.constant('int64', [], [1]);
    const zero = g.constant('int64', [], [0]);
    const total = pastLen.add(seqLen);
    const queries = range(pastLen, total, one).unsqueeze(1); // (S, 1)
    const keys = range(zero, total, one).unsqueeze(0); // (1, P+S)
    const causal = lessOrEqual(keys, queries); // (S, P+S)
    const keep = and(causal, cast(attentionMask, 'bool').unsqueeze(1, 2)); // (B, 1, S, P+S)
    return where(keep, g.constant('float32', [], [0]), g.constant('float32', [], [-3.4028234663852886e38]));
  });
}

/** Qwen2_5_VLAttention with GQA and KV cache. q/k/v have biases, o_proj has none. */
function attention(w: Scope, c: TextConfig, x: Tensor, rope: Rope, mask: Tensor, past: { key: Tensor; value: Tensor }) {
  const H = c.hidden_size;
  const hd = headDim(c);
  const nh = c.num_attention_heads;
  const nkv = c.num_key_value_heads;
  const q = linear(w.at('q_proj'), x, nh * hd).reshape(0, 0, nh, hd).transpose(0, 2, 1, 3); // (B, nh, S, hd)
  const k = linear(w.at('k_proj'), x, nkv * hd).reshape(0, 0, nkv, hd).transpose(0, 2, 1, 3); // (B, nkv, S, hd)
  const v = linear(w.at('v_proj'), x, nkv * hd).reshape(0, 0, nkv, hd).transpose(0, 2, 1, 3);
  return w.within(() => {
    const key = concat([past.key, applyRope(k, rope)], 2); // (B, nkv, P+S, hd)
    const value = concat([past.value, v], 2);
    // GQA without copying K/V: group the nh query heads as (nkv, nh/nkv) and broadcast K/V over the group.
    const qg = applyRope(q, rope).reshape(0, nkv, nh / nkv, -1, hd); // (B, nkv, G, S, hd)
    const o = sdpa(qg, key.unsqueeze(2), value.unsqueeze(2), { mask: mask.unsqueeze(1) }); // (B, nkv, G, S, hd)
    const merged = o.reshape(0, nh, -1, hd).transpose(0, 2, 1, 3).reshape(0, 0, nh * hd); // (B, S, H)
    return { out: linear(w.at('o_proj'), merged, H, { bias: false }), present: { key, value } };
  });
}

/** Qwen2MLP: down(SiLU(gate(x)) ⊙ up(x)), no biases. (B, S, H) → (B, S, I) → (B, S, H) */
function mlp(w: Scope, c: TextConfig, x: Tensor): Tensor {
  const I = c.intermediate_size;
  const gated = linear(w.at('gate_proj'), x, I, { bias: false }).silu();
  return linear(w.at('down_proj'), gated.mul(linear(w.at('up_proj'), x, I, { bias: false })), c.hidden_size, { bias: false });
}

/** Qwen2_5_VLDecoderLayer: pre-norm residual, twice. */
function decoderLayer(w: Scope, c: TextConfig, x: Tensor, rope: Rope, mask: Tensor, past: { key: Tensor; value: Tensor }) {
  const attn = attention(w.at('self_attn'), c, rmsNorm(w.at('input_layernorm'), x, c.rms_norm_eps), rope, mask, past);
  const h = w.within(() => x.add(attn.out));
  return { out: w.within(() => h.add(mlp(w.at('mlp'), c, rmsNorm(w.at('post_attention_layernorm'), h, c.rms_norm_eps)))), present: attn.present };
}

export interface TextBuildOptions {
  dtype: 'float32' | 'float16';
  /** Block-quantize every Linear of the layers and lm_head (MatMulNBits); norms, rotary and the embedding table
   *  stay in `dtype`. */
  quant?: NBitsOptions;
  /** 'at': the logits of one position per row, [B, 1, V], the position given by the input logits_index [B] (HF's
   *  logits_to_keep, per row). All the KV-cached decoder ever samples from is one position per row: a prompt's last
   *  token, or each right-padded row's own last token in a batched forward (KvDecoder.continueBatch). A prefill of S
   *  tokens then neither computes nor returns S × 151668 logits (at S = 1 000 on BLIP3o-4B: 1.2 TFLOP of lm_head and
   *  0.6 GB from GPU to host under WebGPU). What convert writes. 'all': [B, S, V], every position (the reference
   *  tests compare them all). @defaultValue 'all' */
  logits?: 'all' | 'at';
}

/** The decoder graph (one graph for prefill and decode: P = 0 for prefill). */
export function buildTextDecoder(store: WeightStore, c: TextConfig, opts: TextBuildOptions): Graph {
  const g = new Graph('qwen2_5_vl_text_decoder');
  const root = store.scope(g, opts.dtype);
  const H = c.hidden_size;
  const hd = headDim(c);
  const embeds = g.input('inputs_embeds', 'float32', ['batch_size', 'sequence_length', H]);
  const attentionMask = g.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
  const positionIds = g.input('position_ids', 'int64', [3, 'batch_size', 'sequence_length']);
  const pasts = Array.from({ length: c.num_hidden_layers }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, 'float32', ['batch_size', c.num_key_value_heads, 'past_sequence_length', hd]).cast(opts.dtype),
    value: g.input(`past_key_values.${i}.value`, 'float32', ['batch_size', c.num_key_value_heads, 'past_sequence_length', hd]).cast(opts.dtype),
  }));
  const rope = mrope(g, c, positionIds, opts.dtype);
  const mask = causalMask(g, attentionMask, pasts[0]!.key.shapeOf(2, 3).squeeze(0), embeds.shapeOf(1, 2).squeeze(0)); // scalars P, S

  const model = root.at('model');
  let x = embeds.cast(opts.dtype);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const layer = decoderLayer(model.at('layers').at(i).withQuant(opts.quant), c, x, rope, mask, pasts[i]!);
    x = layer.out;
    g.output(layer.present.key.cast('float32'), `present.${i}.key`);
    g.output(layer.present.value.cast('float32'), `present.${i}.value`);
  }
  const hidden = rmsNorm(model.at('norm'), x, c.rms_norm_eps);
  g.output(hidden.cast('float32'), 'last_hidden_state');
  // lm_head; with tie_word_embeddings and no stored lm_head.weight, the embedding table is the head (spec §1.3).
  const head = (root.has('lm_head.weight') || !c.tie_word_embeddings ? root.at('lm_head') : model.at('embed_tokens')).withQuant(opts.quant);
  const headIn = opts.logits === 'at' ? pickRows(g, hidden, H) : hidden;
  g.output(linear(head, headIn, c.vocab_size, { bias: false }).cast('float32'), 'logits');
  return g;
}

/** hidden (B, S, H) → (B, 1, H): row b's position logits_index[b]; a Gather over the flattened rows at b·S + index. */
function pickRows(g: Graph, hidden: Tensor, H: number): Tensor {
  const index = g.input('logits_index', 'int64', ['batch_size']);
  return g.within('/model/pick_logits_rows', () => {
    const BS = hidden.shapeOf(0, 2); // [B, S]
    const rowStart = range(g.constant('int64', [], [0]), BS.slice(0, 0, 1).squeeze(0), g.constant('int64', [], [1])).mul(BS.slice(0, 1, 2).squeeze(0)); // [B]: b·S
    return hidden.reshape(-1, H).gather(rowStart.add(index), 0).unsqueeze(1);
  });
}

/** input_ids (B, S) → inputs_embeds (B, S, H) f32: a Gather over model.embed_tokens. */
export function buildTokenEmbedding(store: WeightStore, c: TextConfig, opts: TextBuildOptions): Graph {
  const g = new Graph('qwen2_5_vl_text_embedding');
  const w = store.scope(g, opts.dtype).at('model').at('embed_tokens');
  const ids = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const table = w.weight('weight', [c.vocab_size, c.hidden_size]);
  g.output(w.within(() => table.gather(ids, 0).cast('float32')), 'inputs_embeds');
  return g;
}

/** BLIP3-o's 64 learned queries appended after `[IMG]` for generation (spec §3.1): (1, n_query, H) fp32. */
export function readLatentQueries(store: WeightStore, c: TextConfig & { n_query?: number }): { dims: number[]; data: Float32Array } {
  const dims = [1, c.n_query ?? 64, c.hidden_size];
  return { dims, data: store.read('model.latent_queries', dims) };
}
