// Qwen2.5-VL vision tower + 2×2 patch merger (spec ../shared/docs/blip3o.md §2.2, pitfall 12): the ViT that turns an
// image's patch rows into LLM-width tokens for BLIP3-o's understanding path (and image variations, §3.7).
// Source: transformers modeling_qwen2_5_vl.py (Qwen2_5_VisionTransformerPretrainedModel, Qwen2_5_VLVisionBlock,
// Qwen2_5_VLVisionAttention, Qwen2_5_VLMLP, Qwen2_5_VLPatchMerger), same math in 4.51.3 and the post-4.52 refactor.
// Weight-key prefix: `visual.` (the transformers-4.51 layout, §1.3).
//
// Built in float32 whatever model.dtype says: the tower's last down-projection overflows fp16 (pitfall 12).
//
// Graph inputs (computed in TypeScript from grid_thw by worker/pipeline/image.ts `visionFeeds`):
//   pixel_values   [N, C·tp·p·p] f32  patch rows in merge-block order (the processor's output), N = patches
//   window_index   [N] i64            patch-level permutation into window order (each merged token moves as its m² patches)
//   cos, sin       [N, head_dim] f32  2-D rotary table, in window order
//   window_slots   [W·S] i64          windowed blocks: row (in window order) that fills slot s of window w; S = the
//                                     patches of a whole window (64), slots past an edge window's end repeat row 0
//   window_key_mask [W, S] f32        0 for real slots, −inf for padding slots (as keys)
//   window_unpad   [N] i64            slot of each row, to gather the windowed attention output back to [N, …]
//   reverse_index  [M] i64            inverse merged-token permutation (argsort of the window index), M = N/m²
// Output:
//   image_embeds  [M, out_hidden_size] in raster merged-token order, ready to scatter into <|image_pad|> slots.
//
// Windowed attention runs on [W, S] padded windows (cost W·S² instead of N²: 16× less at 448², and no N×N scores),
// which is transformers' cu_window_seqlens varlen attention with the ragged windows padded to one length.
import { z } from 'zod';
import { AppError } from '../../../src/errors.ts';
import { Graph } from '../onnx/graph.ts';
import { concat, split, type Tensor } from '../onnx/ops.ts';
import { gelu, linear, rmsNorm, sdpa } from '../nn.ts';
import type { Scope, WeightStore } from '../weights.ts';

// ---- config ------------------------------------------------------------------------------------------------------

/** `vision_config` of config.json, keys verbatim (defaults: transformers Qwen2_5_VLVisionConfig). */
export const VisionConfig = z.object({
  depth: z.number().int().positive(),
  hidden_size: z.number().int().positive(),
  num_heads: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  out_hidden_size: z.number().int().positive(),
  in_chans: z.number().int().positive().default(3),
  patch_size: z.number().int().positive(),
  temporal_patch_size: z.number().int().positive(),
  spatial_merge_size: z.number().int().positive(),
  window_size: z.number().int().positive(),
  fullatt_block_indexes: z.array(z.number().int().nonnegative()),
  hidden_act: z.literal('silu').default('silu'),
});
export type VisionConfig = z.infer<typeof VisionConfig>;

const RMS_EPS = 1e-6; // Qwen2RMSNorm(eps=1e-6) in every block and in the merger
export const VISION_INPUTS = ['pixel_values', 'window_index', 'cos', 'sin', 'window_slots', 'window_key_mask', 'window_unpad', 'reverse_index'] as const;
export const VISION_OUTPUT = 'image_embeds';

/** Patches in one whole window: (window_size / patch_size)², 64 for Qwen2.5-VL (112 px windows of 14 px patches). */
export const windowPatches = (cfg: VisionConfig) => (Math.floor(cfg.window_size / cfg.spatial_merge_size / cfg.patch_size) * cfg.spatial_merge_size) ** 2;

// ---- blocks, bottom-up ---------------------------------------------------------------------------------------------

/** rotate_half (NeoX) rotary: x·cos + [−x₂, x₁]·sin over the two halves of head_dim, in fp32. x (N, H, hd), cos/sin (N, 1, hd). */
function applyRope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const half = x.size(-1) / 2;
  const [x1, x2] = split(x, [half, half], -1) as [Tensor, Tensor]; // (N, H, hd/2) each
  return x.mul(cos).add(concat([x2.neg(), x1], -1).mul(sin));
}

