// The real Pipeline (worker/pipeline/types.ts): BLIP3-o on onnxruntime, from a converted model folder
// (`model.onnxDir`: manifest.json + graphs written by worker/builder/convert.ts).
//
//   understand(): helper V's understanding half (worker/pipeline/understand.ts): vision tower → Qwen decoder → text
//   generate():   the generation half (worker/pipeline/generate.ts) over the `Conditioner` built here from the same
//                 Qwen decoder: embed(prompt ids ++ [IMG]) ++ latent_queries → post-norm hidden states of the last
//                 n_query positions, causal, 1-D positions (spec §3.1–3.2, pitfalls 1–2, 18).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AppError } from '../../src/errors.ts';
import { readManifest, type Manifest } from '../builder/manifest.ts';
import { Checkpoint } from '../builder/safetensors.ts';
import { openSession, type ModelSession, type SessionOptions } from '../runtime/session.ts';
import { IMAGE_PAD, IMG_TOKEN, loadGeneration, type Conditioner, type Generator } from './generate.ts';
import { KvDecoder } from './sampling.ts';
import { loadTokenizer, type QwenTokenizer } from './tokenizer.ts';
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

/** The Qwen decoder as the generation half's `Conditioner`. */
export class TextConditioner implements Conditioner {
  private constructor(
    private readonly tok: QwenTokenizer,
    private readonly embedding: ModelSession,
    private readonly decoderSession: ModelSession,
    private readonly decoder: KvDecoder,
    private readonly latentQueries: Float32Array,
    readonly hiddenSize: number,
    private readonly nQuery: number,
  ) {}

  static async load(modelDir: string, manifest: Manifest, tok: QwenTokenizer, runtime: SessionOptions): Promise<TextConditioner> {
    const text = component(manifest, 'text', modelDir);
    const where = 'components.text';
    const H = num(text.info, 'hidden_size', where);
    const nQuery = num(text.info, 'n_query', where);
    const lq = text.tensors.latent_queries;
    if (!lq) throw new AppError('model', `the converted model in ${modelDir} has no latent_queries tensor`);
    const ck = new Checkpoint([join(modelDir, lq.file)]);
    const queries = ck.readFloat32(lq.key);
    ck.close();
    if (queries.length !== nQuery * H) throw new AppError('model', `latent_queries has ${queries.length} values, expected ${nQuery}×${H}`);
    const [embedding, decoder] = await Promise.all([openSession(graphPath(text, 'embedding', modelDir), runtime), openSession(graphPath(text, 'decoder', modelDir), runtime)]);
    const kv = new KvDecoder(decoder, {
      numLayers: num(text.info, 'num_hidden_layers', where),
      numKvHeads: num(text.info, 'num_key_value_heads', where),
      headDim: num(text.info, 'head_dim', where),
      hiddenSize: H,
      vocabSize: num(text.info, 'vocab_size', where),
    });
    return new TextConditioner(tok, embedding, decoder, kv, queries, H, nQuery);
  }

  encode(text: string): number[] {
    return this.tok.encode(text);
  }

  async latentHiddenStates(ids: number[], imageFeatures?: Float32Array): Promise<Float32Array> {
    const H = this.hiddenSize;
    const all = [...ids, IMG_TOKEN];
    const out = await this.embedding.run({ input_ids: { data: BigInt64Array.from(all, (i) => BigInt(i)), dims: [1, all.length] } });
    const embeds = out.inputs_embeds?.data as Float32Array | undefined;
    if (!embeds) throw new AppError('model', 'the embedding graph has no inputs_embeds output');
    if (imageFeatures) {
      // masked_scatter: the IMAGE_PAD positions take the vision tokens in order
      let k = 0;
      all.forEach((id, pos) => {
        if (id !== IMAGE_PAD) return;
        embeds.set(imageFeatures.subarray(k * H, (k + 1) * H), pos * H);
        k++;
      });
      if (k * H !== imageFeatures.length) throw new AppError('internal', `${k} image placeholders for ${imageFeatures.length / H} vision tokens`);
    }
    const seq = new Float32Array(embeds.length + this.latentQueries.length); // prompt ++ [IMG] ++ the raw queries
    seq.set(embeds, 0);
    seq.set(this.latentQueries, embeds.length);
    const { hidden } = await this.decoder.prefill(seq); // causal, positions 0…L+n_query−1 in all three rows
    return hidden.slice(hidden.length - this.nQuery * H);
  }

  async close(): Promise<void> {
    await this.embedding.release();
    await this.decoderSession.release();
  }
}

/** The generation half of a converted model folder. */
export async function loadGenerationHalf(modelDir: string, manifest: Manifest, llm: Conditioner, runtime: SessionOptions): Promise<Generator> {
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
  );
}

export const createPipeline: CreatePipeline = async (options) => {
  const modelDir = options.modelDir;
  const manifest = readManifest(modelDir);
  if (!manifest) throw new AppError('model', `no converted model in ${modelDir} (run \`npm run model -- convert\`)`);
  const runtime: SessionOptions = { executionProvider: options.executionProvider, intraOpThreads: options.intraOpThreads };
  const tok = loadTokenizer(tokenizerDir(modelDir, manifest));
  const llm = await TextConditioner.load(modelDir, manifest, tok, runtime);
  const gen = await loadGenerationHalf(modelDir, manifest, llm, runtime);
  const pipeline: Pipeline = {
    generate: (req, ctx) => gen.generate(req, ctx),
    understand: async () => {
      throw new AppError('model', 'image understanding is not wired into this pipeline yet');
    },
    close: async () => {
      await gen.close();
      await llm.close();
    },
  };
  return pipeline;
};
