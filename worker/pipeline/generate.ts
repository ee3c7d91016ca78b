// The generation half of BLIP3-o (spec §3–4): prompt → LLM hidden states at the 64 latent queries → DiT flow
// matching → 64×C CLIP features → SDXL-topology UNet (Euler, CFG against the cached " " feature) → VAE → PNG.
// Model calls go through onnxruntime sessions of the graphs built by worker/builder/architectures/{diffusion_transformer,
// sdxl_unet,vae_decoder}.ts; the LLM is reached through the narrow `Conditioner` port (blip3o.ts wires the Qwen decoder).
//
// Random draws (pitfall 17), each from its own stream of worker/pipeline/rng.ts, so the cache state never changes an image:
//   DiT noise     GaussianRng(seed, ditNoise)
//   UNet latent   GaussianRng(seed, unetLatent)
//   negative DiT  GaussianRng(0, negativeDitNoise): fixed, because the negative feature is computed once per pipeline
//                 instance and shared by every later request (spec §3.5).
import { AppError, UserError } from '../../src/errors.ts';
import { ImagineOptions } from '../../src/jobs/contract.ts';
import { geometryFor } from './aspect.ts';
import { encodePng, toRgb8 } from './png.ts';
import { GaussianRng, RngStream } from './rng.ts';
import { eulerDiscreteSchedule, eulerInputScale, eulerStep, flowMatchSchedule, sampleFlowMatching, type EulerDiscreteConfig } from './schedulers.ts';
import { openSession, toDevice, type DeviceTensor, type ModelSession, type SessionOptions } from '../runtime/session.ts';
import { TOKENS, type TextSegment } from './tokenizer.ts';
import type { GeneratedImage, GenerateRequest, RunContext } from './types.ts';

/** Token ids generation uses by name (spec §1.5; the table lives in tokenizer.ts). */
export const IMG_TOKEN = TOKENS.img; // 151665 [IMG], appended before the latent queries
export const VISION_START = TOKENS.visionStart;
export const IMAGE_PAD = TOKENS.imagePad;
export const VISION_END = TOKENS.visionEnd;

const SYSTEM_USER = '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n';
const ASSISTANT = '<|im_end|>\n<|im_start|>assistant\n';
/**
 * spec §3.1: conv_templates['qwen'] around the generation instruction, ending in the open assistant turn. The caption
 * is user text: plain text, never control tokens.
 */
export const generationPrompt = (caption: string): TextSegment[] => [
  { text: `${SYSTEM_USER}Please generate image based on the following caption: `, trusted: true },
  { text: caption, trusted: false },
  { text: ASSISTANT, trusted: true },
];
/** spec §3.7: the reconstruction instruction (the user text after `<image>\n`). */
export const RECONSTRUCT = 'Please reconstruct the given image.';
/** spec §3.5: the UNet's negative condition is this raw text, with no chat template. */
export const NEGATIVE_TEXT = ' ';

/** The LLM half as generation needs it. */
export interface Conditioner {
  /** Token ids of text we wrote (no BOS; special-token strings such as <|im_start|> map to their ids). */
  encode(text: string): number[];
  /** Token ids of a prompt: control tokens only from trusted segments, user text always plain (tokenizer.ts). */
  encodePrompt(segments: readonly TextSegment[]): number[];
  /**
   * Post-final-RMSNorm hidden states at the last `nQuery` positions of embed(ids) ++ [IMG] ++ latent_queries, causal,
   * 1-D positions in all three M-RoPE slots (pitfalls 1, 2). `imageFeatures` [n, H] replace the ids == IMAGE_PAD
   * embeddings, in order. Returns [nQuery, H] row-major.
   */
  latentHiddenStates(ids: number[], imageFeatures?: Float32Array): Promise<Float32Array>;
  /** H, the LLM hidden size. */
  readonly hiddenSize: number;
}

/** The vision tower as variations need it (helper V's `encodeImage`: 448×448 squash, spec §3.7). */
export interface ImageEncoder {
  /** Merged vision tokens [n, H] of an encoded image resized to 448×448. */
  encodeForGeneration(image: Uint8Array): Promise<{ features: Float32Array; tokens: number }>;
}

