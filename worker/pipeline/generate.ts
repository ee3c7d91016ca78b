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
import { DitSample, freeLatent, soloStepper, UnetSample, type Conditioning, type DiffusionStepper, type Latent, type UnetConditioning } from './diffusion-steps.ts';
import { SchedulerGraphs } from './scheduler-graphs.ts';
import { eulerDiscreteSchedule, flowMatchSchedule, type EulerDiscreteConfig } from './schedulers.ts';
import { openSession, toDevice, toHost, type ModelSession, type SessionOptions } from '../runtime/session.ts';
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
  /** Set when the latents stay with the sessions between steps (openGenerationModels `latentsOnDevice`). */
  schedulerGraphs?: SchedulerGraphs;
}

export interface GenerationSettings {
  /** Steps and guidance of the one-off negative feature (the reference's fixed defaults: 30 and 3.0). */
  negativeDitSteps: number;
  negativeGuidance: number;
  /** Written into the PNG's Software text field. */
  software: string;
  /** Distinct user negative prompts whose features are kept (besides " "). @defaultValue 32 */
  negativeCacheSize?: number;
}

const DEFAULT_NEGATIVE_CACHE = 32;

/** The text whose features are the decoder's negative for these options: the user's `negative`, else " ". */
export function negativeTextOf(o: Pick<ImagineOptions, 'negative'>): string {
  const t = o.negative?.trim();
  return t ? t : NEGATIVE_TEXT;
}

/**
 * The decoder (UNet) stage's CFG scale. BLIP3o's diffusion-decoder pipeline (spec §4, [P] `__call__`) guides only when
 * guidance_scale > 1; at or below 1 its noise is the conditional prediction alone. Scale 1 gives exactly that
 * (ε_neg + 1·(ε_c − ε_neg) = ε_c), whereas a scale below 1 would pull the image towards the negative.
 */
export function decoderGuidance(guidance: number): number {
  return guidance > 1 ? guidance : 1;
}

export function cancelled(): AppError {
  return new AppError('cancelled', 'the job was aborted');
}

export class Generator {
  /** Negative features by text (insertion order = least recently used first). */
  private readonly negatives = new Map<string, Promise<Float32Array>>();

  constructor(
    private readonly m: GenerationModels,
    private readonly llm: Conditioner,
    private readonly settings: GenerationSettings,
    private readonly vision?: ImageEncoder,
    /** How each DiT/UNet/VAE step runs: alone (the default) or batched with other requests' (issue 18). */
    private readonly stepper: DiffusionStepper = soloStepper(m),
  ) {}

  async generate(req: GenerateRequest, ctx: RunContext): Promise<GeneratedImage> {
    try {
      return await this.generateOne(req, ctx);
    } catch (e) {
      // a step aborted while it waited for a batch rejects with the signal's bare reason: report it as check() does
      if (ctx.signal.aborted && !(e instanceof AppError)) throw ctx.signal.reason instanceof AppError ? ctx.signal.reason : cancelled();
      throw e;
    }
  }

  private async generateOne(req: GenerateRequest, ctx: RunContext): Promise<GeneratedImage> {
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

    // 2. features: the negative (first call for its text only) then the prompt's own DiT sampling
    const negativeText = negativeTextOf(o);
    const negativeFirst = !this.negatives.has(negativeText);
    const featureTotal = o.ditSteps + (negativeFirst ? this.settings.negativeDitSteps : 0);
    let done = 0;
    const featureStep = () => {
      check();
      ctx.onProgress({ stage: 'features', step: done++, total: featureTotal });
    };
    const neg = await this.negativeFor(negativeText, featureStep, ctx.signal);
    const cond = await this.sampleFeatures(z, o.ditSteps, o.guidance, new GaussianRng(o.seed, RngStream.ditNoise), featureStep, ctx.signal);
    ctx.onProgress({ stage: 'features', step: featureTotal, total: featureTotal });

    // 3. decoding: UNet Euler loop with CFG [cond, neg], then the fp32 VAE
    const geo = geometryFor(o.aspect, this.m.unetSampleSize, this.m.vaeScaleFactor, this.m.unetLatentMultiple);
    const latents = await this.denoise(cond, neg, geo, o, ctx.signal, (i, total) => {
      check();
      ctx.onProgress({ stage: 'decoding', step: i, total: total + 1 });
    });
    let image: Float32Array;
    try {
      check();
      image = await this.stepper.vae({ latents, dims: [this.m.unetInChannels, geo.latentHeight, geo.latentWidth] }, ctx.signal);
    } finally {
      freeLatent(latents);
    }
    const rgb = toRgb8(image, geo.height, geo.width);
    const png = await encodePng(rgb, geo.width, geo.height, {
      prompt: req.prompt,
      seed: String(o.seed),
      settings: JSON.stringify({ ...o, mode: req.image ? 'vary' : 'imagine', width: geo.width, height: geo.height }),
      Software: this.settings.software,
    });
    ctx.onProgress({ stage: 'decoding', step: o.decoderSteps + 1, total: o.decoderSteps + 1 });
    return { png, width: geo.width, height: geo.height };
  }

