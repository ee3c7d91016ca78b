// Plain-TypeScript reference forward of the Qwen2.5-VL text decoder (transformers modeling_qwen2_5_vl.py), written
// from the HF code path, not from the graph: repeat_kv for GQA, apply_multimodal_rotary_pos_emb's literal
// split/cat of cos/sin by mrope_section·2, a dense causal mask. Batch 1, no cache: it recomputes everything.
import type { Checkpoint } from '../../worker/builder/safetensors.ts';
import { linear, rmsNorm, softmax } from './ops.ts';

export interface RefTextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: { mrope_section: number[] };
  tie_word_embeddings?: boolean;
}

/** cos/sin (S, hd) for position rows pos[3][S] exactly as HF: emb = cat(freqs, freqs) per row, then the
 *  mrope_section·2 chunks of the last axis taken from row i % 3. */
export function mropeCosSin(c: RefTextConfig, pos: number[][]): { cos: Float64Array; sin: Float64Array } {
  const hd = c.hidden_size / c.num_attention_heads;
  const S = pos[0]!.length;
  const invFreq = Array.from({ length: hd / 2 }, (_, i) => 1 / c.rope_theta ** ((2 * i) / hd));
  const sections = [...c.rope_scaling.mrope_section, ...c.rope_scaling.mrope_section];
  const cos = new Float64Array(S * hd);
  const sin = new Float64Array(S * hd);
  for (let s = 0; s < S; s++) {
    let d = 0;
    sections.forEach((len, chunk) => {
      const row = pos[chunk % 3]!;
      for (let k = 0; k < len; k++, d++) {
        const angle = row[s]! * invFreq[d % (hd / 2)]!;
        cos[s * hd + d] = Math.cos(angle);
        sin[s * hd + d] = Math.sin(angle);
      }
    });
  }
  return { cos, sin };
}

/** Plain 1-D RoPE (Qwen2 / Llama): angle = p · inv_freq over cat(freqs, freqs). */
export function ropeCosSin1d(c: RefTextConfig, pos: number[]): { cos: Float64Array; sin: Float64Array } {
  const hd = c.hidden_size / c.num_attention_heads;
  const cos = new Float64Array(pos.length * hd);
  const sin = new Float64Array(pos.length * hd);
  pos.forEach((p, s) => {
    for (let d = 0; d < hd; d++) {
      const angle = p * (1 / c.rope_theta ** ((2 * (d % (hd / 2))) / hd));
      cos[s * hd + d] = Math.cos(angle);
      sin[s * hd + d] = Math.sin(angle);
    }
  });
  return { cos, sin };
}

function rope(x: Float32Array, S: number, heads: number, hd: number, cos: Float64Array, sin: Float64Array): Float32Array {
  // x laid out (S, heads, hd)
  const out = new Float32Array(x.length);
  for (let s = 0; s < S; s++)
    for (let h = 0; h < heads; h++) {
      const o = (s * heads + h) * hd;
      for (let d = 0; d < hd; d++) {
        const rot = d < hd / 2 ? -x[o + d + hd / 2]! : x[o + d - hd / 2]!;
        out[o + d] = x[o + d]! * cos[s * hd + d]! + rot * sin[s * hd + d]!;
      }
    }
  return out;
}

export interface RefOutput {
  logits: Float32Array; // (S, V)
  hidden: Float32Array; // (S, H) after model.norm
}

export function referenceTextForward(ckpt: Checkpoint, c: RefTextConfig, embeds: Float32Array, cosSin: { cos: Float64Array; sin: Float64Array }): RefOutput {
  const H = c.hidden_size;
  const nh = c.num_attention_heads;
  const nkv = c.num_key_value_heads;
  const hd = H / nh;
  const S = embeds.length / H;
  const W = (k: string) => ckpt.readFloat32(k);
  let x = embeds.slice();
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const h = rmsNorm(x, W(`${p}input_layernorm.weight`), S, H, c.rms_norm_eps);
    const q = rope(linear(h, W(`${p}self_attn.q_proj.weight`), W(`${p}self_attn.q_proj.bias`), S, H, nh * hd), S, nh, hd, cosSin.cos, cosSin.sin);
    const k = rope(linear(h, W(`${p}self_attn.k_proj.weight`), W(`${p}self_attn.k_proj.bias`), S, H, nkv * hd), S, nkv, hd, cosSin.cos, cosSin.sin);
    const v = linear(h, W(`${p}self_attn.v_proj.weight`), W(`${p}self_attn.v_proj.bias`), S, H, nkv * hd);
    const attn = new Float32Array(S * nh * hd);
    const scores = new Float32Array(S);
    for (let head = 0; head < nh; head++) {
      const kvh = Math.floor(head / (nh / nkv)); // repeat_kv
      for (let i = 0; i < S; i++) {
        for (let j = 0; j < S; j++) {
          let d = 0;
          for (let e = 0; e < hd; e++) d += q[(i * nh + head) * hd + e]! * k[(j * nkv + kvh) * hd + e]!;
          scores[j] = j <= i ? d / Math.sqrt(hd) : -Infinity;
        }
        const pr = softmax(scores, 1, S);
        for (let e = 0; e < hd; e++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) acc += pr[j]! * v[(j * nkv + kvh) * hd + e]!;
          attn[(i * nh + head) * hd + e] = acc;
        }
      }
    }
    const o = linear(attn, W(`${p}self_attn.o_proj.weight`), undefined, S, nh * hd, H);
    for (let i = 0; i < x.length; i++) x[i] = x[i]! + o[i]!;
    const h2 = rmsNorm(x, W(`${p}post_attention_layernorm.weight`), S, H, c.rms_norm_eps);
    const I = c.intermediate_size;
    const gate = linear(h2, W(`${p}mlp.gate_proj.weight`), undefined, S, H, I);
    const up = linear(h2, W(`${p}mlp.up_proj.weight`), undefined, S, H, I);
    for (let i = 0; i < gate.length; i++) gate[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
    const down = linear(gate, W(`${p}mlp.down_proj.weight`), undefined, S, I, H);
    for (let i = 0; i < x.length; i++) x[i] = x[i]! + down[i]!;
  }
  const hidden = rmsNorm(x, W('model.norm.weight'), S, H, c.rms_norm_eps);
  const head = ckpt.info('lm_head.weight') ? W('lm_head.weight') : W('model.embed_tokens.weight');
  return { logits: linear(hidden, head, undefined, S, H, c.vocab_size), hidden };
}

/** Rows of model.embed_tokens for `ids`, as fp32. */
export function referenceEmbed(ckpt: Checkpoint, H: number, ids: number[]): Float32Array {
  const table = ckpt.readFloat32('model.embed_tokens.weight');
  const out = new Float32Array(ids.length * H);
  ids.forEach((id, s) => out.set(table.subarray(id * H, (id + 1) * H), s * H));
  return out;
}
