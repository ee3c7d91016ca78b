// The Emu2 diffusion decoder's UNet2DConditionModel: SDXL topology conditioned on 64 CLIP-feature tokens
// (cross_attention_dim 1792) and a "text_time" add embedding of the mean-pooled features plus six size ids
// (projection_class_embeddings_input_dim 3328 = 1792 + 6·256). Spec §1.4, §4 and pitfall 9.
// Sources: diffusers@05c8b42 models/unets/unet_2d_condition.py (forward), unets/unet_2d_blocks.py (CrossAttnDownBlock2D,
// DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D, UpBlock2D), resnet.py (ResnetBlock2D, Downsample2D,
// Upsample2D), transformers/transformer_2d.py (use_linear_projection), attention.py (BasicTransformerBlock, GEGLU).
// Weight keys: diffusion-decoder/unet/diffusion_pytorch_model*.safetensors, standard diffusers names.
//
// Graph: sample [B, 4, h, w] (h, w any multiple of 2^(blocks−1)), timestep [B] (float, e.g. 981.0),
//        encoder_hidden_states [B, Tc, cross], text_embeds [B, cross], time_ids [B, 6]  →  noise_pred [B, 4, h, w].
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../../../src/errors.ts';
import { Graph } from '../onnx/graph.ts';
import { concat, resizeNearest, split, type Tensor } from '../onnx/ops.ts';
import { conv2d, gelu, groupNorm, layerNorm, linear, sdpa } from '../nn.ts';
import type { Scope, WeightStore } from '../weights.ts';
import { timestepSinusoid } from './diffusion_transformer.ts';

/** diffusion-decoder/unet/config.json, HF keys verbatim; values outside what this builder implements are refused. */
export const UNetConfig = z.looseObject({
  in_channels: z.number().int().positive(),
  out_channels: z.number().int().positive(),
  sample_size: z.number().int().positive(),
  block_out_channels: z.array(z.number().int().positive()).min(1),
  down_block_types: z.array(z.enum(['DownBlock2D', 'CrossAttnDownBlock2D'])),
  up_block_types: z.array(z.enum(['UpBlock2D', 'CrossAttnUpBlock2D'])),
  mid_block_type: z.literal('UNetMidBlock2DCrossAttn').default('UNetMidBlock2DCrossAttn'),
  layers_per_block: z.number().int().positive(),
  transformer_layers_per_block: z.union([z.number().int().positive(), z.array(z.number().int().positive())]).default(1),
  /** Legacy diffusers naming: this is the number of heads per block (num_attention_heads wins when set). */
  attention_head_dim: z.union([z.number().int().positive(), z.array(z.number().int().positive())]),
  num_attention_heads: z.union([z.number().int().positive(), z.array(z.number().int().positive())]).nullish(),
  cross_attention_dim: z.number().int().positive(),
  use_linear_projection: z.literal(true),
  addition_embed_type: z.literal('text_time'),
  addition_time_embed_dim: z.number().int().positive(),
  projection_class_embeddings_input_dim: z.number().int().positive(),
  flip_sin_to_cos: z.boolean().default(true),
  freq_shift: z.number().default(0),
  act_fn: z.literal('silu').default('silu'),
  norm_num_groups: z.number().int().positive().default(32),
  norm_eps: z.number().positive().default(1e-5),
  time_embedding_type: z.literal('positional').default('positional'),
  class_embed_type: z.null().nullish(),
  encoder_hid_dim_type: z.null().nullish(),
  only_cross_attention: z.literal(false).default(false),
  resnet_time_scale_shift: z.literal('default').default('default'),
  conv_in_kernel: z.literal(3).default(3),
  conv_out_kernel: z.literal(3).default(3),
  dual_cross_attention: z.literal(false).default(false),
  center_input_sample: z.literal(false).default(false),
  time_cond_proj_dim: z.null().nullish(),
});
export type UNetConfig = z.infer<typeof UNetConfig>;