export interface GenerationModels {
  dit: ModelSession;
  unet: ModelSession;
  vae: ModelSession;
  /** DiT latent: grid side² tokens × channels (8×8 × 1792 real). */
  ditGrid: number;
  latentChannels: number;
  /** unet/config.json values the sampler needs. */
  unetSampleSize: number;
  unetLatentMultiple: number;
  unetInChannels: number;
  vaeScaleFactor: number;
  scheduler: Partial<EulerDiscreteConfig>;
}

export interface GenerationSettings {
  /** Steps and guidance of the one-off negative feature (the reference's fixed defaults: 30 and 3.0). */
  negativeDitSteps: number;
  negativeGuidance: number;
  /** Written into the PNG's Software text field. */
  software: string;
}

export function cancelled(): AppError {
  return new AppError('cancelled', 'the job was aborted');
}

export class Generator {
  private negative: Promise<Float32Array> | undefined;

  constructor(
    private readonly m: GenerationModels,
    private readonly llm: Conditioner,
    private readonly settings: GenerationSettings,
    private readonly vision?: ImageEncoder,
  ) {}

  async generate(req: GenerateRequest, ctx: RunContext): Promise<GeneratedImage> {
    const parsed = ImagineOptions.safeParse(req.options);
    if (!parsed.success) throw new UserError('bad_request', `Invalid image options: ${parsed.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`);
    const o = parsed.data;
    const check = () => {
      if (!ctx.signal.aborted) return;
      throw ctx.signal.reason instanceof AppError ? ctx.signal.reason : cancelled(); // e.g. a timeout reason
    };
    check();

    // 1. conditioning: the LLM over the templated prompt (or the image + reconstruction prompt) + [IMG] + queries
    ctx.onProgress({ stage: 'conditioning', step: 0, total: 1 });
    let ids: number[];
    let imageFeatures: Float32Array | undefined;
    if (req.image) {
      if (!this.vision) throw new AppError('model', 'image variations need the vision encoder, which this pipeline was built without');
      const enc = await this.vision.encodeForGeneration(req.image);
      imageFeatures = enc.features;
      const user = req.prompt.trim() ? req.prompt.trim() : RECONSTRUCT;
      ids = [
        ...this.llm.encode(SYSTEM_USER),
        VISION_START,
        ...new Array<number>(enc.tokens).fill(IMAGE_PAD),
        VISION_END,
        ...this.llm.encodePrompt([
          { text: '\n', trusted: true },
          { text: user, trusted: false },
          { text: ASSISTANT, trusted: true },
        ]),
      ];
    } else {
      ids = this.llm.encodePrompt(generationPrompt(req.prompt));
    }
    check();
    const z = await this.llm.latentHiddenStates(ids, imageFeatures);
    ctx.onProgress({ stage: 'conditioning', step: 1, total: 1 });
    check();

    // 2. features: the negative (first call only) then the prompt's own DiT sampling
    const negativeFirst = this.negative === undefined;
    const featureTotal = o.ditSteps + (negativeFirst ? this.settings.negativeDitSteps : 0);
    let done = 0;
    const featureStep = () => {
      check();
      ctx.onProgress({ stage: 'features', step: done++, total: featureTotal });
    };
    const neg = await this.negativeFeature(featureStep);
    const cond = await this.sampleFeatures(z, o.ditSteps, o.guidance, new GaussianRng(o.seed, RngStream.ditNoise), featureStep);
    ctx.onProgress({ stage: 'features', step: featureTotal, total: featureTotal });

    // 3. decoding: UNet Euler loop with CFG [cond, neg], then the fp32 VAE
    const geo = geometryFor(o.aspect, this.m.unetSampleSize, this.m.vaeScaleFactor, this.m.unetLatentMultiple);
    const latents = await this.denoise(cond, neg, geo, o, (i, total) => {
      check();
      ctx.onProgress({ stage: 'decoding', step: i, total: total + 1 });
    });
    check();
    const out = await this.m.vae.run({ latents: { data: latents, dims: [1, this.m.unetInChannels, geo.latentHeight, geo.latentWidth] } });
    const image = out.image;
    if (!image) throw new AppError('model', 'the VAE graph has no `image` output');
    const rgb = toRgb8(image.data as Float32Array, geo.height, geo.width);
    const png = await encodePng(rgb, geo.width, geo.height, {
      prompt: req.prompt,
      seed: String(o.seed),
      settings: JSON.stringify({ ...o, mode: req.image ? 'vary' : 'imagine', width: geo.width, height: geo.height }),
      Software: this.settings.software,
    });
    ctx.onProgress({ stage: 'decoding', step: o.decoderSteps + 1, total: o.decoderSteps + 1 });
    return { png, width: geo.width, height: geo.height };
  }

