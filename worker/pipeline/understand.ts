// The understanding half of the pipeline (spec §2): answer a question about an image with BLIP3-o's stock
// Qwen2.5-VL path. worker/pipeline/blip3o.ts composes it with the generation half.
//
//   bytes ─preprocess (image.ts: header checks first, UserError('bad_image'))─▶ patch rows, grid_thw
//         ─vision graph─▶ M merged tokens [M, H]
//   chat template (history turns, image in the first user turn) ─tokenize─▶ ids; the one <|image_pad|> → M copies
//         ─embedding graph─▶ embeds; image tokens scattered into the <|image_pad|> rows (masked_scatter)
//         ─M-RoPE ids (mrope.ts) + Qwen decoder prefill─▶ sample, decode with p + rope_delta, stream text
//
// A bad image fails in preprocessing, before any session runs, so the worker thread keeps serving (§ "leave the
// worker healthy"). The vision graph is fp32 whatever model.dtype says (pitfall 12).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AppError } from '../../src/errors.ts';
import { readManifest, type Manifest } from '../builder/manifest.ts';
import { openSession, type ModelSession, type SessionOptions, type TensorInput } from '../runtime/session.ts';
import { preprocessImage, preprocessSquare, visionFeeds, type Grid, type ImageLimits, type PatchGeometry, type PreprocessedImage } from './image.ts';
import { ropeIndex } from './mrope.ts';
import { DecodeBatch } from './decode-batch.ts';
import { generateTokens, KvDecoder, kvOutputNames, seededRandom, type GenerateTokensOptions, type GeneratedTokens, type KvState } from './sampling.ts';
import { loadTokenizer, TOKENS, type ChatMessage, type QwenTokenizer } from './tokenizer.ts';
import type { Answer, RunContext, UnderstandRequest } from './types.ts';

/** Image → image inputs are squash-resized to this side (spec §3.7: 448×448 → grid 32×32 → 256 tokens). */
export const GENERATION_IMAGE_SIDE = 448;

/** The Qwen text model as understanding needs it; blip3o.ts may pass the one it already opened for generation. */
export interface TextModel {
  tokenizer: QwenTokenizer;
  /** input_ids → inputs_embeds [ids.length, H] (the embedding graph). */
  embed(ids: readonly number[]): Promise<Float32Array>;
  /** The decoder with its KV cache (worker/pipeline/sampling.ts). One sequence at a time: hold `exclusive`. */
  decoder: KvDecoder;
  /** Continuous batching of decode steps across the requests of this thread (worker.maxBatch.decode > 1 on a
   *  provider whose cache is host memory; worker/pipeline/decode-batch.ts). Undefined: decode through `decoder`. */
  batch: DecodeBatch | undefined;
  /** Runs `fn` while no other request uses `decoder`'s live cache (requests of one thread run concurrently when
   *  worker.maxBatch > 1; without batching their decoding takes turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  hiddenSize: number;
  close(): Promise<void>;
}

export interface Understanding {
  understand(req: UnderstandRequest, ctx: RunContext): Promise<Answer>;
  /** Vision tokens [tokens, H] of an image squash-resized to 448×448 (image variations, spec §3.7, and the
   *  self-checks of worker/pipeline/checks.ts), with its patch grid (for M-RoPE positions). */
  encodeImage(image: Uint8Array): Promise<{ features: Float32Array; tokens: number; grid: Grid }>;
  /** Same as encodeImage, under the name of generate.ts's `ImageEncoder`. */
  encodeForGeneration(image: Uint8Array): Promise<{ features: Float32Array; tokens: number }>;
  /** How many times the vision graph has run (the checks count their encodings with it). */
  readonly visionRuns: number;
  /** The vision geometry (merge size for M-RoPE). */
  readonly mergeSize: number;
  close(): Promise<void>;
}

// ---- manifest reading ------------------------------------------------------------------------------------------

function component(m: Manifest, name: string, modelDir: string): Manifest['components'][string] {
  const c = m.components[name];
  if (!c) throw new AppError('model', `${join(modelDir, 'manifest.json')} has no "${name}" component: convert the snapshot again`);
  return c;
}
function graphFile(c: Manifest['components'][string], graph: string, modelDir: string): string {
  const g = c.graphs[graph];
  if (!g) throw new AppError('model', `the converted model in ${modelDir} has no ${graph} graph`);
  return join(modelDir, g.file);
}
function num(info: Record<string, unknown>, key: string, where: string): number {
  const v = info[key];
  if (typeof v !== 'number') throw new AppError('model', `manifest ${where}.info.${key} is missing`);
  return v;
}

