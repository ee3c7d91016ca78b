// Tiny random weights for the Qwen2.5-VL vision tower (`visual.*` in the root shards) with the real key names and
// layouts (spec §1.3) at toy sizes, plus the matching `vision_config`. The patch geometry (14 px, 2 frames, 2×2
// merge, 112 px windows) is the real one, so preprocessing, window order and M-RoPE run exactly as on the real
// model; only the widths and depth shrink. Deterministic: the same seed gives the same bytes.
import { GaussianRng } from '../../pipeline/rng.ts';
import type { VisionConfig } from '../architectures/qwen2_5_vl_vision.ts';
import { fromFloat32, type TensorToWrite } from '../safetensors.ts';
import { scaleGaussian, type WeightSpec } from './component.ts';

/** vision_config for the tiny checkpoint; `out_hidden_size` must be the LLM hidden size. */
export function tinyVisionConfig(outHiddenSize: number): VisionConfig {
  return {
    depth: 4,
    hidden_size: 32,
    num_heads: 2, // head_dim 16: the 2-D rotary needs head_dim divisible by 4
    intermediate_size: 44, // a width no ratio of 32 gives, so a builder that guesses it fails
    out_hidden_size: outHiddenSize,
    in_chans: 3,
    patch_size: 14,
    temporal_patch_size: 2,
    spatial_merge_size: 2,
    window_size: 112,
    fullatt_block_indexes: [1, 3], // windowed, full, windowed, full (the real tower: every 8th block)
    hidden_act: 'silu',
  };
}

/** Every `visual.*` tensor of a vision config, in draw order. */
export function visionWeightSpecs(cfg: VisionConfig): WeightSpec[] {
  const out: WeightSpec[] = [];
  const put = (key: string, shape: number[], kind: WeightSpec['kind']) =>
    out.push({ key: `visual.${key}`, shape, kind, fanIn: shape.slice(1).reduce((a, b) => a * b, 1) });
  const D = cfg.hidden_size;
  const I = cfg.intermediate_size;
  const wide = D * cfg.spatial_merge_size ** 2;
  put('patch_embed.proj.weight', [D, cfg.in_chans, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size], 'matrix');
  for (let l = 0; l < cfg.depth; l++) {
    const p = `blocks.${l}.`;
    put(`${p}norm1.weight`, [D], 'norm');
    put(`${p}norm2.weight`, [D], 'norm');
    put(`${p}attn.qkv.weight`, [3 * D, D], 'matrix');
    put(`${p}attn.qkv.bias`, [3 * D], 'bias');
    put(`${p}attn.proj.weight`, [D, D], 'matrix');
    put(`${p}attn.proj.bias`, [D], 'bias');
    put(`${p}mlp.gate_proj.weight`, [I, D], 'matrix');
    put(`${p}mlp.gate_proj.bias`, [I], 'bias');
    put(`${p}mlp.up_proj.weight`, [I, D], 'matrix');
    put(`${p}mlp.up_proj.bias`, [I], 'bias');
    put(`${p}mlp.down_proj.weight`, [D, I], 'matrix');
    put(`${p}mlp.down_proj.bias`, [D], 'bias');
  }
  put('merger.ln_q.weight', [D], 'norm');
  put('merger.mlp.0.weight', [wide, wide], 'matrix');
  put('merger.mlp.0.bias', [wide], 'bias');
  put('merger.mlp.2.weight', [cfg.out_hidden_size, wide], 'matrix');
  put('merger.mlp.2.bias', [cfg.out_hidden_size], 'bias');
  return out;
}

/** Random tensors: N(0, 1/fan_in) matrices, norm weights near 1, small biases. */
export function tinyVisionTensors(cfg: VisionConfig, seed = 4, dtype: 'F32' | 'F16' | 'BF16' = 'BF16'): TensorToWrite[] {
  const rng = new GaussianRng(seed, 21);
  return visionWeightSpecs(cfg).map((s) => {
    const v = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < v.length; i++) v[i] = scaleGaussian(s, rng.nextGaussian());
    return { key: s.key, dtype, shape: s.shape, data: fromFloat32(dtype, v) };
  });
}

/** config.json's vision_config section for a vision config. */
export function visionConfigJson(cfg: VisionConfig): Record<string, unknown> {
  return { ...cfg, model_type: 'qwen2_5_vl', spatial_patch_size: cfg.patch_size, tokens_per_second: 2 };
}

/** `visual.*` in the root shards and `vision_config` in config.json (out_hidden_size = the tiny LLM's hidden size). */
export const visionComponent = {
  name: 'vision',
  // Typed structurally (the TinyContext members it uses) so this file does not import the table that imports it.
  write(ctx: { config: Record<string, unknown>; text: { hidden_size: number }; addRootTensors(t: TensorToWrite[]): void }) {
    const cfg = tinyVisionConfig(ctx.text.hidden_size);
    ctx.config.vision_config = visionConfigJson(cfg);
    ctx.addRootTensors(tinyVisionTensors(cfg));
  },
};