  /** The " " feature, computed once per instance (a failed or cancelled attempt is not cached). */
  private negativeFeature(beforeStep: () => void): Promise<Float32Array> {
    if (!this.negative) {
      const p = (async () => {
        const z = await this.llm.latentHiddenStates(this.llm.encode(NEGATIVE_TEXT));
        return this.sampleFeatures(z, this.settings.negativeDitSteps, this.settings.negativeGuidance, new GaussianRng(0, RngStream.negativeDitNoise), beforeStep);
      })();
      this.negative = p;
      p.catch(() => {
        if (this.negative === p) this.negative = undefined;
      });
    }
    return this.negative;
  }

  /** Flow matching with CFG against zeros in LLM space, batch [uncond, cond] (spec §3.4, pitfall 8). */
  async sampleFeatures(z: Float32Array, steps: number, guidance: number, rng: GaussianRng, beforeStep: () => void): Promise<Float32Array> {
    const T = this.m.ditGrid * this.m.ditGrid;
    const C = this.m.latentChannels;
    const H = this.llm.hiddenSize;
    const tokens = z.length / H;
    const zz = new Float32Array(2 * z.length);
    zz.set(z, z.length); // batch 0: zeros (null condition, before caption_projection: pitfall 7)
    const x = rng.gaussian(T * C);
    const xx = new Float32Array(2 * T * C);
    // the condition is the same at every step: on a GPU provider it is uploaded once and stays there
    const zDev = await toDevice({ data: zz, dims: [2, tokens, H] }, this.m.dit.provider);
    try {
      return await sampleFlowMatching(
        x,
        flowMatchSchedule(steps),
        async (xi, t) => {
          xx.set(xi, 0);
          xx.set(xi, T * C);
          const out = await this.m.dit.run({
            x: { data: xx, dims: [2, T, C] },
            timestep: { data: Float32Array.from([t, t]), dims: [2] },
            z: zDev,
          });
          const v = out.velocity?.data as Float32Array | undefined;
          if (!v) throw new AppError('model', 'the DiT graph has no `velocity` output');
          const guided = new Float32Array(T * C);
          for (let k = 0; k < T * C; k++) guided[k] = v[k]! + guidance * (v[T * C + k]! - v[k]!);
          return guided;
        },
        () => beforeStep(),
      );
    } finally {
      zDev.dispose();
    }
  }

  /** Euler-leading sampling of the UNet latent with CFG [cond, neg] (spec §4, pitfalls 8–10). */
  private async denoise(
    cond: Float32Array,
    neg: Float32Array,
    geo: ReturnType<typeof geometryFor>,
    o: ImagineOptions,
    beforeStep: (i: number, total: number) => void,
  ): Promise<Float32Array> {
    const schedule = eulerDiscreteSchedule(this.m.scheduler, o.decoderSteps);
    const C = this.m.latentChannels;
    const tokens = cond.length / C;
    const n = this.m.unetInChannels * geo.latentHeight * geo.latentWidth;
    const x = new GaussianRng(o.seed, RngStream.unetLatent).gaussian(n);
    for (let k = 0; k < n; k++) x[k] = x[k]! * schedule.initNoiseSigma;
    const enc = new Float32Array(2 * cond.length);
    enc.set(cond, 0);
    enc.set(neg, cond.length);
    const text = new Float32Array(2 * C); // mean over the feature tokens (pitfall 9)
    for (let b = 0; b < 2; b++) {
      const f = b === 0 ? cond : neg;
      for (let i = 0; i < tokens; i++) for (let j = 0; j < C; j++) text[b * C + j]! += f[i * C + j]! / tokens;
    }
    const timeIds = Float32Array.from([...geo.sizeIds, ...geo.sizeIds]);
    // every step's conditioning, uploaded once (GPU providers); the latent comes back each step for the Euler update
    const p = this.m.unet.provider;
    const conditioning: DeviceTensor[] = [
      await toDevice({ data: enc, dims: [2, tokens, C] }, p),
      await toDevice({ data: text, dims: [2, C] }, p),
      await toDevice({ data: timeIds, dims: [2, 6] }, p),
    ];
    try {
      return await this.denoiseLoop(x, n, schedule, o, conditioning, geo, beforeStep);
    } finally {
      for (const t of conditioning) t.dispose();
    }
  }