export function parseUNetConfig(raw: unknown): UNetConfig {
  const r = UNetConfig.safeParse(raw);
  if (!r.success) throw new AppError('model', `unsupported unet/config.json: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const c = r.data;
  const n = c.block_out_channels.length;
  if (c.down_block_types.length !== n || c.up_block_types.length !== n) throw new AppError('model', `unet/config.json: ${n} block_out_channels but ${c.down_block_types.length} down / ${c.up_block_types.length} up blocks`);
  if (c.projection_class_embeddings_input_dim !== c.cross_attention_dim + 6 * c.addition_time_embed_dim)
    throw new AppError('model', `unet/config.json: projection_class_embeddings_input_dim ${c.projection_class_embeddings_input_dim} ≠ cross_attention_dim + 6·addition_time_embed_dim`);
  return c;
}

const perBlock = (v: number | number[], n: number): number[] => (Array.isArray(v) ? v : Array.from({ length: n }, () => v));
/** Latent sides must divide by this (one halving per downsampler). */
export const unetLatentMultiple = (c: UNetConfig): number => 2 ** (c.block_out_channels.length - 1);

// ---- shared diffusers blocks (also used by vae_decoder.ts) -------------------------------------------------------

/** ResnetBlock2D (resnet_time_scale_shift "default", output_scale_factor 1):
 *
 *   x ─GN─SiLU─conv3×3─(+ Linear(SiLU(temb))[:, :, None, None])─GN─SiLU─conv3×3─┐
 *   └──────────────────────── conv_shortcut 1×1 (only when channels change) ──── + ─▶
 */
export function resnetBlock2D(w: Scope, x: Tensor, outCh: number, temb: Tensor | undefined, groups: number, eps: number): Tensor {
  const inCh = x.size(1);
  let h = conv2d(w.at('conv1'), groupNorm(w.at('norm1'), x, groups, eps).silu(), outCh, { kernel: 3, padding: 1 });
  if (temb) h = w.within(() => h.add(linear(w.at('time_emb_proj'), temb.silu(), outCh).unsqueeze(2, 3)));
  h = conv2d(w.at('conv2'), groupNorm(w.at('norm2'), h, groups, eps).silu(), outCh, { kernel: 3, padding: 1 });
  const shortcut = inCh === outCh ? x : conv2d(w.at('conv_shortcut'), x, outCh, { kernel: 1 });
  return w.within(() => shortcut.add(h));
}

/** Upsample2D: nearest ×2 then conv3×3. */
export function upsample2D(w: Scope, x: Tensor): Tensor {
  const up = w.within(() => resizeNearest(x, [1, 1, 2, 2]));
  return conv2d(w.at('conv'), up, x.size(1), { kernel: 3, padding: 1 });
}

/** (B, C, h, w) → (B, h·w, C) */
export const toTokens = (x: Tensor): Tensor => x.reshape(0, x.size(1), -1).transpose(0, 2, 1);
/** (B, h·w, C) → (B, C, h, w) shaped like `like` */
export const fromTokens = (x: Tensor, like: Tensor): Tensor => x.transpose(0, 2, 1).reshape(like.shapeOf());

/** Multi-head attention with separate q/k/v projections and to_out.0 (bias on the projections as given). */
export function attention(w: Scope, q: Tensor, kv: Tensor, heads: number, qkvBias: boolean): Tensor {
  const C = q.size(-1);
  const hd = C / heads;
  const split4 = (t: Tensor) => t.reshape(0, 0, heads, hd).transpose(0, 2, 1, 3); // (B, heads, T, hd)
  const o = w.within(() => {
    const Q = split4(linear(w.at('to_q'), q, C, { bias: qkvBias }));
    const K = split4(linear(w.at('to_k'), kv, C, { bias: qkvBias }));
    const V = split4(linear(w.at('to_v'), kv, C, { bias: qkvBias }));
    return sdpa(Q, K, V, { scale: 1 / Math.sqrt(hd) }).transpose(0, 2, 1, 3).reshape(0, 0, C); // (B, T, C)
  });
  return linear(w.at('to_out').at(0), o, C);
}

// ---- transformer --------------------------------------------------------------------------------------------------

/** BasicTransformerBlock: x += attn1(LN x); x += attn2(LN x, enc); x += GEGLU-FF(LN x). */
function basicTransformerBlock(w: Scope, x: Tensor, enc: Tensor, heads: number): Tensor {
  const C = x.size(-1);
  let h = w.within(() => x.add(attention(w.at('attn1'), layerNorm(w.at('norm1'), x, 1e-5), layerNorm(w.at('norm1'), x, 1e-5), heads, false)));
  h = w.within(() => h.add(attention(w.at('attn2'), layerNorm(w.at('norm2'), h, 1e-5), enc, heads, false)));
  const ff = w.at('ff').at('net');
  const f = ff.within(() => {
    const [a, g] = split(linear(ff.at(0).at('proj'), layerNorm(w.at('norm3'), h, 1e-5), 8 * C), [4 * C, 4 * C], -1) as [Tensor, Tensor];
    return linear(ff.at(2), a.mul(gelu(g, 'erf')), C);
  });
  return w.within(() => h.add(f));
}

/** Transformer2DModel with use_linear_projection: GN(eps 1e-6) → proj_in → n blocks → proj_out → + residual. */
function transformer2D(w: Scope, x: Tensor, enc: Tensor, heads: number, nLayers: number, groups: number): Tensor {
  const C = x.size(1);
  let h = linear(w.at('proj_in'), w.within(() => toTokens(groupNorm(w.at('norm'), x, groups, 1e-6))), C);
  for (let l = 0; l < nLayers; l++) h = basicTransformerBlock(w.at('transformer_blocks').at(l), h, enc, heads);
  const out = linear(w.at('proj_out'), h, C);
  return w.within(() => fromTokens(out, x).add(x));
}

// ---- build ------------------------------------------------------------------------------------------------------

export interface UNetBuildOptions {
  floatType: 'float32' | 'float16';
  /** Build only the first `maxTransformerLayers` blocks of each transformer (benchmarks of the real config). */
  maxTransformerLayers?: number;
}

export function buildSdxlUNet(store: WeightStore, raw: unknown, opts: UNetBuildOptions): { graph: Graph; config: UNetConfig } {
  const c = parseUNetConfig(raw);
  const g = new Graph('unet_2d_condition');
  const w = store.scope(g, opts.floatType);
  const ft = opts.floatType;
  const n = c.block_out_channels.length;
  const heads = perBlock(c.num_attention_heads ?? c.attention_head_dim, n);
  const tLayers = perBlock(c.transformer_layers_per_block, n).map((l) => Math.min(l, opts.maxTransformerLayers ?? l));
  const G = c.norm_num_groups;
  const eps = c.norm_eps;
  const ch0 = c.block_out_channels[0]!;
  const timeDim = w.shape('time_embedding.linear_1.weight')?.[0] ?? 4 * ch0;

  const sample = g.input('sample', 'float32', ['batch', c.in_channels, 'height', 'width']);
  const timestep = g.input('timestep', 'float32', ['batch']);
  const encIn = g.input('encoder_hidden_states', 'float32', ['batch', 'tokens', c.cross_attention_dim]);
  const textEmbeds = g.input('text_embeds', 'float32', ['batch', c.cross_attention_dim]);
  const timeIds = g.input('time_ids', 'float32', ['batch', 6]);
  const enc = encIn.cast(ft);

  // time embedding + text_time add embedding: cat(text_embeds, sinusoid(each of the six ids)) → MLP; summed
  const te = w.at('time_embedding');
  const tEmb = linear(te.at('linear_2'), linear(te.at('linear_1'), te.within(() => timestepSinusoid(timestep, ch0, c.flip_sin_to_cos, c.freq_shift)).cast(ft), timeDim).silu(), timeDim);
  const ae = w.at('add_embedding');
  const addIn = ae.within(() => {
    const ids = timestepSinusoid(timeIds.reshape(-1), c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift); // (B·6, 256)
    return concat([textEmbeds, ids.reshape(-1, 6 * c.addition_time_embed_dim)], -1).cast(ft); // (B, 3328)
  });
  const temb = g.within('/model/temb', () => tEmb.add(linear(ae.at('linear_2'), linear(ae.at('linear_1'), addIn, timeDim).silu(), timeDim))); // (B, 1280)

  let x = conv2d(w.at('conv_in'), sample.cast(ft), ch0, { kernel: 3, padding: 1 });
  const skips: Tensor[] = [x];
  c.down_block_types.forEach((type, i) => {
    const b = w.at('down_blocks').at(i);
    const out = c.block_out_channels[i]!;
    for (let j = 0; j < c.layers_per_block; j++) {
      x = resnetBlock2D(b.at('resnets').at(j), x, out, temb, G, eps);
      if (type === 'CrossAttnDownBlock2D') x = transformer2D(b.at('attentions').at(j), x, enc, heads[i]!, tLayers[i]!, G);
      skips.push(x);
    }
    if (i < n - 1) {
      x = conv2d(b.at('downsamplers').at(0).at('conv'), x, out, { kernel: 3, stride: 2, padding: 1 });
      skips.push(x);
    }
  });
  const mid = w.at('mid_block');
  const top = c.block_out_channels[n - 1]!;
  x = resnetBlock2D(mid.at('resnets').at(0), x, top, temb, G, eps);
  x = transformer2D(mid.at('attentions').at(0), x, enc, heads[n - 1]!, tLayers[n - 1]!, G);
  x = resnetBlock2D(mid.at('resnets').at(1), x, top, temb, G, eps);
  const rev = [...c.block_out_channels].reverse();
  const rHeads = [...heads].reverse();
  const rLayers = [...tLayers].reverse();
  c.up_block_types.forEach((type, i) => {
    const b = w.at('up_blocks').at(i);
    for (let j = 0; j <= c.layers_per_block; j++) {
      const skip = skips.pop();
      if (!skip) throw new AppError('model', 'unet: up path asks for more skip connections than the down path made');
      x = resnetBlock2D(b.at('resnets').at(j), b.within(() => concat([x, skip], 1)), rev[i]!, temb, G, eps);
      if (type === 'CrossAttnUpBlock2D') x = transformer2D(b.at('attentions').at(j), x, enc, rHeads[i]!, rLayers[i]!, G);
    }
    if (i < n - 1) x = upsample2D(b.at('upsamplers').at(0), x);
  });
  x = groupNorm(w.at('conv_norm_out'), x, G, eps).silu();
  const y = conv2d(w.at('conv_out'), x, c.out_channels, { kernel: 3, padding: 1 });
  g.output(y.cast('float32'), 'noise_pred');
  return { graph: g, config: c };
}

// ---- convert component ----------------------------------------------------------------------------------------

interface DecoderBuildContext {
  snapshotDir: string;
  dtype: 'fp32' | 'fp16';
  openStore(subdir: string, filePrefix: string, skipPrefixes?: readonly string[]): WeightStore;
}

/** diffusers saves `diffusion_pytorch_model[.bf16|.fp16].safetensors`; Emu2-Gen / BLIP3-o ship the bf16 variant. */
export function diffusersWeightsPrefix(dir: string): string {
  for (const p of ['diffusion_pytorch_model', 'diffusion_pytorch_model.bf16', 'diffusion_pytorch_model.fp16'])
    if (existsSync(join(dir, `${p}.safetensors`)) || existsSync(join(dir, `${p}.safetensors.index.json`))) return p;
  throw new AppError('model', `no diffusion_pytorch_model[.bf16|.fp16].safetensors in ${dir}`);
}

export const readJson = (path: string): unknown => {
  if (!existsSync(path)) throw new AppError('model', `missing ${path}`);
  return JSON.parse(readFileSync(path, 'utf8'));
};

/** The UNet graph from diffusion-decoder/unet; the scheduler config travels in the manifest info (pipeline reads it there). */
export const sdxlUNetComponent = {
  name: 'unet',
  build(ctx: DecoderBuildContext) {
    const dir = join(ctx.snapshotDir, 'diffusion-decoder', 'unet');
    const store = ctx.openStore(join('diffusion-decoder', 'unet'), diffusersWeightsPrefix(dir));
    const { graph, config } = buildSdxlUNet(store, readJson(join(dir, 'config.json')), { floatType: ctx.dtype === 'fp16' ? 'float16' : 'float32' });
    return {
      graphs: [{ file: 'generation/unet.onnx', graph, dtype: ctx.dtype }],
      info: {
        in_channels: config.in_channels,
        sample_size: config.sample_size,
        cross_attention_dim: config.cross_attention_dim,
        latent_multiple: unetLatentMultiple(config),
        scheduler: readJson(join(ctx.snapshotDir, 'diffusion-decoder', 'scheduler', 'scheduler_config.json')),
      },
    };
  },
};
