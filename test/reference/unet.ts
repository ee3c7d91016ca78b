// Plain-TypeScript reference of the Emu2 / SDXL-topology UNet2DConditionModel (batch 1), following diffusers@05c8b42
// unets/unet_2d_condition.py (forward), unets/unet_2d_blocks.py (CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D, UpBlock2D), resnet.py ResnetBlock2D, transformers/transformer_2d.py
// (use_linear_projection) and attention.py BasicTransformerBlock + GEGLU. Spec §4 "UNet internals".
import {
  add,
  addChannel,
  attention,
  catChannels,
  conv2d,
  fromTokens,
  gelu,
  groupNorm,
  layerNorm,
  linear,
  silu,
  sinusoid,
  t,
  toTokens,
  upsample2x,
  type T,
  type Weights,
} from './unet_nn.ts';

export interface UNetRefConfig {
  block_out_channels: number[];
  down_block_types: string[];
  up_block_types: string[];
  layers_per_block: number;
  transformer_layers_per_block: number | number[];
  attention_head_dim: number | number[];
  norm_num_groups: number;
  norm_eps: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  addition_time_embed_dim: number;
}

const perBlock = (v: number | number[], n: number): number[] => (Array.isArray(v) ? v : Array.from({ length: n }, () => v));

/** ε prediction for sample [4, h, w] at float timestep, encoder states [Tc, D], pooled text [D], six size ids. */
export function unetForward(w: Weights, cfg: UNetRefConfig, sample: T, timestep: number, enc: T, textEmbeds: T, sizeIds: number[]): T {
  const n = cfg.block_out_channels.length;
  const heads = perBlock(cfg.attention_head_dim, n);
  const layers = perBlock(cfg.transformer_layers_per_block, n);
  const G = cfg.norm_num_groups;
  const eps = cfg.norm_eps;
  // time embedding + text_time add embedding (pitfall 9)
  const tEmb = mlp(w, 'time_embedding.', sinusoid([timestep], cfg.block_out_channels[0] ?? 320, cfg.flip_sin_to_cos, cfg.freq_shift));
  const ids = sinusoid(sizeIds, cfg.addition_time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift);
  const addIn = t(new Float32Array([...textEmbeds.data, ...ids.data]), [1, textEmbeds.data.length + ids.data.length]);
  const temb = add(tEmb, mlp(w, 'add_embedding.', addIn));

  let x = conv2d(sample, w('conv_in.weight'), w('conv_in.bias'), 1, 1);
  const skips: T[] = [x];
  cfg.down_block_types.forEach((type, i) => {
    for (let j = 0; j < cfg.layers_per_block; j++) {
      x = resnet(w, `down_blocks.${i}.resnets.${j}.`, x, temb, G, eps);
      if (type.startsWith('CrossAttn')) x = transformer2d(w, `down_blocks.${i}.attentions.${j}.`, x, enc, heads[i] ?? 1, layers[i] ?? 1, G);
      skips.push(x);
    }
    if (i < n - 1) {
      x = conv2d(x, w(`down_blocks.${i}.downsamplers.0.conv.weight`), w(`down_blocks.${i}.downsamplers.0.conv.bias`), 2, 1);
      skips.push(x);
    }
  });
  x = resnet(w, 'mid_block.resnets.0.', x, temb, G, eps);
  x = transformer2d(w, 'mid_block.attentions.0.', x, enc, heads[n - 1] ?? 1, layers[n - 1] ?? 1, G);
  x = resnet(w, 'mid_block.resnets.1.', x, temb, G, eps);
  const rHeads = [...heads].reverse();
  const rLayers = [...layers].reverse();
  cfg.up_block_types.forEach((type, i) => {
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      const skip = skips.pop();
      if (!skip) throw new Error('unet reference: ran out of skip connections');
      x = resnet(w, `up_blocks.${i}.resnets.${j}.`, catChannels(x, skip), temb, G, eps);
      if (type.startsWith('CrossAttn')) x = transformer2d(w, `up_blocks.${i}.attentions.${j}.`, x, enc, rHeads[i] ?? 1, rLayers[i] ?? 1, G);
    }
    if (i < n - 1) x = conv2d(upsample2x(x), w(`up_blocks.${i}.upsamplers.0.conv.weight`), w(`up_blocks.${i}.upsamplers.0.conv.bias`), 1, 1);
  });
  x = silu(groupNorm(x, G, eps, w('conv_norm_out.weight'), w('conv_norm_out.bias')));
  return conv2d(x, w('conv_out.weight'), w('conv_out.bias'), 1, 1);
}