/** The padded-window layout of the windowed blocks (see the header). */
interface Windows {
  slots: Tensor; // [W·S]
  keyMask: Tensor; // [W, 1, 1, S] additive
  unpad: Tensor; // [N]
  size: number; // S
}

/**
 * Qwen2_5_VLVisionAttention: one Linear to [q|k|v], 2-D rotary on q and k, softmax(q·kᵀ/√hd)·v, output Linear.
 * Full-attention blocks attend over all N patches; windowed blocks over the S slots of each padded window.
 *
 *   x ─qkv─Reshape(N,3,H,hd)─Split(3)─┬─q─rope─┐ full:     Transpose(H,N,hd) ─sdpa──────────Transpose─┐
 *                                      ├─k─rope─┤ windowed: Gather(slots)─Reshape(W,S,H,hd)─Transpose   │
 *                                      └─v──────┘           ─sdpa(key mask)─Transpose─Gather(unpad)───┴─Reshape(N,D)─proj─▶
 */
function attention(w: Scope, cfg: VisionConfig, x: Tensor, cos: Tensor, sin: Tensor, windows: Windows | undefined): Tensor {
  const D = cfg.hidden_size;
  const H = cfg.num_heads;
  const hd = D / H;
  const qkv = w.within(() => linear(w.at('qkv'), x, 3 * D).reshape(-1, 3, H, hd)); // (N, 3, H, hd)
  const o = w.within(() => {
    const [q, k, v] = split(qkv, [1, 1, 1], 1).map((t) => t.squeeze(1)) as [Tensor, Tensor, Tensor]; // (N, H, hd)
    const heads = [applyRope(q, cos, sin), applyRope(k, cos, sin), v];
    if (!windows) {
      const [qh, kh, vh] = heads.map((t) => t.transpose(1, 0, 2)) as [Tensor, Tensor, Tensor]; // (H, N, hd)
      return sdpa(qh, kh, vh).transpose(1, 0, 2); // (N, H, hd)
    }
    const S = windows.size;
    const [qw, kw, vw] = heads.map((t) => t.gather(windows.slots).reshape(-1, S, H, hd).transpose(0, 2, 1, 3)) as [Tensor, Tensor, Tensor]; // (W, H, S, hd)
    return sdpa(qw, kw, vw, { mask: windows.keyMask }) // (W, H, S, hd)
      .transpose(0, 2, 1, 3)
      .reshape(-1, H, hd) // (W·S, H, hd)
      .gather(windows.unpad); // (N, H, hd)
  });
  return linear(w.at('proj'), w.within(() => o.reshape(-1, D)), D); // (N, D)
}

/** Qwen2_5_VLMLP: down(SiLU(gate(x)) ⊙ up(x)), all three with bias.  (N, D) → (N, I) → (N, D) */
function mlp(w: Scope, cfg: VisionConfig, x: Tensor): Tensor {
  const I = cfg.intermediate_size;
  const h = linear(w.at('gate_proj'), x, I);
  return linear(w.at('down_proj'), w.within(() => h.silu().mul(linear(w.at('up_proj'), x, I))), cfg.hidden_size);
}

/** Qwen2_5_VLVisionBlock: pre-norm residual, twice. */
function block(w: Scope, cfg: VisionConfig, x: Tensor, cos: Tensor, sin: Tensor, windows: Windows | undefined): Tensor {
  const h = w.within(() => x.add(attention(w.at('attn'), cfg, rmsNorm(w.at('norm1'), x, RMS_EPS), cos, sin, windows)));
  return w.within(() => h.add(mlp(w.at('mlp'), cfg, rmsNorm(w.at('norm2'), h, RMS_EPS))));
}

/** Qwen2_5_VLPatchMerger: RMSNorm each patch, concatenate the m² patches of a merge block, Linear → GELU(erf) → Linear. */
function merger(w: Scope, cfg: VisionConfig, x: Tensor): Tensor {
  const wide = cfg.hidden_size * cfg.spatial_merge_size ** 2;
  const h = w.within(() => rmsNorm(w.at('ln_q'), x, RMS_EPS).reshape(-1, wide)); // (M, D·m²)
  const g = w.within(() => gelu(linear(w.at('mlp').at(0), h, wide), 'erf'));
  return linear(w.at('mlp').at(2), g, cfg.out_hidden_size); // (M, out)
}

