// Plain-TypeScript reference of BLIP3-o's NextDiTCrossAttn (Lumina-Next DiT with cross-attention), batch 1,
// following spec §3.3 step by step: BLIP3o@798b206 blip3o/model/lumina_nextdit2d.py LuminaNextDiTBlock.forward and
// diffusers@05c8b42 LuminaAttnProcessor2_0, LuminaRMSNormZero, LuminaLayerNormContinuous,
// LuminaCombinedTimestepCaptionEmbedding, get_2d_rotary_pos_embed_lumina, apply_rotary_emb(use_real=False).
// Sizes come from the weight shapes, as the graph builder's do, so the same code checks the tiny and the real model.
import { add, attention, geluTanh, layerNorm, linear, map, mul, rmsNorm, silu, sinusoid, t, type T, type Weights } from './unet_nn.ts';

const EPS = 1e-5; // NextDiTCrossAttnConfig.norm_eps

/**
 * One velocity prediction. x: [T, C] token-major latent (token = row·gridW + col); timestep: the integer-valued
 * DiT timestep (1000 = noise); z: [Tc, H] LLM hidden states (zeros for the unconditional branch). Returns [T, C].
 */
export function ditForward(w: Weights, prefix: string, x: T, timestep: number, z: T, gridH: number, gridW: number): T {
  const k = (name: string): T => w(`${prefix}${name}`);
  const heads = k('layers.0.gate').shape[0] ?? 1;
  // 1. patch embed (patch 1) and 2. caption projection Linear → GELU(tanh) → Linear
  let h = linear(x, k('patch_embedder.proj.weight'), k('patch_embedder.proj.bias'));
  const c = linear(
    geluTanh(linear(z, k('caption_projection.linear_1.weight'), k('caption_projection.linear_1.bias'))),
    k('caption_projection.linear_2.weight'),
    k('caption_projection.linear_2.bias'),
  );
  // 3. temb = MLP(sinusoid(t)) + Linear(LN(mean_tokens(c)))
  const freqDim = k('time_caption_embed.timestep_embedder.linear_1.weight').shape[1] ?? 256;
  const tFreq = sinusoid([timestep], freqDim, true, 0);
  const tEmb = linear(
    silu(linear(tFreq, k('time_caption_embed.timestep_embedder.linear_1.weight'), k('time_caption_embed.timestep_embedder.linear_1.bias'))),
    k('time_caption_embed.timestep_embedder.linear_2.weight'),
    k('time_caption_embed.timestep_embedder.linear_2.bias'),
  );
  const d = c.shape[1] ?? 1;
  const tc = c.data.length / d;
  const pooled = new Float32Array(d);
  for (let i = 0; i < tc; i++) for (let j = 0; j < d; j++) pooled[j] = (pooled[j] ?? 0) + (c.data[i * d + j] ?? 0) / tc;
  const cEmb = linear(
    layerNorm(t(pooled, [1, d]), EPS, k('time_caption_embed.caption_embedder.0.weight'), k('time_caption_embed.caption_embedder.0.bias')),
    k('time_caption_embed.caption_embedder.1.weight'),
    k('time_caption_embed.caption_embedder.1.bias'),
  );
  const temb = add(tEmb, cEmb);
  // 4. RoPE angles per token and complex pair
  const dim = h.shape[1] ?? 1;
  const hd = dim / heads;
  const angles = ropeAngles(gridH, gridW, hd);
  // 5. blocks
  for (let l = 0; ; l++) {
    let has = true;
    try {
      w(`${prefix}layers.${l}.gate`);
    } catch {
      has = false;
    }
    if (!has) break;
    h = block(w, `${prefix}layers.${l}.`, h, c, temb, heads, angles);
  }
  // 6. norm_out: LN(no affine, 1e-6)·(1 + Linear(SiLU(temb))) → Linear
  const scale = linear(silu(temb), k('norm_out.linear_1.weight'), k('norm_out.linear_1.bias'));
  const normed = rowScale(layerNorm(h, 1e-6), scale);
  return linear(normed, k('norm_out.linear_2.weight'), k('norm_out.linear_2.bias'));
}

