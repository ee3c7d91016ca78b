// AutoencoderKL.decode of the Emu2 decoder's SDXL-type VAE: z/scaling_factor → post_quant_conv → Decoder
// (conv_in, mid block with one single-head spatial self-attention, up blocks, GN → SiLU → conv_out). Spec §4 and
// pitfall 11: always built in fp32 (the SDXL VAE overflows fp16; the config sets force_upcast), whatever model.dtype says.
// Sources: diffusers@05c8b42 models/autoencoders/{autoencoder_kl.py, vae.py (Decoder)}, unets/unet_2d_blocks.py
// (UNetMidBlock2D, UpDecoderBlock2D), attention_processor.py (Attention with group_norm, residual_connection).
// Weight keys: diffusion-decoder/vae/diffusion_pytorch_model*.safetensors; the encoder half (`encoder.*`, `quant_conv.*`)
// is not used by text-to-image and is skipped on purpose.
//
// Graph: latents [B, 4, h, w]  →  image [B, 3, h·f, w·f] in about [−1, 1], f = 2^(len(block_out_channels)−1).
import { join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../../../src/errors.ts';
import { Graph } from '../onnx/graph.ts';
import { conv2d, groupNorm } from '../nn.ts';
import type { Scope, WeightStore } from '../weights.ts';
import type { Tensor } from '../onnx/ops.ts';
import { attention, diffusersWeightsPrefix, fromTokens, readJson, resnetBlock2D, toTokens, upsample2D } from './sdxl_unet.ts';

/** diffusion-decoder/vae/config.json (HF keys verbatim). */
export const VaeConfig = z.looseObject({
  in_channels: z.number().int().positive().default(3),
  out_channels: z.number().int().positive().default(3),
  latent_channels: z.number().int().positive(),
  block_out_channels: z.array(z.number().int().positive()).min(1),
  up_block_types: z.array(z.literal('UpDecoderBlock2D')),
  layers_per_block: z.number().int().positive(),
  norm_num_groups: z.number().int().positive().default(32),
  act_fn: z.literal('silu').default('silu'),
  scaling_factor: z.number().positive(),
  shift_factor: z.null().nullish(),
  mid_block_add_attention: z.literal(true).default(true),
  use_post_quant_conv: z.literal(true).default(true),
});
export type VaeConfig = z.infer<typeof VaeConfig>;

export function parseVaeConfig(raw: unknown): VaeConfig {
  const r = VaeConfig.safeParse(raw);
  if (!r.success) throw new AppError('model', `unsupported vae/config.json: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** Pixels per latent: 2^(number of upsamplers). */
export const vaeScaleFactor = (c: VaeConfig): number => 2 ** (c.block_out_channels.length - 1);

/** Keys of the checkpoint this graph leaves alone on purpose. */
export const VAE_UNUSED_PREFIXES = ['encoder.', 'quant_conv.'] as const;

const EPS = 1e-6; // the VAE's resnets and norms

/** UNetMidBlock2D's attention: GN → single head over all h·w positions (q/k/v/out with bias) → + residual. */
function midAttention(w: Scope, x: Tensor, groups: number): Tensor {
  const tokens = w.within(() => toTokens(groupNorm(w.at('group_norm'), x, groups, EPS))); // (B, h·w, C)
  const o = attention(w, tokens, tokens, 1, true);
  return w.within(() => fromTokens(o, x).add(x));
}

export function buildVaeDecoder(store: WeightStore, raw: unknown): { graph: Graph; config: VaeConfig } {
  const c = parseVaeConfig(raw);
  const g = new Graph('vae_decoder');
  const w = store.scope(g, 'float32');
  const G = c.norm_num_groups;
  const n = c.block_out_channels.length;
  const rev = [...c.block_out_channels].reverse();
  const latents = g.input('latents', 'float32', ['batch', c.latent_channels, 'height', 'width']);

  const scaled = g.within('/model/unscale', () => latents.mul(1 / c.scaling_factor)); // no shift factor (pitfall 11)
  let x = conv2d(w.at('post_quant_conv'), scaled, c.latent_channels, { kernel: 1 });
  const d = w.at('decoder');
  x = conv2d(d.at('conv_in'), x, rev[0]!, { kernel: 3, padding: 1 });
  const mid = d.at('mid_block');
  x = resnetBlock2D(mid.at('resnets').at(0), x, rev[0]!, undefined, G, EPS);
  x = midAttention(mid.at('attentions').at(0), x, G);
  x = resnetBlock2D(mid.at('resnets').at(1), x, rev[0]!, undefined, G, EPS);
  for (let i = 0; i < n; i++) {
    const b = d.at('up_blocks').at(i);
    for (let j = 0; j <= c.layers_per_block; j++) x = resnetBlock2D(b.at('resnets').at(j), x, rev[i]!, undefined, G, EPS);
    if (i < n - 1) x = upsample2D(b.at('upsamplers').at(0), x);
  }
  x = groupNorm(d.at('conv_norm_out'), x, G, EPS).silu();
  g.output(conv2d(d.at('conv_out'), x, c.out_channels, { kernel: 3, padding: 1 }), 'image');
  return { graph: g, config: c };
}

// ---- convert component ----------------------------------------------------------------------------------------

interface DecoderBuildContext {
  snapshotDir: string;
  openStore(subdir: string, filePrefix: string, skipPrefixes?: readonly string[]): WeightStore;
}

/** The VAE decoder from diffusion-decoder/vae, fp32 whatever model.dtype is (pitfall 11). */
export const vaeDecoderComponent = {
  name: 'vae',
  build(ctx: DecoderBuildContext) {
    const dir = join(ctx.snapshotDir, 'diffusion-decoder', 'vae');
    const store = ctx.openStore(join('diffusion-decoder', 'vae'), diffusersWeightsPrefix(dir), VAE_UNUSED_PREFIXES);
    const { graph, config } = buildVaeDecoder(store, readJson(join(dir, 'config.json')));
    return {
      graphs: [{ file: 'generation/vae_decoder.onnx', graph, dtype: 'fp32' as const }],
      info: { scale_factor: vaeScaleFactor(config), latent_channels: config.latent_channels, scaling_factor: config.scaling_factor },
    };
  },
};