/** PatchEmbed: Conv3d with kernel = stride = (tp, p, p) and no bias, i.e. a Linear over each flattened patch row. */
function patchEmbed(w: Scope, cfg: VisionConfig, pixels: Tensor): Tensor {
  const { hidden_size: D, in_chans: C, temporal_patch_size: tp, patch_size: p } = cfg;
  // [D, C, tp, p, p] stored as [D, C·tp·p·p]; its columns are in the (channel, frame, py, px) order of the rows.
  const W = w.weight('weight', [D, C, tp, p, p], { reshape: [D, C * tp * p * p] });
  return w.within(() => pixels.matmul(W.transpose(1, 0))); // (N, D); the constant transpose is folded at load
}

// ---- the graph ---------------------------------------------------------------------------------------------------

/**
 * Qwen2_5_VisionTransformerPretrainedModel.forward for one image:
 *   patch_embed → permute into window order → blocks (window attention, full attention at fullatt_block_indexes)
 *   → merger → inverse permutation.
 */
export function buildVisionGraph(store: WeightStore, cfg: VisionConfig): Graph {
  const g = new Graph('qwen2_5_vl_vision');
  const hd = cfg.hidden_size / cfg.num_heads;
  const patchDim = cfg.in_chans * cfg.temporal_patch_size * cfg.patch_size ** 2;
  const pixels = g.input('pixel_values', 'float32', ['patches', patchDim]);
  const windowIndex = g.input('window_index', 'int64', ['patches']);
  const cos = g.input('cos', 'float32', ['patches', hd]).unsqueeze(1); // (N, 1, hd): broadcast over heads
  const sin = g.input('sin', 'float32', ['patches', hd]).unsqueeze(1);
  const S = windowPatches(cfg);
  const windows: Windows = {
    slots: g.input('window_slots', 'int64', ['window_slots']),
    keyMask: g.input('window_key_mask', 'float32', ['windows', S]).unsqueeze(1, 2), // (W, 1, 1, S)
    unpad: g.input('window_unpad', 'int64', ['patches']),
    size: S,
  };
  const reverseIndex = g.input('reverse_index', 'int64', ['tokens']);
  g.metadata.architecture = 'qwen2_5_vl_vision';
  g.metadata.vision_config = JSON.stringify(cfg);

  const visual = store.scope(g, 'float32').at('visual');
  let x = patchEmbed(visual.at('patch_embed').at('proj'), cfg, pixels).gather(windowIndex); // (N, D), window order
  for (let i = 0; i < cfg.depth; i++) {
    const full = cfg.fullatt_block_indexes.includes(i); // one image: full attention needs no mask
    x = block(visual.at('blocks').at(i), cfg, x, cos, sin, full ? undefined : windows);
  }
  const out = merger(visual.at('merger'), cfg, x).gather(reverseIndex); // (M, out), raster order
  g.output(out, VISION_OUTPUT);
  return g;
}

// ---- convert component ----------------------------------------------------------------------------------------
// Registered in architectures/index.ts; typed structurally (the BuildContext members it uses) so this file does not
// import the table that imports it.

/** The vision graph from `visual.*` in the root shards, sized by config.json's `vision_config`. Always fp32 (pitfall 12). */
export const qwen2_5_vl_vision = {
  name: 'vision',
  build(ctx: { config: Record<string, unknown>; store: WeightStore }) {
    const parsed = VisionConfig.safeParse(ctx.config.vision_config);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `vision_config.${i.path.join('.')}: ${i.message}`).join('; ');
      throw new AppError('model', `config.json has no usable vision_config: ${issues}`);
    }
    const cfg = parsed.data;
    const imageTokenId = typeof ctx.config.image_token_id === 'number' ? ctx.config.image_token_id : 151655;
    return {
      graphs: [{ file: 'vision/vision.onnx', graph: buildVisionGraph(ctx.store, cfg), dtype: 'fp32' as const }],
      info: { ...cfg, head_dim: cfg.hidden_size / cfg.num_heads, image_token_id: imageTokenId },
    };
  },
};
