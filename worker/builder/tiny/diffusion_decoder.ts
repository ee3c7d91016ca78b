// The tiny `diffusion-decoder/` folder: Emu2-style UNet and VAE configs at toy sizes (same keys and block types as
// the real Emu2 configs, spec §1.4), random weights under the real diffusers key names, the Euler scheduler config
// and model_index.json. Sizes are small enough that a whole image takes well under a second per step on CPU, while
// keeping every structural feature: 3 blocks with cross-attention in the last two, several transformer layers,
// a 4-level VAE, multi-head attention, channel changes that need conv_shortcut.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GaussianRng } from '../../pipeline/rng.ts';
import { fromFloat32, writeSafetensors, type TensorToWrite } from '../safetensors.ts';
import { tinyGenHiddenSize } from './dit.ts';

export function tinyUNetConfig(crossAttentionDim: number): Record<string, unknown> {
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: '0.21.2',
    act_fn: 'silu',
    addition_embed_type: 'text_time',
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: 8,
    attention_head_dim: [1, 2, 2],
    block_out_channels: [16, 32, 32],
    center_input_sample: false,
    class_embed_type: null,
    class_embeddings_concat: false,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: crossAttentionDim,
    cross_attention_norm: null,
    down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
    downsample_padding: 1,
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_only_cross_attention: null,
    mid_block_scale_factor: 1,
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    norm_eps: 1e-5,
    norm_num_groups: 8,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    projection_class_embeddings_input_dim: crossAttentionDim + 6 * 8,
    resnet_out_scale_factor: 1.0,
    resnet_skip_time_act: false,
    resnet_time_scale_shift: 'default',
    sample_size: 16,
    time_cond_proj_dim: null,
    time_embedding_act_fn: null,
    time_embedding_dim: null,
    time_embedding_type: 'positional',
    timestep_post_act: null,
    transformer_layers_per_block: [1, 1, 2],
    up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
    upcast_attention: null,
    use_linear_projection: true,
  };
}

export const TINY_VAE_CONFIG = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.21.2',
  act_fn: 'silu',
  block_out_channels: [8, 16, 16, 16],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  force_upcast: true,
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 1,
  norm_num_groups: 8,
  out_channels: 3,
  sample_size: 64,
  scaling_factor: 0.13025,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

/** Emu2's scheduler_config.json values (spec §1.4). */
export const SCHEDULER_CONFIG = {
  _class_name: 'EulerDiscreteScheduler',
  _diffusers_version: '0.21.2',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  interpolation_type: 'linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
  use_karras_sigmas: false,
};

export const MODEL_INDEX = {
  _class_name: 'StableDiffusionXLPipeline',
  _diffusers_version: '0.21.2',
  feature_extractor: ['transformers', 'CLIPImageProcessor'],
  scheduler: ['diffusers', 'EulerDiscreteScheduler'],
  unet: ['diffusers', 'UNet2DConditionModel'],
  vae: ['diffusers', 'AutoencoderKL'],
};

class Maker {
  readonly tensors: TensorToWrite[] = [];
  private readonly rng: GaussianRng;
  constructor(
    seed: number,
    private readonly dtype: 'F32' | 'BF16',
    /** Record keys and shapes only (no values): for benchmarks that fill weights lazily. */
    private readonly shapesOnly = false,
  ) {
    this.rng = new GaussianRng(seed, 12);
  }
  put(key: string, shape: number[], kind: 'matrix' | 'norm' | 'bias'): void {
    if (this.shapesOnly) {
      this.tensors.push({ key, dtype: this.dtype, shape, data: new Uint8Array(0) });
      return;
    }
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const z = this.rng.nextGaussian();
      v[i] = kind === 'matrix' ? z / Math.sqrt(fanIn) : kind === 'norm' ? 1 + 0.1 * z : 0.05 * z;
    }
    this.tensors.push({ key, dtype: this.dtype, shape, data: fromFloat32(this.dtype, v) });
  }
  linear(p: string, out: number, inp: number, bias = true): void {
    this.put(`${p}.weight`, [out, inp], 'matrix');
    if (bias) this.put(`${p}.bias`, [out], 'bias');
  }
  conv(p: string, out: number, inp: number, k: number): void {
    this.put(`${p}.weight`, [out, inp, k, k], 'matrix');
    this.put(`${p}.bias`, [out], 'bias');
  }
  norm(p: string, c: number): void {
    this.put(`${p}.weight`, [c], 'norm');
    this.put(`${p}.bias`, [c], 'bias');
  }
  resnet(p: string, inCh: number, out: number, temb: number | undefined): void {
    this.norm(`${p}.norm1`, inCh);
    this.conv(`${p}.conv1`, out, inCh, 3);
    if (temb) this.linear(`${p}.time_emb_proj`, out, temb);
    this.norm(`${p}.norm2`, out);
    this.conv(`${p}.conv2`, out, out, 3);
    if (inCh !== out) this.conv(`${p}.conv_shortcut`, out, inCh, 1);
  }
  transformer(p: string, c: number, layers: number, cross: number): void {
    this.norm(`${p}.norm`, c);
    this.linear(`${p}.proj_in`, c, c);
    for (let l = 0; l < layers; l++) {
      const b = `${p}.transformer_blocks.${l}`;
      for (const n of ['norm1', 'norm2', 'norm3']) this.norm(`${b}.${n}`, c);
      for (const [a, kv] of [['attn1', c], ['attn2', cross]] as const) {
        this.linear(`${b}.${a}.to_q`, c, c, false);
        this.linear(`${b}.${a}.to_k`, c, kv, false);
        this.linear(`${b}.${a}.to_v`, c, kv, false);
        this.linear(`${b}.${a}.to_out.0`, c, c);
      }
      this.linear(`${b}.ff.net.0.proj`, 8 * c, c);
      this.linear(`${b}.ff.net.2`, c, 4 * c);
    }
    this.linear(`${p}.proj_out`, c, c);
  }
}