/** Opens the embedding and decoder graphs of the `text` component. `maxBatch` > 1 (worker.maxBatch.decode) turns on
 *  continuous batching of decode steps where the provider keeps the cache in host memory (not WebGPU). */
export async function openTextModel(modelDir: string, manifest: Manifest, tokenizer: QwenTokenizer, runtime: SessionOptions, maxBatch = 1): Promise<TextModel> {
  const text = component(manifest, 'text', modelDir);
  const where = 'components.text';
  const H = num(text.info, 'hidden_size', where);
  const numLayers = num(text.info, 'num_hidden_layers', where);
  const [embedding, decoderSession] = await Promise.all([
    openSession(graphFile(text, 'embedding', modelDir), runtime),
    openSession(graphFile(text, 'decoder', modelDir), { ...runtime, keepOnDevice: kvOutputNames(numLayers) }), // the KV cache stays on the GPU
  ]);
  const decoder = new KvDecoder(decoderSession, {
    numLayers,
    numKvHeads: num(text.info, 'num_key_value_heads', where),
    headDim: num(text.info, 'head_dim', where),
    hiddenSize: H,
    vocabSize: num(text.info, 'vocab_size', where),
  });
  const embed = async (ids: readonly number[]) => {
    const out = await embedding.run({ input_ids: { data: BigInt64Array.from(ids, (i) => BigInt(i)), dims: [1, ids.length] } });
    const embeds = out.inputs_embeds?.data;
    if (!(embeds instanceof Float32Array)) throw new AppError('model', 'the embedding graph has no float inputs_embeds output');
    return embeds;
  };
  let turn: Promise<unknown> = Promise.resolve();
  return {
    tokenizer,
    hiddenSize: H,
    decoder,
    batch: maxBatch > 1 && decoder.sharesCache ? new DecodeBatch(decoderSession, decoder.dims, embed, { maxBatch }) : undefined,
    exclusive<T>(fn: () => Promise<T>): Promise<T> {
      const run = turn.then(fn, fn);
      turn = run.catch(() => undefined);
      return run;
    },
    embed,
    async close() {
      await Promise.all([embedding.release(), decoderSession.release()]);
    },
  };
}

// ---- prompt ---------------------------------------------------------------------------------------------------

/**
 * The Qwen2.5-VL conversation (spec §2.3): the image goes in the first user turn, before its text (history trimmed by
 * an adapter may start with an assistant turn; then it is the first user turn after it, at worst the question);
 * earlier turns follow in order; the template adds the default system prompt and the open assistant turn.
 */
export function conversation(question: string, history: UnderstandRequest['history']): ChatMessage[] {
  const turns = [...history, { role: 'user' as const, text: question }];
  const withImage = turns.findIndex((t) => t.role === 'user');
  return turns.map((t, i) =>
    i === withImage ? { role: 'user', content: [{ type: 'image' }, { type: 'text', text: t.text }] } : { role: t.role, content: t.text },
  );
}

/** Replaces the template's single <|image_pad|> by `tokens` copies (the processor's expansion, spec §2.3). */
export function expandImagePads(ids: readonly number[], tokens: number): number[] {
  const at = ids.indexOf(TOKENS.imagePad);
  if (at < 0 || ids.indexOf(TOKENS.imagePad, at + 1) >= 0) throw new AppError('internal', 'the prompt must hold exactly one <|image_pad|>');
  return [...ids.slice(0, at), ...Array<number>(tokens).fill(TOKENS.imagePad), ...ids.slice(at + 1)];
}

/** masked_scatter: the rows of `embeds` at <|image_pad|> ids take the vision tokens in order. */
export function scatterImage(embeds: Float32Array, ids: readonly number[], features: Float32Array, hidden: number): void {
  let k = 0;
  ids.forEach((id, pos) => {
    if (id !== TOKENS.imagePad) return;
    embeds.set(features.subarray(k * hidden, (k + 1) * hidden), pos * hidden);
    k++;
  });
  if (k * hidden !== features.length) throw new AppError('internal', `${k} image placeholders for ${features.length / hidden} vision tokens`);
}

