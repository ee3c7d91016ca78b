// The real Pipeline (worker/pipeline/types.ts): BLIP3-o on onnxruntime, from a converted model folder
// (`model.onnxDir`: manifest.json + graphs written by worker/builder/convert.ts).
//
//   understand(): helper V's understanding half (worker/pipeline/understand.ts): vision tower → Qwen decoder → text
//   check():      the model looking at an image (worker/pipeline/checks.ts): caption, prompt match, yes/no questions
//   generate():   the generation half (worker/pipeline/generate.ts) over the `Conditioner` built here from the same
//                 Qwen decoder: embed(prompt ids ++ [IMG]) ++ latent_queries → post-norm hidden states of the last
//                 n_query positions, causal, 1-D positions (spec §3.1–3.2, pitfalls 1–2, 18).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AppError } from '../../src/errors.ts';
import { readManifest, type Manifest } from '../builder/manifest.ts';
import { Checkpoint } from '../builder/safetensors.ts';
import type { SessionOptions } from '../runtime/session.ts';
import { batchedStepper } from './diffusion-steps.ts';
import { IMG_TOKEN, loadGeneration, type Conditioner, type Generator, type ImageEncoder } from './generate.ts';
import { ImageChecker } from './checks.ts';
import { loadTokenizer, type TextSegment } from './tokenizer.ts';
import { loadUnderstanding, openTextModel, scatterImage, type TextModel } from './understand.ts';
import type { CreatePipeline, Pipeline } from './types.ts';

/** The reference's fixed settings of the one-off " " negative (sample_images defaults; spec §3.4–3.5). */
const NEGATIVE = { negativeDitSteps: 30, negativeGuidance: 3.0 } as const;

function component(m: Manifest, name: string, modelDir: string): Manifest['components'][string] {
  const c = m.components[name];
  if (!c) throw new AppError('model', `${join(modelDir, 'manifest.json')} has no "${name}" component: convert the snapshot again`);
  return c;
}
function graphPath(c: Manifest['components'][string], graph: string, modelDir: string): string {
  const g = c.graphs[graph];
  if (!g) throw new AppError('model', `the converted model in ${modelDir} has no ${graph} graph`);
  return join(modelDir, g.file);
}
const num = (info: Record<string, unknown>, key: string, where: string): number => {
  const v = info[key];
  if (typeof v !== 'number') throw new AppError('model', `manifest ${where}.info.${key} is missing`);
  return v;
};

/** Where the tokenizer files are: copied next to the graphs (`<onnxDir>/tokenizer/`), or the snapshot the manifest names. */
export function tokenizerDir(modelDir: string, manifest: Manifest): string {
  const raw = manifest as unknown as { snapshotDir?: unknown };
  const candidates = [join(modelDir, 'tokenizer'), modelDir, ...(typeof raw.snapshotDir === 'string' ? [raw.snapshotDir] : []), join(dirname(modelDir), 'snapshot')];
  const found = candidates.find((d) => existsSync(join(d, 'tokenizer.json')));
  if (!found) throw new AppError('model', `no tokenizer.json for the model in ${modelDir} (looked in ${candidates.join(', ')})`);
  return found;
}

/** The Qwen text model (shared with understanding) as the generation half's `Conditioner`. */
export class TextConditioner implements Conditioner {
  constructor(
    private readonly text: TextModel,
    private readonly latentQueries: Float32Array,
    private readonly nQuery: number,
  ) {}

  /** Reads latent_queries [1, n_query, H] written by convert next to the text graphs. */
  static load(modelDir: string, manifest: Manifest, text: TextModel): TextConditioner {
    const c = component(manifest, 'text', modelDir);
    const nQuery = num(c.info, 'n_query', 'components.text');
    const lq = c.tensors.latent_queries;
    if (!lq) throw new AppError('model', `the converted model in ${modelDir} has no latent_queries tensor`);
    const ck = new Checkpoint([join(modelDir, lq.file)]);
    try {
      const queries = ck.readFloat32(lq.key);
      if (queries.length !== nQuery * text.hiddenSize) throw new AppError('model', `latent_queries has ${queries.length} values, expected ${nQuery}×${text.hiddenSize}`);
      return new TextConditioner(text, queries, nQuery);
    } finally {
      ck.close();
    }
  }