  /**
   * The negative feature of `text`: " " (the reference's default) or a user's negative prompt, through the same
   * path (raw text, no chat template → LLM → DiT with the fixed negative seed, steps and guidance), computed once
   * per distinct text and kept (" " always; user texts up to `negativeCacheSize`, least recently used dropped).
   * A failed or cancelled computation is not cached.
   *
   * Concurrent requests (worker.maxBatch.diffusion > 1) wait for the computation the first of them started, which runs
   * under that request's signal: when it fails (that request was cancelled), each waiting request that is still live
   * starts its own, so cancelling one job never fails another.
   */
  private async negativeFor(text: string, beforeStep: () => void, signal: AbortSignal): Promise<Float32Array> {
    for (;;) {
      const { feature, mine } = this.negativeFeature(text, beforeStep, signal);
      try {
        return await feature;
      } catch (e) {
        if (mine || signal.aborted) throw e;
      }
    }
  }

  private negativeFeature(text: string, beforeStep: () => void, signal: AbortSignal): { feature: Promise<Float32Array>; mine: boolean } {
    let p = this.negatives.get(text);
    if (p) {
      this.negatives.delete(text); // re-insert: most recently used last
      this.negatives.set(text, p);
      return { feature: p, mine: false };
    }
    const computed = (async () => {
      // a user's negative is user text: plain text, never control tokens (" " encodes the same either way)
      const z = await this.llm.latentHiddenStates(this.llm.encodePrompt([{ text, trusted: false }]));
      return this.sampleFeatures(z, this.settings.negativeDitSteps, this.settings.negativeGuidance, new GaussianRng(0, RngStream.negativeDitNoise), beforeStep, signal);
    })();
    p = computed;
    this.negatives.set(text, computed);
    computed.catch(() => {
      if (this.negatives.get(text) === computed) this.negatives.delete(text);
    });
    const limit = Math.max(1, this.settings.negativeCacheSize ?? DEFAULT_NEGATIVE_CACHE);
    const userTexts = () => this.negatives.size - (this.negatives.has(NEGATIVE_TEXT) ? 1 : 0); // " " is never dropped
    for (const key of [...this.negatives.keys()]) {
      if (userTexts() <= limit) break;
      if (key !== NEGATIVE_TEXT && key !== text) this.negatives.delete(key);
    }
    return { feature: p, mine: true };
  }

  /** How many negative features are cached now (the " " one included). */
  get cachedNegatives(): number {
    return this.negatives.size;
  }

  /** Flow matching with CFG against zeros in LLM space, batch [uncond, cond] (spec §3.4, pitfall 8). */
  async sampleFeatures(z: Float32Array, steps: number, guidance: number, rng: GaussianRng, beforeStep: () => void, signal?: AbortSignal): Promise<Float32Array> {
    const T = this.m.ditGrid * this.m.ditGrid;
    const C = this.m.latentChannels;
    const H = this.llm.hiddenSize;
    const tokens = z.length / H;
    const zz = new Float32Array(2 * z.length);
    zz.set(z, z.length); // row 0: zeros (null condition, before caption_projection: pitfall 7)
    // the condition is the same at every step: on a GPU provider it is uploaded once and stays there
    const zDev = await toDevice({ data: zz, dims: [2, tokens, H] }, this.m.dit.provider);
    let sample: DitSample | undefined;
    try {
      const x = await this.initialLatent(rng.gaussian(T * C), [T, C], this.m.dit);
      sample = new DitSample(x, [T, C], flowMatchSchedule(steps), { host: zz, device: zDev, dims: [tokens, H] }, guidance);
      while (!sample.done) {
        beforeStep();
        sample.advance(await this.stepper.dit(sample.next(), signal));
      }
      return sample.x instanceof Float32Array ? sample.x : ((await toHost(sample.x)).data as Float32Array); // the feature: one download
    } finally {
      zDev.dispose();
      if (sample) freeLatent(sample.x);
    }
  }

  /** The first latent where the steps keep it: host memory, or uploaded once as [1, …dims] (device latents). */
  private async initialLatent(x: Float32Array, dims: readonly number[], session: ModelSession): Promise<Latent> {
    return this.m.schedulerGraphs ? toDevice({ data: x, dims: [1, ...dims] }, session.provider) : x;
  }