function mlp(w: Weights, p: string, x: T): T {
  return linear(silu(linear(x, w(`${p}linear_1.weight`), w(`${p}linear_1.bias`))), w(`${p}linear_2.weight`), w(`${p}linear_2.bias`));
}

/** ResnetBlock2D: GN → SiLU → conv → + Linear(SiLU(temb)) → GN → SiLU → conv → + shortcut. temb absent in the VAE. */
export function resnet(w: Weights, p: string, x: T, temb: T | undefined, groups: number, eps: number): T {
  let h = conv2d(silu(groupNorm(x, groups, eps, w(`${p}norm1.weight`), w(`${p}norm1.bias`))), w(`${p}conv1.weight`), w(`${p}conv1.bias`), 1, 1);
  if (temb) h = addChannel(h, linear(silu(temb), w(`${p}time_emb_proj.weight`), w(`${p}time_emb_proj.bias`)));
  h = conv2d(silu(groupNorm(h, groups, eps, w(`${p}norm2.weight`), w(`${p}norm2.bias`))), w(`${p}conv2.weight`), w(`${p}conv2.bias`), 1, 1);
  let shortcut = x;
  try {
    shortcut = conv2d(x, w(`${p}conv_shortcut.weight`), w(`${p}conv_shortcut.bias`), 1, 0);
  } catch {
    // no conv_shortcut: channel count unchanged
  }
  return add(shortcut, h);
}

/** Transformer2DModel with use_linear_projection: GN(1e-6) → proj_in → blocks → proj_out → + residual. */
function transformer2d(w: Weights, p: string, x: T, enc: T, heads: number, nLayers: number, groups: number): T {
  const [, h, wd] = x.shape as [number, number, number];
  let tok = linear(toTokens(groupNorm(x, groups, 1e-6, w(`${p}norm.weight`), w(`${p}norm.bias`))), w(`${p}proj_in.weight`), w(`${p}proj_in.bias`));
  for (let l = 0; l < nLayers; l++) tok = basicBlock(w, `${p}transformer_blocks.${l}.`, tok, enc, heads);
  const out = linear(tok, w(`${p}proj_out.weight`), w(`${p}proj_out.bias`));
  return add(fromTokens(out, h, wd), x);
}

function basicBlock(w: Weights, p: string, x: T, enc: T, heads: number): T {
  const ln = (name: string, v: T): T => layerNorm(v, 1e-5, w(`${p}${name}.weight`), w(`${p}${name}.bias`));
  const attn = (name: string, q: T, kv: T): T => {
    const hd = (q.shape[1] ?? 1) / heads;
    const o = attention(linear(q, w(`${p}${name}.to_q.weight`)), linear(kv, w(`${p}${name}.to_k.weight`)), linear(kv, w(`${p}${name}.to_v.weight`)), heads, 1 / Math.sqrt(hd));
    return linear(o, w(`${p}${name}.to_out.0.weight`), w(`${p}${name}.to_out.0.bias`));
  };
  let h = add(x, attn('attn1', ln('norm1', x), ln('norm1', x)));
  h = add(h, attn('attn2', ln('norm2', h), enc));
  // GEGLU: proj → [a | g] → a·GELU(g) → Linear
  const proj = linear(ln('norm3', h), w(`${p}ff.net.0.proj.weight`), w(`${p}ff.net.0.proj.bias`));
  const inner = (proj.shape[1] ?? 2) / 2;
  const rows = proj.data.length / (2 * inner);
  const gated = new Float32Array(rows * inner);
  const g = gelu(proj).data;
  for (let r = 0; r < rows; r++) for (let i = 0; i < inner; i++) gated[r * inner + i] = (proj.data[r * 2 * inner + i] ?? 0) * (g[r * 2 * inner + inner + i] ?? 0);
  return add(h, linear(t(gated, [rows, inner]), w(`${p}ff.net.2.weight`), w(`${p}ff.net.2.bias`)));
}