  get hiddenSize(): number {
    return this.text.hiddenSize;
  }

  encode(text: string): number[] {
    return this.text.tokenizer.encode(text);
  }

  encodePrompt(segments: readonly TextSegment[]): number[] {
    return this.text.tokenizer.encodePrompt(segments);
  }

  async latentHiddenStates(ids: number[], imageFeatures?: Float32Array): Promise<Float32Array> {
    const H = this.hiddenSize;
    const all = [...ids, IMG_TOKEN];
    const embeds = await this.text.embed(all);
    if (imageFeatures) scatterImage(embeds, all, imageFeatures, H); // masked_scatter into the <|image_pad|> rows
    const seq = new Float32Array(embeds.length + this.latentQueries.length); // prompt ++ [IMG] ++ the raw queries
    seq.set(embeds, 0);
    seq.set(this.latentQueries, embeds.length);
    const hidden = await this.text.decoder.hiddenStates(seq); // causal, positions 0…L+n_query−1 in all three rows
    return hidden.slice(hidden.length - this.nQuery * H);
  }
}

/**
 * The generation half of a converted model folder. `maxBatch`: how many concurrent requests' DiT/UNet steps and VAE
 * decodes share one run (`worker.maxBatch.diffusion`; worker/pipeline/diffusion-steps.ts).
 */
export async function loadGenerationHalf(
  modelDir: string,
  manifest: Manifest,
  llm: Conditioner,
  runtime: SessionOptions,
  vision?: ImageEncoder,
  maxBatch = 1,
): Promise<Generator> {
  const dit = component(manifest, 'dit', modelDir);
  const unet = component(manifest, 'unet', modelDir);
  const vae = component(manifest, 'vae', modelDir);
  return loadGeneration(
    {
      ditOnnx: graphPath(dit, 'dit', modelDir),
      unetOnnx: graphPath(unet, 'unet', modelDir),
      vaeOnnx: graphPath(vae, 'vae_decoder', modelDir),
      nQuery: num(dit.info, 'n_query', 'components.dit'),
      unet: {
        sampleSize: num(unet.info, 'sample_size', 'components.unet'),
        inChannels: num(unet.info, 'in_channels', 'components.unet'),
        crossAttentionDim: num(unet.info, 'cross_attention_dim', 'components.unet'),
        latentMultiple: num(unet.info, 'latent_multiple', 'components.unet'),
        scheduler: unet.info.scheduler as Record<string, unknown>,
      },
      vaeScaleFactor: num(vae.info, 'scale_factor', 'components.vae'),
    },
    runtime,
    llm,
    { ...NEGATIVE, software: `blip3o-chat-bot (${manifest.architecture}, ${manifest.dtype})` },
    vision,
    (m) => batchedStepper(m, maxBatch),
  );
}

export const createPipeline: CreatePipeline = async (options) => {
  const modelDir = options.modelDir;
  const manifest = readManifest(modelDir);
  if (!manifest) throw new AppError('model', `no converted model in ${modelDir} (run \`npm run model -- convert\`)`);
  const runtime: SessionOptions = { executionProvider: options.executionProvider, intraOpThreads: options.intraOpThreads };
  const tok = loadTokenizer(tokenizerDir(modelDir, manifest));
  const text = await openTextModel(modelDir, manifest, tok, runtime, options.maxBatch?.decode); // one decoder for both halves
  const understanding = await loadUnderstanding(modelDir, runtime, options.understanding, { text });
  const gen = await loadGenerationHalf(modelDir, manifest, TextConditioner.load(modelDir, manifest, text), runtime, understanding, options.maxBatch?.diffusion ?? 1);
  const checker = new ImageChecker(text, understanding);
  const pipeline: Pipeline = {
    generate: (req, ctx) => gen.generate(req, ctx),
    understand: (req, ctx) => understanding.understand(req, ctx),
    check: (req, ctx) => checker.check(req, ctx),
    close: async () => {
      await gen.close();
      await understanding.close();
      await text.close();
    },
  };
  return pipeline;
};
