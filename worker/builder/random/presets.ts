// Real-size presets for `npm run model -- make-random`: the sizes of the released BLIP3-o checkpoints (spec §1.2,
// §1.4, §5, §6). Each preset says what the hub repo holds: Qwen2.5-VL-3B/-7B text and vision, the DiT, the
// EVA-CLIP tower (training-only, in the root shards), and diffusion-decoder/ (Emu2's SDXL-shaped UNet and VAE).
import type { VisionConfig } from '../architectures/qwen2_5_vl_vision.ts';
import type { TinyTextSizes } from '../tiny/component.ts';
import { TINY_VAE_CONFIG, tinyUNetConfig } from '../tiny/diffusion_decoder.ts';
import type { TinyDitSizes } from '../tiny/dit.ts';
import { REAL_EVA_CLIP, type EvaClipSizes } from '../tiny/eva_clip.ts';

export interface RandomPreset {
  description: string;
  text: TinyTextSizes;
  /** config.json's tie_word_embeddings (the 4B's Qwen2.5-VL-3B ties; the 8B's -7B does not). */
  tieWordEmbeddings: boolean;
  /** Whether lm_head.weight is stored (spec §1.3: the 4B probably stores it although tied). */
  lmHeadStored: boolean;
  vision: VisionConfig;
  dit: TinyDitSizes;
  evaClip: EvaClipSizes;
  unet: Record<string, unknown>;
  vae: typeof TINY_VAE_CONFIG;
  /** Seed of every tensor's values (each tensor's stream also depends on its key). */
  seed: number;
}

/** Qwen2.5-VL vision tower (the same for 3B and 7B except out_hidden_size = the LLM width). */
const qwenVision = (outHiddenSize: number): VisionConfig => ({
  depth: 32,
  hidden_size: 1280,
  num_heads: 16,
  intermediate_size: 3420,
  out_hidden_size: outHiddenSize,
  in_chans: 3,
  patch_size: 14,
  temporal_patch_size: 2,
  spatial_merge_size: 2,
  window_size: 112,
  fullatt_block_indexes: [7, 15, 23, 31],
  hidden_act: 'silu',
});

/** NextDiTCrossAttn defaults (spec §1.2): dim 1792, 24 layers, 28 heads, FFN 4864 (pitfall 20), caption width H. */
const blip3oDit = (captionDim: number): TinyDitSizes => ({ dim: 1792, heads: 28, layers: 24, latentChannels: 1792, captionDim, ffnDim: 4864, freqDim: 256 });

/** Emu2's diffusion-decoder/unet/config.json values (spec §1.4). */
export const EMU2_UNET_CONFIG: Record<string, unknown> = {
  ...tinyUNetConfig(1792),
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  norm_num_groups: 32,
  projection_class_embeddings_input_dim: 3328,
  sample_size: 128,
  transformer_layers_per_block: [1, 2, 10],
};

/** The SDXL-shaped VAE of diffusion-decoder/vae/config.json (spec §1.4). */
export const EMU2_VAE_CONFIG: typeof TINY_VAE_CONFIG = {
  ...TINY_VAE_CONFIG,
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  norm_num_groups: 32,
  sample_size: 1024,
};

const QWEN_TEXT_COMMON = { vocab_size: 151668, rms_norm_eps: 1e-6, rope_theta: 1_000_000, mrope_section: [16, 24, 24], n_query: 64 } as const;

export const RANDOM_PRESETS: Record<string, RandomPreset> = {
  'blip3o-4b': {
    description: 'BLIP3o/BLIP3o-Model-4B layout: Qwen2.5-VL-3B (tied, lm_head stored), DiT, EVA-CLIP, Emu2 UNet + VAE',
    text: { ...QWEN_TEXT_COMMON, hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2 },
    tieWordEmbeddings: true,
    lmHeadStored: true,
    vision: qwenVision(2048),
    dit: blip3oDit(2048),
    evaClip: REAL_EVA_CLIP,
    unet: EMU2_UNET_CONFIG,
    vae: EMU2_VAE_CONFIG,
    seed: 4,
  },
  'blip3o-8b': {
    description: 'BLIP3o/BLIP3o-Model-8B layout: Qwen2.5-VL-7B (untied lm_head), DiT, EVA-CLIP, Emu2 UNet + VAE',
    text: { ...QWEN_TEXT_COMMON, hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28, num_attention_heads: 28, num_key_value_heads: 4 },
    tieWordEmbeddings: false,
    lmHeadStored: true,
    vision: qwenVision(3584),
    dit: blip3oDit(3584),
    evaClip: REAL_EVA_CLIP,
    unet: EMU2_UNET_CONFIG,
    vae: EMU2_VAE_CONFIG,
    seed: 8,
  },
};
