// BLIP3-o's NextDiTCrossAttn: a Lumina-Next DiT with cross-attention to the LLM's 64 latent-query hidden states,
// predicting the flow-matching velocity of the 64×C CLIP-feature latent (spec §3.3, pitfalls 3–7, 16, 20).
// Sources: github.com/JiuhaiChen/BLIP3o@798b206 blip3o/model/{nextdit_crossattn,lumina_nextdit2d}.py and
// diffusers@05c8b42 models/{embeddings,normalization,attention_processor}.py (Lumina helpers; = v0.32.2 math).
// Weight keys: `model.dit.model.*` in the root shards. The DiT's hyper-parameters are code constants upstream, not
// config.json fields, so every size below is read from the weight shapes (the FFN width is 4864, not 7168: pitfall 20).
//
// Graph: x [B, T, C] (token-major latent, token = row·gridW + col), timestep [B] (float, 1000 = noise),
//        z [B, Tc, H] (LLM hidden states; zeros for the unconditional branch)  →  velocity [B, T, C].
import { AppError } from '../../../src/errors.ts';
import { Graph } from '../onnx/graph.ts';
import { concat, split, type Tensor } from '../onnx/ops.ts';
import { gelu, layerNorm, linear, rmsNorm, sdpa } from '../nn.ts';
import type { Scope, WeightStore } from '../weights.ts';

const NORM_EPS = 1e-5; // NextDiTCrossAttnConfig.norm_eps
const ROPE_THETA = 10000;

/** Sizes of one DiT, all read from the checkpoint. */
export interface DitDims {
  dim: number; // D: token width
  heads: number; // from layers.0.gate [heads]
  layers: number;
  latentChannels: number; // C: patch_embedder input (patch size 1)
  captionDim: number; // H: the LLM hidden size
  tembDim: number; // min(D, 1024)
  freqDim: number; // sinusoid channels (256)
  ffnDim: number; // SwiGLU width (4864 for the real model)
  outChannels: number;
}

export function ditDims(w: Scope): DitDims {
  const need = (key: string): number[] => {
    const s = w.shape(key);
    if (!s) throw new AppError('model', `checkpoint is missing ${w.key(key)} (the DiT's sizes are read from it)`);
    return s;
  };
  const [dim, latentChannels] = need('patch_embedder.proj.weight') as [number, number];
  let layers = 0;
  while (w.has(`layers.${layers}.gate`)) layers++;
  if (layers === 0) throw new AppError('model', `no DiT layers under ${w.prefix}.layers.*`);
  return {
    dim,
    heads: need('layers.0.gate')[0]!,
    layers,
    latentChannels,
    captionDim: need('caption_projection.linear_1.weight')[1]!,
    tembDim: need('time_caption_embed.timestep_embedder.linear_1.weight')[0]!,
    freqDim: need('time_caption_embed.timestep_embedder.linear_1.weight')[1]!,
    ffnDim: need('layers.0.feed_forward.linear_1.weight')[0]!,
    outChannels: need('norm_out.linear_2.weight')[0]!,
  };
}

// ---- embeddings -------------------------------------------------------------------------------------------------

/** diffusers Timesteps(freqDim, flip_sin_to_cos=True, shift 0): [cos(t·f), sin(t·f)], f_i = exp(−ln 1e4 · i/(freqDim/2)). */
export function timestepSinusoid(t: Tensor, freqDim: number, flipSinToCos = true, shift = 0): Tensor {
  const half = freqDim / 2;
  const freqs = Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / (half - shift)));
  const arg = t.unsqueeze(-1).mul(t.sink.constant('float32', [half], freqs)); // (B, half)
  return flipSinToCos ? concat([arg.cos(), arg.sin()], -1) : concat([arg.sin(), arg.cos()], -1); // (B, freqDim)
}

/** Lumina 2-D RoPE as cos/sin tables [T, 1, hd/2, 1]: complex pair m = 2j turns by row·θ_j, m = 2j+1 by col·θ_j,
 *  θ_j = 10000^(−2j/(hd/2)) (get_2d_rotary_pos_embed_lumina; pitfall 4). */
function ropeTables(g: Graph, gridH: number, gridW: number, hd: number): { cos: Tensor; sin: Tensor } {
  const pairs = hd / 2;
  const cos: number[] = [];
  const sin: number[] = [];
  for (let r = 0; r < gridH; r++)
    for (let c = 0; c < gridW; c++)
      for (let m = 0; m < pairs; m++) {
        const theta = Math.fround(1 / ROPE_THETA ** ((2 * (m >> 1)) / pairs));
        const a = Math.fround((m % 2 === 0 ? r : c) * theta);
        cos.push(Math.cos(a));
        sin.push(Math.sin(a));
      }
  const dims = [gridH * gridW, 1, pairs, 1];
  return { cos: g.constant('float32', dims, cos), sin: g.constant('float32', dims, sin) };
}

