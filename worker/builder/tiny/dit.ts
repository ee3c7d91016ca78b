// Tiny random weights for the DiT (`model.dit.model.*` in the root shards), with the real key names and layouts
// (spec §1.3) at toy sizes, so graphs, references and end-to-end generation run in seconds on CPU.
// Deterministic: the same seed gives the same bytes.
import { GaussianRng } from '../../pipeline/rng.ts';
import { fromFloat32, type TensorToWrite } from '../safetensors.ts';
import { scaleGaussian, type WeightSpec } from './component.ts';

export interface TinyDitSizes {
  dim: number;
  heads: number;
  layers: number;
  /** gen_hidden_size: the CLIP-feature width the DiT denoises (1792 real); also the UNet's cross_attention_dim. */
  latentChannels: number;
  /** The LLM hidden size H. */
  captionDim: number;
  /** A width no formula would give, so a builder that derives it from the config instead of the shapes fails. */
  ffnDim: number;
  freqDim: number;
}

export const TINY_DIT: Omit<TinyDitSizes, 'captionDim'> = { dim: 32, heads: 2, layers: 2, latentChannels: 24, ffnDim: 96, freqDim: 256 };

/** Random tensors: N(0, 1/fan_in) matrices, norm weights near 1, small biases, and non-zero gates (zeros at
 *  init upstream, but a zero gate would hide a wrong cross-attention from the agreement test). */
export function tinyDitTensors(s: TinyDitSizes, seed = 5, prefix = 'model.dit.model.', dtype: 'F32' | 'F16' | 'BF16' = 'F32'): TensorToWrite[] {
  const rng = new GaussianRng(seed, 11);
  return ditWeightSpecs(s, prefix).map((w) => {
    const v = new Float32Array(w.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < v.length; i++) v[i] = scaleGaussian(w, rng.nextGaussian());
    return { key: w.key, dtype, shape: w.shape, data: fromFloat32(dtype, v) };
  });
}

/** Every DiT tensor, in draw order. */
export function ditWeightSpecs(s: TinyDitSizes, prefix = 'model.dit.model.'): WeightSpec[] {
  const out: WeightSpec[] = [];
  const put = (key: string, shape: number[], kind: WeightSpec['kind']) => out.push({ key: prefix + key, shape, kind, fanIn: shape[shape.length - 1] ?? 1 });
  const temb = Math.min(s.dim, 1024);
  const D = s.dim;
  put('caption_projection.linear_1.weight', [D, s.captionDim], 'matrix');
  put('caption_projection.linear_1.bias', [D], 'bias');
  put('caption_projection.linear_2.weight', [D, D], 'matrix');
  put('caption_projection.linear_2.bias', [D], 'bias');
  put('patch_embedder.proj.weight', [D, s.latentChannels], 'matrix');
  put('patch_embedder.proj.bias', [D], 'bias');
  put('time_caption_embed.timestep_embedder.linear_1.weight', [temb, s.freqDim], 'matrix');
  put('time_caption_embed.timestep_embedder.linear_1.bias', [temb], 'bias');
  put('time_caption_embed.timestep_embedder.linear_2.weight', [temb, temb], 'matrix');
  put('time_caption_embed.timestep_embedder.linear_2.bias', [temb], 'bias');
  put('time_caption_embed.caption_embedder.0.weight', [D], 'norm');
  put('time_caption_embed.caption_embedder.0.bias', [D], 'bias');
  put('time_caption_embed.caption_embedder.1.weight', [temb, D], 'matrix');
  put('time_caption_embed.caption_embedder.1.bias', [temb], 'bias');
  for (let l = 0; l < s.layers; l++) {
    const p = `layers.${l}.`;
    put(`${p}gate`, [s.heads], 'gate');
    for (const a of ['attn1', 'attn2']) {
      for (const m of ['to_q', 'to_k', 'to_v']) put(`${p}${a}.${m}.weight`, [D, D], 'matrix');
      for (const n of ['norm_q', 'norm_k']) {
        put(`${p}${a}.${n}.weight`, [D], 'norm');
        put(`${p}${a}.${n}.bias`, [D], 'bias');
      }
    }
    put(`${p}attn2.to_out.0.weight`, [D, D], 'matrix');
    put(`${p}feed_forward.linear_1.weight`, [s.ffnDim, D], 'matrix');
    put(`${p}feed_forward.linear_3.weight`, [s.ffnDim, D], 'matrix');
    put(`${p}feed_forward.linear_2.weight`, [D, s.ffnDim], 'matrix');
    put(`${p}norm1.linear.weight`, [4 * D, temb], 'matrix');
    put(`${p}norm1.linear.bias`, [4 * D], 'bias');
    put(`${p}norm1.norm.weight`, [D], 'norm');
    for (const n of ['ffn_norm1', 'norm2', 'ffn_norm2', 'norm1_context']) put(`${p}${n}.weight`, [D], 'norm');
  }
  put('norm_out.linear_1.weight', [D, temb], 'matrix');
  put('norm_out.linear_1.bias', [D], 'bias');
  put('norm_out.linear_2.weight', [s.latentChannels, D], 'matrix');
  put('norm_out.linear_2.bias', [s.latentChannels], 'bias');
  return out;
}

/** make-tiny component: the DiT under `model.dit.model.*`, conditioned on the tiny LLM's hidden size. Its latent width
 *  is config.json's gen_hidden_size (the CLIP-feature width, written by the LLM component: 1792 as in the real model). */
export const ditComponent = {
  name: 'dit',
  write(ctx: { config: Record<string, unknown>; text: { hidden_size: number }; addRootTensors(t: TensorToWrite[]): void }) {
    const latentChannels = tinyGenHiddenSize(ctx.config);
    ctx.addRootTensors(tinyDitTensors({ ...TINY_DIT, latentChannels, captionDim: ctx.text.hidden_size }, 5, 'model.dit.model.', 'BF16'));
  },
};

export const tinyGenHiddenSize = (config: Record<string, unknown>): number =>
  typeof config.gen_hidden_size === 'number' ? config.gen_hidden_size : TINY_DIT.latentChannels;