  /** Euler-leading sampling of the UNet latent with CFG [cond, neg] (spec §4, pitfalls 8–10). */
  private async denoise(
    cond: Float32Array,
    neg: Float32Array,
    geo: ReturnType<typeof geometryFor>,
    o: ImagineOptions,
    signal: AbortSignal,
    beforeStep: (i: number, total: number) => void,
  ): Promise<Latent> {
    const schedule = eulerDiscreteSchedule(this.m.scheduler, o.decoderSteps);
    const C = this.m.latentChannels;
    const tokens = cond.length / C;
    const dims = [this.m.unetInChannels, geo.latentHeight, geo.latentWidth] as const;
    const n = dims[0] * dims[1] * dims[2];
    const x = new GaussianRng(o.seed, RngStream.unetLatent).gaussian(n);
    // Stryker disable next-line EqualityOperator: one more pass writes past the typed array's end, which JavaScript ignores
    for (let k = 0; k < n; k++) x[k] = x[k]! * schedule.initNoiseSigma;
    const enc = new Float32Array(2 * cond.length);
    enc.set(cond, 0);
    enc.set(neg, cond.length);
    const text = new Float32Array(2 * C); // mean over the feature tokens (pitfall 9)
    // Stryker disable next-line EqualityOperator: one more pass writes past the typed array's end, which JavaScript ignores
    for (let b = 0; b < 2; b++) {
      const f = b === 0 ? cond : neg;
      for (let i = 0; i < tokens; i++) for (let j = 0; j < C; j++) text[b * C + j]! += f[i * C + j]! / tokens;
    }
    const timeIds = Float32Array.from([...geo.sizeIds, ...geo.sizeIds]);
    // every step's conditioning, uploaded once (GPU providers); the latent too with device latents, else it comes back
    // each step for the TypeScript Euler update
    const p = this.m.unet.provider;
    const up = async (host: Float32Array, rowDims: readonly number[]): Promise<Conditioning> => ({
      host,
      device: await toDevice({ data: host, dims: [2, ...rowDims] }, p),
      dims: rowDims,
    });
    const conditioning: UnetConditioning = {
      encoderHiddenStates: await up(enc, [tokens, C]),
      textEmbeds: await up(text, [C]),
      timeIds: await up(timeIds, [6]),
    };
    let sample: UnetSample | undefined;
    try {
      sample = new UnetSample(await this.initialLatent(x, dims, this.m.unet), dims, schedule, conditioning, decoderGuidance(o.guidance));
      while (!sample.done) {
        beforeStep(sample.step, sample.total);
        sample.advance(await this.stepper.unet(sample.next(), signal));
      }
      const last = sample.x;
      sample = undefined; // the caller decodes and frees it
      return last;
    } finally {
      for (const c of Object.values(conditioning)) c.device?.dispose();
      if (sample) freeLatent(sample.x);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.m.dit.release(), this.m.unet.release(), this.m.vae.release(), this.m.schedulerGraphs?.release()]);
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

export interface GenerationRuntime {
  /**
   * Keep the latents with the sessions between DiT and UNet steps: the CFG combine and the scheduler update run as the
   * graphs of scheduler-graphs.ts on the models' provider and the model outputs stay there (a GPU buffer on WebGPU).
   * Off, both run in TypeScript on host arrays. On the CPU provider this is the TypeScript loop, whose bytes the tests
   * pin; turning it on there only serves tests. `executionProvider: 'auto'` is not resolved here: pass the provider
   * the start-up probe chose. @defaultValue executionProvider === 'webgpu'
   */
  latentsOnDevice?: boolean;
}

/** Opens the three generation sessions; every size comes from the configs (nothing hard-coded). */
export async function openGenerationModels(g: GenerationGraphs, runtime: SessionOptions, opts: GenerationRuntime = {}): Promise<GenerationModels> {
  const grid = Math.round(Math.sqrt(g.nQuery));
  if (grid * grid !== g.nQuery) throw new AppError('model', `n_query ${g.nQuery} is not a square number of DiT tokens`);
  const onDevice = opts.latentsOnDevice ?? runtime.executionProvider === 'webgpu';
  const keeping = (output: string): SessionOptions => (onDevice ? { ...runtime, keepOnDevice: [output] } : runtime);
  const [dit, unet, vae] = await Promise.all([
    openSession(g.ditOnnx, keeping('velocity')),
    openSession(g.unetOnnx, keeping('noise_pred')),
    openSession(g.vaeOnnx, runtime),
  ]);
  return {
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
    ...(onDevice ? { schedulerGraphs: new SchedulerGraphs(dit.provider, runtime.intraOpThreads) } : {}),
  };
}

export async function loadGeneration(
  g: GenerationGraphs,
  runtime: SessionOptions,
  llm: Conditioner,
  settings: GenerationSettings,
  vision?: ImageEncoder,
  stepper?: (m: GenerationModels) => DiffusionStepper,
): Promise<Generator> {
  const m = await openGenerationModels(g, runtime);
  return new Generator(m, llm, settings, vision, stepper?.(m));
}