/** UNet weights for a config of the Emu2 shape (walks the same topology diffusers builds). */
export function tinyUNetTensors(cfg: ReturnType<typeof tinyUNetConfig>, seed = 21, dtype: 'F32' | 'BF16' = 'F32', shapesOnly = false): TensorToWrite[] {
  const m = new Maker(seed, dtype, shapesOnly);
  const ch = cfg.block_out_channels as number[];
  const tLayers = cfg.transformer_layers_per_block as number[];
  const L = cfg.layers_per_block as number;
  const cross = cfg.cross_attention_dim as number;
  const tembDim = 4 * ch[0]!;
  const n = ch.length;
  m.linear('time_embedding.linear_1', tembDim, ch[0]!);
  m.linear('time_embedding.linear_2', tembDim, tembDim);
  m.linear('add_embedding.linear_1', tembDim, cfg.projection_class_embeddings_input_dim as number);
  m.linear('add_embedding.linear_2', tembDim, tembDim);
  m.conv('conv_in', ch[0]!, cfg.in_channels as number, 3);
  const skips: number[] = [ch[0]!];
  let cur = ch[0]!;
  (cfg.down_block_types as string[]).forEach((type, i) => {
    for (let j = 0; j < L; j++) {
      m.resnet(`down_blocks.${i}.resnets.${j}`, cur, ch[i]!, tembDim);
      cur = ch[i]!;
      if (type.startsWith('CrossAttn')) m.transformer(`down_blocks.${i}.attentions.${j}`, cur, tLayers[i]!, cross);
      skips.push(cur);
    }
    if (i < n - 1) {
      m.conv(`down_blocks.${i}.downsamplers.0.conv`, cur, cur, 3);
      skips.push(cur);
    }
  });
  m.resnet('mid_block.resnets.0', cur, cur, tembDim);
  m.transformer('mid_block.attentions.0', cur, tLayers[n - 1]!, cross);
  m.resnet('mid_block.resnets.1', cur, cur, tembDim);
  const rev = [...ch].reverse();
  const rLayers = [...tLayers].reverse();
  (cfg.up_block_types as string[]).forEach((type, i) => {
    for (let j = 0; j <= L; j++) {
      const skip = skips.pop()!;
      m.resnet(`up_blocks.${i}.resnets.${j}`, cur + skip, rev[i]!, tembDim);
      cur = rev[i]!;
      if (type.startsWith('CrossAttn')) m.transformer(`up_blocks.${i}.attentions.${j}`, cur, rLayers[i]!, cross);
    }
    if (i < n - 1) m.conv(`up_blocks.${i}.upsamplers.0.conv`, cur, cur, 3);
  });
  m.norm('conv_norm_out', cur);
  m.conv('conv_out', cfg.out_channels as number, cur, 3);
  return m.tensors;
}

/** Every UNet key with its shape, for a config of the Emu2 shape (no values). */
export function unetWeightShapes(cfg: Record<string, unknown>): { key: string; shape: number[] }[] {
  return tinyUNetTensors(cfg, 0, 'F32', true).map(({ key, shape }) => ({ key, shape }));
}

