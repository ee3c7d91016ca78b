// The model checks an image (issue 16): a one-sentence caption (alt text), the prompt-match score and yes/no
// moderation questions, asked of one image with one vision encoding and one prefill of its tokens.
//
//   image ─448² squash, vision graph (once)─▶ M tokens
//   prefix = template up to <|vision_end|> (system, user, image)   ─embed, scatter, M-RoPE─▶ prefillCache (KV only)
//   row b  = "<question b><|im_end|>\n<|im_start|>assistant\n"      ─one batched forward over the shared cache─▶
//            yes/no rows: P(yes) from the first answer token's logits over the tokenizer's own yes/no ids
//            caption row: greedy decoding continues from that row's cache (batch 1)
//
// Every question starts from the same prefix, so the row's prompt is exactly what the understanding path builds for
// that question alone (tested against a full prefill of it), and the image costs one vision run and one prefill.
import { AppError } from '../../src/errors.ts';
import { clipText } from '../../src/text.ts';
import { conversation, decodeAnswer, expandImagePads, scatterImage, type TextModel, type Understanding } from './understand.ts';
import { ropeIndex } from './mrope.ts';
import { GREEDY, type KvState } from './sampling.ts';
import { TOKENS } from './tokenizer.ts';
import type { CheckRequest, CheckResult, RunContext } from './types.ts';

export const CAPTION_QUESTION = 'Describe this image in one sentence.';
/** The yes/no answer tokens, both capitalisations (looked up in the model's own tokenizer). */
export const YES_WORDS = ['yes', 'Yes'] as const;
export const NO_WORDS = ['no', 'No'] as const;

/** Chat-control markers in user text would change the question's structure; they are dropped from it. */
const stripMarkers = (text: string): string => text.replace(/<\|[a-z_]+\|>/g, ' ').replace(/\s+/g, ' ').trim();

/** "Does this image show: a red fox in snow? Answer yes or no." */
export function matchQuestion(prompt: string): string {
  return `Does this image show: ${stripMarkers(prompt).replace(/[\s.!?;:,]+$/, '')}? Answer yes or no.`;
}

/** A configured moderation question as asked: "Does this image contain nudity? Answer yes or no." */
export function yesNoQuestion(question: string): string {
  const q = stripMarkers(question);
  return /answer yes or no/i.test(q) ? q : `${q} Answer yes or no.`;
}

/** P(yes) = Σ softmax(logits)[yes ids] / Σ softmax(logits)[yes ∪ no ids] (the full softmax's normaliser cancels). */
export function yesProbability(logits: Float32Array, ids: { yes: readonly number[]; no: readonly number[] }): number {
  const all = [...ids.yes, ...ids.no].map((i) => logits[i]!);
  const max = Math.max(...all);
  const mass = (list: readonly number[]) => list.reduce((s, i) => s + Math.exp(logits[i]! - max), 0);
  const yes = mass(ids.yes);
  return yes / (yes + mass(ids.no));
}

/** The caption's first sentence, whitespace collapsed; '' when the model wrote nothing usable. */
export function firstSentence(text: string, maxChars = 400): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const end = /[.!?](\s|$)/.exec(flat);
  const sentence = end ? flat.slice(0, end.index + 1) : flat;
  return clipText(sentence, maxChars); // between whole characters (src/text.ts)
}

function throwIfAborted(signal: AbortSignal): void {
  if (!signal.aborted) return;
  if (signal.reason instanceof AppError) throw signal.reason;
  throw new AppError('cancelled', 'the job was aborted', { cause: signal.reason });
}

type Vision = Pick<Understanding, 'encodeImage' | 'visionRuns' | 'mergeSize'>;

export class ImageChecker {
  private ids: { yes: number[]; no: number[] } | undefined;

  constructor(
    private readonly text: TextModel,
    private readonly vision: Vision,
  ) {}

  /** The tokenizer's own ids of "yes"/"Yes" and "no"/"No" (each a single token in Qwen's vocabulary). */
  yesNoIds(): { yes: number[]; no: number[] } {
    if (!this.ids) {
      const look = (words: readonly string[]) =>
        words.map((w) => {
          const id = this.text.tokenizer.tokenId(w);
          const enc = this.text.tokenizer.encode(w);
          if (id === undefined || enc.length !== 1 || enc[0] !== id) throw new AppError('model', `the tokenizer has no single token for "${w}"`);
          return id;
        });
      this.ids = { yes: look(YES_WORDS), no: look(NO_WORDS) };
    }
    return this.ids;
  }

  /** The prompt of `question` about one image, split into the image prefix every question shares and its own rest. */
  private split(question: string): { prefix: number[]; suffix: number[] } {
    const ids = this.text.tokenizer.encodeChat(conversation(question, []));
    const cut = ids.indexOf(TOKENS.visionEnd) + 1;
    if (cut <= 0) throw new AppError('internal', 'the chat template put no <|vision_end|> in the prompt');
    return { prefix: ids.slice(0, cut), suffix: ids.slice(cut) };
  }

