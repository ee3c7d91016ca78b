// Plain-TypeScript reference of AutoencoderKL.decode (batch 1): diffusers@05c8b42 autoencoders/autoencoder_kl.py
// (z / scaling_factor → post_quant_conv → Decoder), autoencoders/vae.py Decoder, UNetMidBlock2D with one single-head
// spatial self-attention (attention_processor.py AttnProcessor2_0 with group_norm, residual), UpDecoderBlock2D.
// Spec §4 "VAE decode" and pitfall 11.
import { resnet } from './unet.ts';
import { add, attention, conv2d, fromTokens, groupNorm, linear, map, silu, toTokens, upsample2x, type T, type Weights } from './unet_nn.ts';

export interface VaeRefConfig {
  block_out_channels: number[];
  layers_per_block: number;
  norm_num_groups: number;
  scaling_factor: number;
}

/** latents [4, h, w] → image [3, h·f, w·f] in about [−1, 1]. */
export function vaeDecode(w: Weights, cfg: VaeRefConfig, latents: T): T {
  const G = cfg.norm_num_groups;
  const eps = 1e-6;
  let x = conv2d(map(latents, (v) => v / cfg.scaling_factor), w('post_quant_conv.weight'), w('post_quant_conv.bias'), 1, 0);
  x = conv2d(x, w('decoder.conv_in.weight'), w('decoder.conv_in.bias'), 1, 1);
  x = resnet(w, 'decoder.mid_block.resnets.0.', x, undefined, G, eps);
  x = midAttention(w, 'decoder.mid_block.attentions.0.', x, G);
  x = resnet(w, 'decoder.mid_block.resnets.1.', x, undefined, G, eps);
  const n = cfg.block_out_channels.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= cfg.layers_per_block; j++) x = resnet(w, `decoder.up_blocks.${i}.resnets.${j}.`, x, undefined, G, eps);
    if (i < n - 1) x = conv2d(upsample2x(x), w(`decoder.up_blocks.${i}.upsamplers.0.conv.weight`), w(`decoder.up_blocks.${i}.upsamplers.0.conv.bias`), 1, 1);
  }
  x = silu(groupNorm(x, G, eps, w('decoder.conv_norm_out.weight'), w('decoder.conv_norm_out.bias')));
  return conv2d(x, w('decoder.conv_out.weight'), w('decoder.conv_out.bias'), 1, 1);
}

/** GN → single-head attention over all h·w positions (q/k/v/out with bias) → + residual. */
function midAttention(w: Weights, p: string, x: T, groups: number): T {
  const [c, h, wd] = x.shape as [number, number, number];
  const tok = toTokens(groupNorm(x, groups, 1e-6, w(`${p}group_norm.weight`), w(`${p}group_norm.bias`)));
  const q = linear(tok, w(`${p}to_q.weight`), w(`${p}to_q.bias`));
  const k = linear(tok, w(`${p}to_k.weight`), w(`${p}to_k.bias`));
  const v = linear(tok, w(`${p}to_v.weight`), w(`${p}to_v.bias`));
  const o = linear(attention(q, k, v, 1, 1 / Math.sqrt(c)), w(`${p}to_out.0.weight`), w(`${p}to_out.0.bias`));
  return add(fromTokens(o, h, wd), x);
}