/** VAE decoder weights (plus a 1-tensor stand-in for the unused encoder half, so the skip list is exercised). */
export function tinyVaeTensors(cfg: typeof TINY_VAE_CONFIG, seed = 22, dtype: 'F32' | 'BF16' = 'F32', shapesOnly = false, fullEncoder = false): TensorToWrite[] {
  const m = new Maker(seed, dtype, shapesOnly);
  const rev = [...cfg.block_out_channels].reverse();
  const lc = cfg.latent_channels;
  if (fullEncoder) vaeEncoder(m, cfg);
  else m.conv('encoder.conv_in', cfg.block_out_channels[0]!, cfg.in_channels, 3);
  m.conv('quant_conv', 2 * lc, 2 * lc, 1);
  m.conv('post_quant_conv', lc, lc, 1);
  m.conv('decoder.conv_in', rev[0]!, lc, 3);
  m.resnet('decoder.mid_block.resnets.0', rev[0]!, rev[0]!, undefined);
  m.norm('decoder.mid_block.attentions.0.group_norm', rev[0]!);
  for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) m.linear(`decoder.mid_block.attentions.0.${p}`, rev[0]!, rev[0]!);
  m.resnet('decoder.mid_block.resnets.1', rev[0]!, rev[0]!, undefined);
  let cur = rev[0]!;
  rev.forEach((out, i) => {
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      m.resnet(`decoder.up_blocks.${i}.resnets.${j}`, cur, out, undefined);
      cur = out;
    }
    if (i < rev.length - 1) m.conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, cur, cur, 3);
  });
  m.norm('decoder.conv_norm_out', cur);
  m.conv('decoder.conv_out', cfg.out_channels, cur, 3);
  return m.tensors;
}

/** diffusers' Encoder of an AutoencoderKL (the half BLIP3-o never runs; real snapshots carry it). */
function vaeEncoder(m: Maker, cfg: typeof TINY_VAE_CONFIG): void {
  const ch = cfg.block_out_channels;
  let cur = ch[0]!;
  m.conv('encoder.conv_in', cur, cfg.in_channels, 3);
  ch.forEach((out, i) => {
    for (let j = 0; j < cfg.layers_per_block; j++) {
      m.resnet(`encoder.down_blocks.${i}.resnets.${j}`, cur, out, undefined);
      cur = out;
    }
    if (i < ch.length - 1) m.conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, cur, cur, 3);
  });
  m.resnet('encoder.mid_block.resnets.0', cur, cur, undefined);
  m.norm('encoder.mid_block.attentions.0.group_norm', cur);
  for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) m.linear(`encoder.mid_block.attentions.0.${p}`, cur, cur);
  m.resnet('encoder.mid_block.resnets.1', cur, cur, undefined);
  m.norm('encoder.conv_norm_out', cur);
  m.conv('encoder.conv_out', 2 * cfg.latent_channels, cur, 3);
}

/** Every VAE key with its shape and init kind (the full encoder included), without values. */
export function vaeWeightShapes(cfg: typeof TINY_VAE_CONFIG): { key: string; shape: number[] }[] {
  return tinyVaeTensors(cfg, 0, 'F32', true, true).map(({ key, shape }) => ({ key, shape }));
}

/** Writes `<snapshot>/diffusion-decoder/` as the hub lays it out (bf16 weight variant, like Emu2-Gen). */
export function writeTinyDiffusionDecoder(snapshotDir: string, crossAttentionDim: number, seed = 21): void {
  const root = join(snapshotDir, 'diffusion-decoder');
  const json = (p: string, v: unknown) => writeFileSync(p, JSON.stringify(v, null, 2) + '\n');
  for (const sub of ['unet', 'vae', 'scheduler']) mkdirSync(join(root, sub), { recursive: true });
  const unet = tinyUNetConfig(crossAttentionDim);
  json(join(root, 'model_index.json'), MODEL_INDEX);
  json(join(root, 'unet', 'config.json'), unet);
  json(join(root, 'vae', 'config.json'), TINY_VAE_CONFIG);
  json(join(root, 'scheduler', 'scheduler_config.json'), SCHEDULER_CONFIG);
  writeSafetensors(join(root, 'unet', 'diffusion_pytorch_model.bf16.safetensors'), tinyUNetTensors(unet, seed, 'BF16'));
  writeSafetensors(join(root, 'vae', 'diffusion_pytorch_model.bf16.safetensors'), tinyVaeTensors(TINY_VAE_CONFIG, seed + 1, 'BF16'));
}

/** make-tiny component: `diffusion-decoder/` conditioned on the tiny DiT's feature width. */
export const diffusionDecoderComponent = {
  name: 'diffusion-decoder',
  write(ctx: { dir: string; config: Record<string, unknown> }) {
    writeTinyDiffusionDecoder(ctx.dir, tinyGenHiddenSize(ctx.config));
  },
};