function block(w: Weights, p: string, h: T, c: T, temb: T, heads: number, angles: Float64Array): T {
  const k = (name: string): T => w(`${p}${name}`);
  const dim = h.shape[1] ?? 1;
  const mod = linear(silu(temb), k('norm1.linear.weight'), k('norm1.linear.bias')).data; // [4·dim]
  const chunk = (i: number): T => t(mod.slice(i * dim, (i + 1) * dim), [1, dim]);
  const [sMsa, gMsa, sMlp, gMlp] = [chunk(0), chunk(1), chunk(2), chunk(3)];
  const hn = rowScale(rmsNorm(h, EPS, k('norm1.norm.weight')), sMsa);
  // self-attention: LN over the full width before the head split, RoPE on q and k, no output projection
  const q1 = rope(layerNorm(linear(hn, k('attn1.to_q.weight')), EPS, k('attn1.norm_q.weight'), k('attn1.norm_q.bias')), angles, heads);
  const k1 = rope(layerNorm(linear(hn, k('attn1.to_k.weight')), EPS, k('attn1.norm_k.weight'), k('attn1.norm_k.bias')), angles, heads);
  const v1 = linear(hn, k('attn1.to_v.weight'));
  const hd = dim / heads;
  const oSelf = attention(q1, k1, v1, heads, 1 / Math.sqrt(hd));
  // cross-attention: RMSNorm'd caption, RoPE on the query only
  const cn = rmsNorm(c, EPS, k('norm1_context.weight'));
  const q2 = rope(layerNorm(linear(hn, k('attn2.to_q.weight')), EPS, k('attn2.norm_q.weight'), k('attn2.norm_q.bias')), angles, heads);
  const k2 = layerNorm(linear(cn, k('attn2.to_k.weight')), EPS, k('attn2.norm_k.weight'), k('attn2.norm_k.bias'));
  const v2 = linear(cn, k('attn2.to_v.weight'));
  const oCross = attention(q2, k2, v2, heads, 1 / Math.sqrt(hd));
  const gate = k('gate').data;
  const mixed = map(oSelf, (v, i) => v + Math.tanh(gate[Math.floor((i % dim) / hd)] ?? 0) * (oCross.data[i] ?? 0));
  const attnOut = linear(mixed, k('attn2.to_out.0.weight'));
  const h1 = add(h, rowMul(rmsNorm(attnOut, EPS, k('norm2.weight')), map(gMsa, Math.tanh)));
  // SwiGLU FFN on the modulated sandwich-normed input
  const u = rowScale(rmsNorm(h1, EPS, k('ffn_norm1.weight')), sMlp);
  const f = linear(mul(silu(linear(u, k('feed_forward.linear_1.weight'))), linear(u, k('feed_forward.linear_3.weight'))), k('feed_forward.linear_2.weight'));
  return add(h1, rowMul(rmsNorm(f, EPS, k('ffn_norm2.weight')), map(gMlp, Math.tanh)));
}

/** θ per (token, complex pair m): pair 2j turns by row·θ_j, pair 2j+1 by col·θ_j, θ_j = 10000^(−4j/hd). */
export function ropeAngles(gridH: number, gridW: number, hd: number): Float64Array {
  const pairs = hd / 2;
  const out = new Float64Array(gridH * gridW * pairs);
  for (let r = 0; r < gridH; r++) {
    for (let col = 0; col < gridW; col++) {
      for (let m = 0; m < pairs; m++) {
        const j = m >> 1;
        const theta = 1 / 10000 ** ((2 * j) / (hd / 2));
        out[(r * gridW + col) * pairs + m] = (m % 2 === 0 ? r : col) * Math.fround(theta);
      }
    }
  }
  return out;
}

/** Rotate interleaved pairs (x[2m], x[2m+1]) of every head by the token's angle for pair m. */
function rope(x: T, angles: Float64Array, heads: number): T {
  const dim = x.shape[1] ?? 1;
  const hd = dim / heads;
  const pairs = hd / 2;
  const y = new Float32Array(x.data.length);
  for (let tok = 0; tok < x.data.length / dim; tok++) {
    for (let h = 0; h < heads; h++) {
      for (let m = 0; m < pairs; m++) {
        const a = Math.fround(angles[tok * pairs + m] ?? 0);
        const i = tok * dim + h * hd + 2 * m;
        const re = x.data[i] ?? 0;
        const im = x.data[i + 1] ?? 0;
        y[i] = re * Math.cos(a) - im * Math.sin(a);
        y[i + 1] = re * Math.sin(a) + im * Math.cos(a);
      }
    }
  }
  return t(y, x.shape);
}

/** x[r, j] · (1 + s[j]) */
function rowScale(x: T, s: T): T {
  const d = x.shape[1] ?? 1;
  return map(x, (v, i) => v * (1 + (s.data[i % d] ?? 0)));
}
/** x[r, j] · g[j] */
function rowMul(x: T, g: T): T {
  const d = x.shape[1] ?? 1;
  return map(x, (v, i) => v * (g.data[i % d] ?? 0));
}