const rows = (positions: BigInt64Array): number[][] => {
  const n = positions.length / 3;
  return [0, 1, 2].map((r) => Array.from(positions.subarray(r * n, (r + 1) * n), Number));
};

/**
 * Decodes one answer: through the thread's decode batch when it has one (prefilled in chunks between the others'
 * steps, each step batched with whoever steps now), else on the decoder alone while holding `exclusive`. `prompt` is
 * a prompt to prefill (embeddings + M-RoPE position rows), or a cache made elsewhere with its first logits (the
 * checks' caption row: without a batch the caller already holds `exclusive` for `state` and `live` prompts).
 */
export async function decodeAnswer(
  llm: TextModel,
  prompt:
    | { embeds: Float32Array; positions: number[][] }
    | { state: KvState; logits: Float32Array }
    /** the decoder's live cache, with the caller already holding `exclusive` (never with a batch) */
    | { live: true; logits: Float32Array },
  o: Omit<GenerateTokensOptions, 'prefill' | 'step'>,
): Promise<GeneratedTokens> {
  const batch = llm.batch;
  if ('live' in prompt) {
    if (batch) throw new AppError('internal', 'decodeAnswer: a live-cache prompt with a decode batch');
    return generateTokens({ ...o, prefill: async () => prompt.logits, step: async (id) => llm.decoder.step(await llm.embed([id])) });
  }
  if (batch) {
    let seq: import('./decode-batch.ts').Sequence | undefined;
    try {
      return await generateTokens({
        ...o,
        prefill: async () => {
          if ('state' in prompt) {
            seq = batch.adopt(prompt.state);
            return prompt.logits;
          }
          const started = await batch.start(prompt.embeds, prompt.positions, o.signal);
          seq = started.seq;
          return started.logits;
        },
        step: (id) => batch.next(seq!, id, o.signal),
      });
    } finally {
      if (seq) batch.close(seq);
    }
  }
  if ('state' in prompt) {
    // the caller holds `exclusive` (the checks: prefix prefill, batched questions and caption in one turn)
    llm.decoder.restore(prompt.state);
    return generateTokens({ ...o, prefill: async () => prompt.logits, step: async (id) => llm.decoder.step(await llm.embed([id])) });
  }
  return llm.exclusive(() =>
    generateTokens({
      ...o,
      prefill: async () => (await llm.decoder.prefill(prompt.embeds, prompt.positions)).logits, // rope delta kept by KvDecoder
      step: async (id) => llm.decoder.step(await llm.embed([id])),
    }),
  );
}

function throwIfAborted(signal: AbortSignal): void {
  if (!signal.aborted) return;
  if (signal.reason instanceof AppError) throw signal.reason;
  throw new AppError('cancelled', 'the job was aborted', { cause: signal.reason });
}

// ---- loading ---------------------------------------------------------------------------------------------------

function findTokenizer(modelDir: string, given: string | undefined): string {
  const candidates = given ? [given] : [join(modelDir, 'tokenizer'), modelDir];
  const found = candidates.find((d) => existsSync(join(d, 'tokenizer.json')));
  if (!found) throw new AppError('model', `no tokenizer.json for the model in ${modelDir} (looked in ${candidates.join(', ')})`);
  return found;
}

export interface UnderstandingOptions {
  /** The text model already opened for generation (shared: one decoder in memory). Opened here when absent. */
  text?: TextModel;
  /** Where tokenizer.json is when `text` is absent. @defaultValue `<modelDir>/tokenizer`, then `modelDir` */
  tokenizerDir?: string;
  /** worker.maxBatch.decode for the text model opened here (when `text` is absent). @defaultValue 1 */
  maxBatch?: number;
}

/**
 * Opens the vision graph (and, unless `options.text` is given, the tokenizer, embedding and decoder graphs) of the
 * converted model in `modelDir` (manifest.json from worker/builder/convert.ts).
 */