  private async denoiseLoop(
    x: Float32Array,
    n: number,
    schedule: ReturnType<typeof eulerDiscreteSchedule>,
    o: ImagineOptions,
    [enc, text, timeIds]: DeviceTensor[],
    geo: ReturnType<typeof geometryFor>,
    beforeStep: (i: number, total: number) => void,
  ): Promise<Float32Array> {
    const xin = new Float32Array(2 * n);
    for (let i = 0; i < o.decoderSteps; i++) {
      beforeStep(i, o.decoderSteps);
      const s = eulerInputScale(schedule, i);
      for (let k = 0; k < n; k++) xin[k] = xin[n + k] = x[k]! * s;
      const t = schedule.timesteps[i]!;
      const out = await this.m.unet.run({
        sample: { data: xin, dims: [2, this.m.unetInChannels, geo.latentHeight, geo.latentWidth] },
        timestep: { data: Float32Array.from([t, t]), dims: [2] },
        encoder_hidden_states: enc!,
        text_embeds: text!,
        time_ids: timeIds!,
      });
      const e = out.noise_pred?.data as Float32Array | undefined;
      if (!e) throw new AppError('model', 'the UNet graph has no `noise_pred` output');
      const guided = new Float32Array(n);
      for (let k = 0; k < n; k++) guided[k] = e[n + k]! + o.guidance * (e[k]! - e[n + k]!); // ε_neg + g·(ε_cond − ε_neg)
      eulerStep(x, guided, schedule, i);
    }
    return x;
  }

  async close(): Promise<void> {
    await Promise.all([this.m.dit.release(), this.m.unet.release(), this.m.vae.release()]);
  }
}

// ---- loading ---------------------------------------------------------------------------------------------------

export interface GenerationGraphs {
  /** Converted graphs (worker/builder/architectures/{diffusion_transformer,sdxl_unet,vae_decoder}.ts). */
  ditOnnx: string;
  unetOnnx: string;
  vaeOnnx: string;
  /** config.json n_query: the DiT latent is a √n_query × √n_query grid. */
  nQuery: number;
  /** From diffusion-decoder/unet/config.json (recorded in the manifest by convert). */
  unet: { sampleSize: number; inChannels: number; crossAttentionDim: number; latentMultiple: number; scheduler: Record<string, unknown> };
  /** 2^(len(vae.block_out_channels)−1). */
  vaeScaleFactor: number;
}

/** Opens the three generation sessions; every size comes from the configs (nothing hard-coded). */
export async function loadGeneration(
  g: GenerationGraphs,
  runtime: SessionOptions,
  llm: Conditioner,
  settings: GenerationSettings,
  vision?: ImageEncoder,
): Promise<Generator> {
  const grid = Math.round(Math.sqrt(g.nQuery));
  if (grid * grid !== g.nQuery) throw new AppError('model', `n_query ${g.nQuery} is not a square number of DiT tokens`);
  const [dit, unet, vae] = await Promise.all([openSession(g.ditOnnx, runtime), openSession(g.unetOnnx, runtime), openSession(g.vaeOnnx, runtime)]);
  return new Generator(
    {
      dit,
      unet,
      vae,
      ditGrid: grid,
      latentChannels: g.unet.crossAttentionDim,
      unetSampleSize: g.unet.sampleSize,
      unetLatentMultiple: g.unet.latentMultiple,
      unetInChannels: g.unet.inChannels,
      vaeScaleFactor: g.vaeScaleFactor,
      scheduler: g.unet.scheduler as Partial<EulerDiscreteConfig>,
    },
    llm,
    settings,
    vision,
  );
}
