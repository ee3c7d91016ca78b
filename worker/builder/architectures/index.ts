// HF `architectures[0]` of a snapshot's config.json → the components to build (an explicit table: no if-chains, no
// folder scanning). A BLIP3-o snapshot is several models in one folder: the Qwen2.5-VL text decoder (this helper),
// the vision tower, the DiT (root shards) and the diffusion decoder's UNet and VAE (diffusion-decoder/ subfolders).
import type { Graph } from '../onnx/graph.ts';
import { quantOptions, type QuantName } from '../quant.ts';
import type { WeightStore } from '../weights.ts';
import { buildTextDecoder, buildTokenEmbedding, headDim, readLatentQueries, TextConfig } from './qwen2_5_vl_text.ts';
import { qwen2_5_vl_vision } from './qwen2_5_vl_vision.ts';
import { diffusionTransformerComponent } from './diffusion_transformer.ts';
import { sdxlUNetComponent } from './sdxl_unet.ts';
import { vaeDecoderComponent } from './vae_decoder.ts';

export type OutputDType = 'fp32' | 'fp16';
export const graphFloat = (d: OutputDType) => (d === 'fp16' ? 'float16' : 'float32');

export interface BuildContext {
  snapshotDir: string;
  /** The root config.json, as parsed JSON (each component validates its own part with zod). */
  config: Record<string, unknown>;
  dtype: OutputDType;
  /** Block quantization of the LLM's Linear weights (MatMulNBits); 'none' keeps them in `dtype`. */
  quant: QuantName;
  /** Weights of the root shards, shared by every root component (the unused-key check spans them all). */
  store: WeightStore;
  /** Weights of a sub-model folder (e.g. 'diffusion-decoder/unet', 'diffusion_pytorch_model.bf16'); keys under
   *  `skipPrefixes` may stay unused (e.g. the VAE encoder). Checked for unused keys like the root store. */
  openStore(subdir: string, filePrefix: string, skipPrefixes?: readonly string[]): WeightStore;
}

export interface BuiltGraph {
  /** Path under the output dir, e.g. 'text/decoder.onnx'. */
  file: string;
  graph: Graph;
  dtype: OutputDType;
}
export interface BuiltTensor {
  /** Written as fp32 safetensors under the output dir, e.g. 'text/latent_queries.safetensors', key 'latent_queries'. */
  file: string;
  key: string;
  dims: number[];
  data: Float32Array;
}
export interface ComponentOutput {
  graphs: BuiltGraph[];
  tensors?: BuiltTensor[];
  /** Sizes and constants the pipeline needs at run time (recorded in the manifest). */
  info?: Record<string, unknown>;
}
export interface ComponentBuilder {
  name: string;
  build(ctx: BuildContext): ComponentOutput;
}
export interface Architecture {
  components: readonly ComponentBuilder[];
  /** Root-shard key prefixes that are present but unused on purpose, with the reason (reported by convert). */
  skipPrefixes: readonly { prefix: string; reason: string }[];
}

export const qwen2_5_vl_text: ComponentBuilder = {
  name: 'text',
  build(ctx) {
    // transformers ≥ 4.52 nests the text fields under text_config; BLIP3-o (4.51) keeps them at the root
    const nested = ctx.config.text_config;
    const c = TextConfig.parse(nested && typeof nested === 'object' ? { ...ctx.config, ...nested } : ctx.config);
    const dtype = graphFloat(ctx.dtype);
    const nQuery = typeof ctx.config.n_query === 'number' ? ctx.config.n_query : 64;
    const lq = readLatentQueries(ctx.store, { ...c, n_query: nQuery });
    return {
      graphs: [
        { file: 'text/embedding.onnx', graph: buildTokenEmbedding(ctx.store, c, { dtype }), dtype: ctx.dtype },
        { file: 'text/decoder.onnx', graph: buildTextDecoder(ctx.store, c, { dtype, quant: quantOptions(ctx.quant), logits: 'at' }), dtype: ctx.dtype },
      ],
      tensors: [{ file: 'text/latent_queries.safetensors', key: 'latent_queries', ...lq }],
      info: {
        hidden_size: c.hidden_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads,
        head_dim: headDim(c),
        vocab_size: c.vocab_size,
        rope_theta: c.rope_theta,
        mrope_section: c.rope_scaling.mrope_section,
        n_query: nQuery,
      },
    };
  },
};

export const ARCHITECTURES: Record<string, Architecture> = {
  // BLIP3-o 4B/8B (spec §1). Helpers V and G add the vision tower, DiT, UNet and VAE components here.
  blip3oQwenForCausalLM: {
    components: [qwen2_5_vl_text, qwen2_5_vl_vision, diffusionTransformerComponent, sdxlUNetComponent, vaeDecoderComponent],
    skipPrefixes: [{ prefix: 'model.gen_vision_tower.', reason: 'EVA-CLIP tower: training targets only, not used at inference (spec §5)' }],
  },
};