export async function loadUnderstanding(
  modelDir: string,
  runtime: Pick<SessionOptions, 'executionProvider' | 'intraOpThreads'>,
  limits: ImageLimits,
  options: UnderstandingOptions = {},
): Promise<Understanding> {
  const manifest = readManifest(modelDir);
  if (!manifest) throw new AppError('model', `no converted model in ${modelDir} (run \`npm run model -- convert\`)`);
  const vision = component(manifest, 'vision', modelDir);
  const where = 'components.vision';
  const geometry: PatchGeometry = {
    patchSize: num(vision.info, 'patch_size', where),
    temporalPatchSize: num(vision.info, 'temporal_patch_size', where),
    mergeSize: num(vision.info, 'spatial_merge_size', where),
  };
  const windowSize = num(vision.info, 'window_size', where);
  const headDim = num(vision.info, 'head_dim', where);
  const outHidden = num(vision.info, 'out_hidden_size', where);
  const visionSession = await openSession(graphFile(vision, 'vision', modelDir), runtime);
  const ownText = !options.text;
  const llm = options.text ?? (await openTextModel(modelDir, manifest, loadTokenizer(findTokenizer(modelDir, options.tokenizerDir)), runtime, options.maxBatch));
  if (llm.hiddenSize !== outHidden) throw new AppError('model', `vision tokens are ${outHidden} wide but the LLM hidden size is ${llm.hiddenSize}`);

  let visionRuns = 0;
  async function encode(image: PreprocessedImage): Promise<{ features: Float32Array; tokens: number }> {
    const feeds = visionFeeds(image, geometry, windowSize, headDim);
    visionRuns++;
    const out = await visionSession.run(feeds as unknown as Record<string, TensorInput>, ['image_embeds']);
    const features = out.image_embeds?.data;
    if (!(features instanceof Float32Array)) throw new AppError('model', 'the vision graph has no float image_embeds output');
    return { features, tokens: features.length / outHidden };
  }

  async function encodeImage(bytes: Uint8Array) {
    const image = await preprocessSquare(bytes, GENERATION_IMAGE_SIDE, limits, geometry);
    return { ...(await encode(image)), grid: image.grid };
  }

  async function understand(req: UnderstandRequest, ctx: RunContext): Promise<Answer> {
    // 1. the text and the image: every user-fixable problem surfaces here, before any model runs
    const image = await preprocessImage(req.image, limits, geometry);
    throwIfAborted(ctx.signal);
    ctx.onProgress({ stage: 'encoding', step: 0, total: 1 });
    const { features, tokens } = await encode(image);
    ctx.onProgress({ stage: 'encoding', step: 1, total: 1 });
    throwIfAborted(ctx.signal);

    // 2. the prompt: template → ids (question and history as plain text: tokenizer.ts) → image pads expanded → embeddings with the vision tokens scattered in
    const ids = expandImagePads(llm.tokenizer.encodeChat(conversation(req.question, req.history)), tokens);
    const embeds = await llm.embed(ids);
    scatterImage(embeds, ids, features, llm.hiddenSize);
    const { positionIds } = ropeIndex(ids, [image.grid], { imageTokenId: TOKENS.imagePad, mergeSize: geometry.mergeSize });

    // 3. decode, streaming the text
    const o = req.options;
    const stream = llm.tokenizer.streamDecoder();
    let partialText = '';
    ctx.onProgress({ stage: 'answering', step: 0, total: o.maxNewTokens, partialText });
    const { tokens: tokenIds } = await decodeAnswer(llm, { embeds, positions: rows(positionIds) }, {
      promptIds: ids,
      maxNewTokens: o.maxNewTokens,
      stopIds: llm.tokenizer.generation.eosTokenIds,
      sampling: { temperature: o.temperature, topP: o.topP, topK: o.topK, repetitionPenalty: o.repetitionPenalty },
      random: seededRandom(o.seed),
      signal: ctx.signal,
      onToken(id, index) {
        partialText += stream.push(id);
        ctx.onProgress({ stage: 'answering', step: index + 1, total: o.maxNewTokens, partialText });
      },
    });
    return { text: llm.tokenizer.decodeText(tokenIds).trim(), tokenIds };
  }

  return {
    understand,
    encodeImage,
    encodeForGeneration: encodeImage,
    get visionRuns() {
      return visionRuns;
    },
    mergeSize: geometry.mergeSize,
    async close() {
      await visionSession.release();
      if (ownText) await llm.close();
    },
  };
}
