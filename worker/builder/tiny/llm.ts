// Tiny Qwen2.5-VL text model + BLIP3-o generation head: root config.json fields (spec §1.2), the LLM under
// `model.*` / `lm_head.*` and `model.latent_queries` (spec §1.3), and generation_config.json (spec §2.5).
// The vocabulary is the real size (151668) so token ids are real; everything else is toy-sized.
// Storage is bf16, like the released checkpoint.
import { GaussianRng } from '../../pipeline/rng.ts';
import { fromFloat32, type TensorToWrite } from '../safetensors.ts';
import { scaleGaussian, type TinyComponent, type TinyTextSizes, type WeightSpec } from './component.ts';

export const TINY_TEXT = {
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2, // GQA group 2; head_dim 16
  vocab_size: 151668,
  rms_norm_eps: 1e-6,
  rope_theta: 1_000_000,
  mrope_section: [2, 3, 3], // sums to head_dim/2 = 8 (real: [16, 24, 24] for head_dim 128)
  n_query: 64,
} as const satisfies TinyTextSizes;

/** Every tensor of the Qwen2.5-VL text model + latent_queries, in the order the tiny maker draws them.
 *  `lmHead: false` leaves out lm_head.weight (a tied checkpoint that did not store it). */
export function textWeightSpecs(t: TinyTextSizes, opts: { lmHead?: boolean } = {}): WeightSpec[] {
  const H = t.hidden_size;
  const I = t.intermediate_size;
  const hd = H / t.num_attention_heads;
  const KV = t.num_key_value_heads * hd;
  const out: WeightSpec[] = [];
  const put = (key: string, shape: number[], kind: WeightSpec['kind']) => out.push({ key, shape, kind, fanIn: shape[shape.length - 1]! });
  put('model.embed_tokens.weight', [t.vocab_size, H], 'unit');
  for (let l = 0; l < t.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    put(`${p}input_layernorm.weight`, [H], 'norm');
    put(`${p}self_attn.q_proj.weight`, [H, H], 'matrix');
    put(`${p}self_attn.q_proj.bias`, [H], 'bias');
    put(`${p}self_attn.k_proj.weight`, [KV, H], 'matrix');
    put(`${p}self_attn.k_proj.bias`, [KV], 'bias');
    put(`${p}self_attn.v_proj.weight`, [KV, H], 'matrix');
    put(`${p}self_attn.v_proj.bias`, [KV], 'bias');
    put(`${p}self_attn.o_proj.weight`, [H, H], 'matrix');
    put(`${p}post_attention_layernorm.weight`, [H], 'norm');
    put(`${p}mlp.gate_proj.weight`, [I, H], 'matrix');
    put(`${p}mlp.up_proj.weight`, [I, H], 'matrix');
    put(`${p}mlp.down_proj.weight`, [H, I], 'matrix');
  }
  put('model.norm.weight', [H], 'norm');
  if (opts.lmHead !== false) put('lm_head.weight', [t.vocab_size, H], 'matrix');
  put('model.latent_queries', [1, t.n_query, H], 'unit');
  return out;
}

export function tinyTextTensors(seed = 3): TensorToWrite[] {
  const t = TINY_TEXT;
  const rng = new GaussianRng(seed, 31);
  return textWeightSpecs(t).map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    if (s.shape[0] === t.vocab_size) {
      // The two vocab-sized tables (~10M values each): uniform with the same variance, 5× cheaper than Gaussians.
      fillUniform(v, rng.nextUint32(), s.kind === 'matrix' ? 1 / Math.sqrt(s.shape[1]!) : 1);
    } else for (let i = 0; i < n; i++) v[i] = scaleGaussian(s, rng.nextGaussian());
    return { key: s.key, dtype: 'BF16', shape: s.shape, data: fromFloat32('BF16', v) };
  });
}

/** Uniform on [-√3·std, √3·std) (variance std²), from a SplitMix32 stream seeded with `seed`. */
function fillUniform(v: Float32Array, seed: number, std: number): void {
  let s = seed >>> 0;
  const k = (2 * Math.sqrt(3) * std) / 4294967296;
  const c = Math.sqrt(3) * std;
  for (let i = 0; i < v.length; i++) {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    v[i] = ((z ^ (z >>> 16)) >>> 0) * k - c;
  }
}

/** config.json: the Qwen2.5-VL text fields (transformers 4.51 layout: text fields at the root) + BLIP3-o fields. */
export function tinyRootConfig(): Record<string, unknown> {
  return qwenRootConfig(TINY_TEXT, false);
}

/** config.json of a BLIP3-o snapshot with these text sizes (spec §1.2; vision_config is added by the vision part). */
export function qwenRootConfig(t: TinyTextSizes, tieWordEmbeddings: boolean): Record<string, unknown> {
  return {
    architectures: ['blip3oQwenForCausalLM'],
    model_type: 'blip3o_qwen',
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    pad_token_id: 151643,
    vision_start_token_id: 151652,
    vision_end_token_id: 151653,
    vision_token_id: 151654,
    image_token_id: 151655,
    video_token_id: 151656,
    hidden_act: 'silu',
    hidden_size: t.hidden_size,
    initializer_range: 0.02,
    intermediate_size: t.intermediate_size,
    max_position_embeddings: 128000,
    max_window_layers: t.num_hidden_layers,
    num_attention_heads: t.num_attention_heads,
    num_hidden_layers: t.num_hidden_layers,
    num_key_value_heads: t.num_key_value_heads,
    rms_norm_eps: t.rms_norm_eps,
    rope_scaling: { type: 'mrope', rope_type: 'default', mrope_section: [...t.mrope_section] },
    rope_theta: t.rope_theta,
    sliding_window: 32768,
    use_sliding_window: false,
    tie_word_embeddings: tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    transformers_version: '4.51.3',
    use_cache: true,
    vocab_size: t.vocab_size,
    // BLIP3-o additions (spec §1.2)
    gen_vision_tower: 'eva-clip-E-14-plus',
    n_query: t.n_query,
    gen_pooling: 'early_pool2d_4',
    gen_hidden_size: 1792,
    mm_use_im_patch_token: false,
    mm_use_im_start_end: false,
    mm_vision_select_layer: -2,
    mm_vision_select_feature: 'patch',
    mm_patch_merge_type: 'flat',
    mm_projector_type: 'mlp2x_gelu',
    use_mm_proj: true,
    image_aspect_ratio: 'square',
    tokenizer_model_max_length: 512,
    tokenizer_padding_side: 'right',
  };
}

/** The Qwen2.5-VL-Instruct generation_config (spec §2.5, GUESS there): effectively greedy with a 1.05 penalty. */
export const GENERATION_CONFIG = {
  bos_token_id: 151643,
  pad_token_id: 151643,
  do_sample: true,
  eos_token_id: [151645, 151643],
  repetition_penalty: 1.05,
  temperature: 0.1,
  top_k: 1,
  top_p: 0.001,
  transformers_version: '4.51.3',
};

export const llmComponent: TinyComponent = {
  name: 'llm',
  write(ctx) {
    Object.assign(ctx.config, tinyRootConfig());
    ctx.addRootTensors(tinyTextTensors());
    ctx.writeJson('generation_config.json', GENERATION_CONFIG);
  },
};