/** Interleaved complex rotation (apply_rotary_emb use_real=False), in fp32: x (B, T, heads, hd).
 *
 *   x ─Reshape(B,T,h,hd/2,2)─Split─┬ re ─┬─Mul(cos)─Sub(im·sin)─┐
 *                                  └ im ─┴─Mul(sin)─Add(im·cos)─┴ Concat ─Reshape(B,T,h,hd)─▶
 */
function rope(x: Tensor, tables: { cos: Tensor; sin: Tensor }, heads: number, hd: number): Tensor {
  const xf = x.cast('float32').reshape(0, 0, heads, hd / 2, 2);
  const [re, im] = split(xf, [1, 1], -1) as [Tensor, Tensor];
  const outRe = re.mul(tables.cos).sub(im.mul(tables.sin));
  const outIm = re.mul(tables.sin).add(im.mul(tables.cos));
  return concat([outRe, outIm], -1).reshape(0, 0, heads, hd).cast(x.dtype);
}

// ---- block ------------------------------------------------------------------------------------------------------

/** LuminaNextDiTBlock (BLIP3o's copy):
 *
 *   h ─RMSNorm·(1+s_msa)─┬─ attn1: q,k ← LN_D(·W), RoPE(q,k), v ─ SDPA ──────────────────────┐
 *                        └─ attn2: q ← LN_D(·W) RoPE; k ← LN_D(RMSNorm(c)·W); v ─ SDPA ·tanh(gate[head]) ─ + ─ to_out
 *   h += tanh(g_msa)·RMSNorm(to_out);   h += tanh(g_mlp)·RMSNorm(W2(SiLU(W1 u) ⊙ W3 u)),  u = RMSNorm(h)·(1+s_mlp)
 */
function block(w: Scope, d: DitDims, h: Tensor, c: Tensor, siluTemb: Tensor, rt: { cos: Tensor; sin: Tensor }): Tensor {
  const hd = d.dim / d.heads;
  const [sMsa, gMsa, sMlp, gMlp] = w.within(() => split(linear(w.at('norm1').at('linear'), siluTemb, 4 * d.dim), [d.dim, d.dim, d.dim, d.dim], -1)) as [
    Tensor,
    Tensor,
    Tensor,
    Tensor,
  ]; // each (B, 1, D)
  const hn = rmsNorm(w.at('norm1').at('norm'), h, NORM_EPS).mul(sMsa.add(1));
  const heads = (x: Tensor) => x.reshape(0, 0, d.heads, hd); // (B, T, heads, hd)
  const attend = (q: Tensor, k: Tensor, v: Tensor) => sdpa(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), { scale: 1 / Math.sqrt(hd) }).transpose(0, 2, 1, 3); // (B, T, heads, hd)
  const qkNorm = (a: Scope, name: 'norm_q' | 'norm_k', x: Tensor) => layerNorm(a.at(name), x, NORM_EPS); // full width, before the head split

  const a1 = w.at('attn1');
  const oSelf = a1.within(() => {
    const q = rope(heads(qkNorm(a1, 'norm_q', linear(a1.at('to_q'), hn, d.dim, { bias: false }))), rt, d.heads, hd);
    const k = rope(heads(qkNorm(a1, 'norm_k', linear(a1.at('to_k'), hn, d.dim, { bias: false }))), rt, d.heads, hd);
    return attend(q, k, heads(linear(a1.at('to_v'), hn, d.dim, { bias: false })));
  });
  const a2 = w.at('attn2');
  const cn = rmsNorm(w.at('norm1_context'), c, NORM_EPS);
  const oCross = a2.within(() => {
    const q = rope(heads(qkNorm(a2, 'norm_q', linear(a2.at('to_q'), hn, d.dim, { bias: false }))), rt, d.heads, hd);
    const k = heads(qkNorm(a2, 'norm_k', linear(a2.at('to_k'), cn, d.dim, { bias: false })));
    return attend(q, k, heads(linear(a2.at('to_v'), cn, d.dim, { bias: false })));
  });
  const gate = w.weight('gate', [d.heads], { reshape: [d.heads, 1] });
  const mixed = w.within(() => oSelf.add(oCross.mul(gate.tanh())).reshape(0, 0, d.dim)); // (B, T, D)
  const attnOut = linear(a2.at('to_out').at(0), mixed, d.dim, { bias: false });
  const h1 = w.within(() => h.add(gMsa.tanh().mul(rmsNorm(w.at('norm2'), attnOut, NORM_EPS))));

  const ff = w.at('feed_forward');
  const u = rmsNorm(w.at('ffn_norm1'), h1, NORM_EPS).mul(sMlp.add(1));
  const f = ff.within(() => {
    const g = linear(ff.at('linear_1'), u, d.ffnDim, { bias: false }).cast('float32').silu().cast(u.dtype); // SiLU in fp32
    return linear(ff.at('linear_2'), g.mul(linear(ff.at('linear_3'), u, d.ffnDim, { bias: false })), d.dim, { bias: false });
  });
  return w.within(() => h1.add(gMlp.tanh().mul(rmsNorm(w.at('ffn_norm2'), f, NORM_EPS))));
}