  async check(req: CheckRequest, ctx: RunContext): Promise<CheckResult> {
    const counts = { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 };
    const rows: { id: string; kind: 'caption' | 'match' | 'question'; text: string }[] = [];
    if (req.match && req.prompt?.trim()) rows.push({ id: 'match', kind: 'match', text: matchQuestion(req.prompt) });
    for (const q of req.questions) rows.push({ id: q.id, kind: 'question', text: yesNoQuestion(q.question) });
    if (req.captionMaxTokens) rows.push({ id: 'caption', kind: 'caption', text: CAPTION_QUESTION }); // last: see step 3
    const result: CheckResult = { answers: {}, counts };
    if (rows.length === 0) return result;
    const total = 3 + (req.captionMaxTokens ?? 0);
    const progress = (step: number) => ctx.onProgress({ stage: 'checking', step, total });
    throwIfAborted(ctx.signal);
    progress(0);

    // 1. one vision encoding of the image
    const runsBefore = this.vision.visionRuns;
    const enc = await this.vision.encodeImage(req.image);
    counts.visionEncodings = this.vision.visionRuns - runsBefore;
    progress(1);
    throwIfAborted(ctx.signal);

    // 2–4 use the decoder's live cache unless the thread batches decoding: then only the decode batch holds
    // sequences and prefillCache/continueBatch are pure, so concurrent checks need no turn-taking.
    const rest = async () => {
      // 2. one prefill of the shared prefix (system + user turn up to the image's end)
      const split = rows.map((r) => this.split(r.text));
      const prefix0 = split[0]!.prefix;
      if (split.some((s) => s.prefix.length !== prefix0.length || s.prefix.some((id, i) => id !== prefix0[i])))
        throw new AppError('internal', 'the questions do not share one image prefix');
      const prefixIds = expandImagePads(prefix0, enc.tokens);
      const H = this.text.hiddenSize;
      const embeds = await this.text.embed(prefixIds);
      scatterImage(embeds, prefixIds, enc.features, H);
      const { positionIds } = ropeIndex(prefixIds, [enc.grid], { imageTokenId: TOKENS.imagePad, mergeSize: this.vision.mergeSize });
      const n = prefixIds.length;
      const positions = [0, 1, 2].map((r) => Array.from(positionIds.subarray(r * n, (r + 1) * n), Number));
      const decoder = this.text.decoder;
      const allSuffix = split.flatMap((s) => s.suffix);
      const suffixEmbeds = await this.text.embed(allSuffix);
      let at = 0;
      const suffixes = split.map((s) => {
        const e = suffixEmbeds.slice(at * H, (at + s.suffix.length) * H);
        at += s.suffix.length;
        return e;
      });
      let logits: Float32Array[];
      let states: KvState[] | undefined; // each row's cache (host memory), for the caption row's decoding
      if (decoder.sharesCache) {
        // with a decode batch, the prefix prefill runs in its chunks and the questions' forward between its steps
        const batch = this.text.batch;
        const cache = batch ? await batch.prefillState(embeds, positions, ctx.signal) : await decoder.prefillCache(embeds, positions);
        counts.prefixPrefills++;
        progress(2);
        throwIfAborted(ctx.signal);
        // 3. every question's own tokens as one batched forward over the shared cache
        const out = batch ? await batch.exclusive(() => decoder.continueBatch(cache, suffixes), ctx.signal) : await decoder.continueBatch(cache, suffixes);
        counts.batchedForwards++;
        logits = out.logits;
        states = out.states;
      } else {
        // WebGPU keeps the cache in GPU buffers that cannot be copied per row: each question is prefilled whole (the
        // vision encoding is still shared). The caption row runs last, so its cache is the live one for decoding.
        logits = [];
        const next = Math.max(...positions.flat()) + 1; // text after the image, as get_rope_index numbers it
        for (const suffix of suffixes) {
          const seq = new Float32Array(embeds.length + suffix.length);
          seq.set(embeds, 0);
          seq.set(suffix, embeds.length);
          const k = suffix.length / H;
          const rowPositions = positions.map((p) => [...p, ...Array.from({ length: k }, (_, i) => next + i)]);
          logits.push((await decoder.prefill(seq, rowPositions)).logits);
          counts.prefixPrefills++;
          throwIfAborted(ctx.signal);
        }
        progress(2);
      }
      progress(3);
      const yesNo = this.yesNoIds();
      rows.forEach((r, b) => {
        if (r.kind === 'match') result.match = yesProbability(logits[b]!, yesNo);
        else if (r.kind === 'question') result.answers[r.id] = yesProbability(logits[b]!, yesNo);
      });

      // 4. the caption: greedy decoding from its row's cache
      const c = rows.findIndex((r) => r.kind === 'caption');
      if (c >= 0) {
        const promptIds = [...prefixIds, ...split[c]!.suffix];
        // from its row's cache (the live cache of the WebGPU path, where the caption row ran last)
        const prompt = states ? { state: states[c]!, logits: logits[c]! } : { live: true as const, logits: logits[c]! };
        const { tokens } = await decodeAnswer(this.text, prompt, {
          promptIds,
          maxNewTokens: req.captionMaxTokens!,
          stopIds: this.text.tokenizer.generation.eosTokenIds,
          sampling: GREEDY,
          signal: ctx.signal,
          onToken: (_id, index) => progress(4 + index),
        });
        counts.captionTokens = tokens.length;
        result.caption = firstSentence(this.text.tokenizer.decodeText(tokens));
      }
    };
    await (this.text.batch ? rest() : this.text.exclusive(rest));
    progress(total);
    return result;
  }
}