// ---- build ------------------------------------------------------------------------------------------------------

export interface DitBuildOptions {
  /** Latent grid: sqrt(n_query) × sqrt(n_query) (8×8 for BLIP3-o). */
  gridH: number;
  gridW: number;
  floatType: 'float32' | 'float16';
}

/** Builds the DiT velocity graph from weights under `prefix` (default `model.dit.model`). */
export function buildDiffusionTransformer(store: WeightStore, opts: DitBuildOptions, prefix = 'model.dit.model'): { graph: Graph; dims: DitDims } {
  const g = new Graph('nextdit_crossattn');
  const w = store.scope(g, opts.floatType, prefix);
  const d = ditDims(w);
  if (d.dim % d.heads !== 0 || (d.dim / d.heads) % 4 !== 0) throw new AppError('model', `DiT width ${d.dim} does not split into ${d.heads} heads of a multiple of 4`);
  const T = opts.gridH * opts.gridW;
  const ft = opts.floatType;
  const x = g.input('x', 'float32', ['batch', T, d.latentChannels]);
  const timestep = g.input('timestep', 'float32', ['batch']);
  const z = g.input('z', 'float32', ['batch', 'caption_tokens', d.captionDim]);

  // patch embed (patch 1: a token is the channel vector) and caption projection Linear → GELU(tanh) → Linear
  let h = linear(w.at('patch_embedder').at('proj'), x.cast(ft), d.dim); // (B, T, D)
  const cp = w.at('caption_projection');
  const c = linear(cp.at('linear_2'), gelu(linear(cp.at('linear_1'), z.cast(ft), d.dim), 'tanh'), d.dim); // (B, Tc, D)

  // temb = MLP(sinusoid(t)) + Linear(LN(mean over caption tokens of c))   (pooling after the projection: pitfall 7)
  const tce = w.at('time_caption_embed');
  const te = tce.at('timestep_embedder');
  const temb = tce.within(() => {
    const tFreq = timestepSinusoid(timestep, d.freqDim).cast(ft).unsqueeze(1); // (B, 1, freqDim)
    const tEmb = linear(te.at('linear_2'), linear(te.at('linear_1'), tFreq, d.tembDim).silu(), d.tembDim);
    const ce = tce.at('caption_embedder');
    const cEmb = linear(ce.at(1), layerNorm(ce.at(0), c.mean([1]), NORM_EPS), d.tembDim);
    return tEmb.add(cEmb); // (B, 1, tembDim)
  });
  const siluTemb = temb.silu();

  const rt = g.within('/model/dit/rope', () => ropeTables(g, opts.gridH, opts.gridW, d.dim / d.heads));
  for (let l = 0; l < d.layers; l++) h = block(w.at('layers').at(l), d, h, c, siluTemb, rt);

  // norm_out: LayerNorm(no affine, 1e-6)·(1 + Linear(SiLU(temb))) → Linear
  const no = w.at('norm_out');
  const y = no.within(() => {
    const scale = linear(no.at('linear_1'), siluTemb, d.dim); // (B, 1, D)
    const normed = layerNorm(no, h, 1e-6, { affine: false }).mul(scale.add(1));
    return linear(no.at('linear_2'), normed, d.outChannels);
  });
  g.output(y.cast('float32'), 'velocity');
  return { graph: g, dims: d };
}

// ---- convert component ----------------------------------------------------------------------------------------
// Registered in architectures/index.ts. Typed structurally (BuildContext's members it uses) so this file does not
// import the table that imports it.

interface RootBuildContext {
  config: Record<string, unknown>;
  dtype: 'fp32' | 'fp16';
  store: WeightStore;
}

/** The DiT velocity graph from the root shards; the latent grid is √n_query × √n_query (config.json n_query). */
export const diffusionTransformerComponent = {
  name: 'dit',
  build(ctx: RootBuildContext) {
    const nQuery = typeof ctx.config.n_query === 'number' ? ctx.config.n_query : 64;
    const grid = Math.round(Math.sqrt(nQuery));
    if (grid * grid !== nQuery) throw new AppError('model', `config.json n_query ${nQuery} is not a square grid of DiT tokens`);
    const floatType = ctx.dtype === 'fp16' ? 'float16' : 'float32';
    const { graph, dims } = buildDiffusionTransformer(ctx.store, { gridH: grid, gridW: grid, floatType });
    return {
      graphs: [{ file: 'generation/dit.onnx', graph, dtype: ctx.dtype }],
      info: { n_query: nQuery, grid, ...dims },
    };
  },
};
