// The model checking an image (worker/pipeline/checks.ts) on the tiny checkpoint: make-tiny → convert → the real
// vision graph, tokenizer and Qwen decoder. Each score is checked against a plain-TS softmax over the logits of a
// separate full prefill of that question's own prompt (no shared cache, no batching), at the tokenizer's own
// yes/no ids; the caption against a batch-1 greedy decode of its own prompt; the vision graph runs once per round.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNDERSTANDING_ONLY } from '../../../doubles/understanding-only.ts';
import { convertSnapshot } from '../../../../worker/builder/convert.ts';
import { readManifest } from '../../../../worker/builder/manifest.ts';
import { makeTiny } from '../../../../worker/builder/tiny/index.ts';
import { CAPTION_QUESTION, firstSentence, ImageChecker, matchQuestion, yesNoQuestion, yesProbability } from '../../../../worker/pipeline/checks.ts';
import { ropeIndex } from '../../../../worker/pipeline/mrope.ts';
import { generateTokens, GREEDY } from '../../../../worker/pipeline/sampling.ts';
import { loadTokenizer, TOKENS } from '../../../../worker/pipeline/tokenizer.ts';
import type { ProgressReport, RunContext } from '../../../../worker/pipeline/types.ts';
import { conversation, expandImagePads, loadUnderstanding, openTextModel, scatterImage, type TextModel, type Understanding } from '../../../../worker/pipeline/understand.ts';

const limits = { minPixels: 3136, maxPixels: 200_704, maxInputPixels: 50_000_000, maxAspectRatio: 200 };

const root = mkdtempSync(join(tmpdir(), 'checks-'));
let text: TextModel;
let understanding: Understanding;
let checker: ImageChecker;
let png: Buffer;

function context(): RunContext & { reports: ProgressReport[] } {
  const reports: ProgressReport[] = [];
  return { signal: new AbortController().signal, onProgress: (r) => reports.push(r), reports };
}

beforeAll(async () => {
  const snapshot = join(root, 'snapshot');
  makeTiny(snapshot);
  const out = join(root, 'onnx');
  await convertSnapshot(snapshot, out, { dtype: 'fp32', architectures: UNDERSTANDING_ONLY });
  const runtime = { executionProvider: 'cpu' as const, intraOpThreads: 1 };
  text = await openTextModel(out, readManifest(out)!, loadTokenizer(snapshot), runtime);
  understanding = await loadUnderstanding(out, runtime, limits, { text });
  checker = new ImageChecker(text, understanding);
  const raw = Buffer.alloc(96 * 64 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 13 + (i >> 7)) % 256;
  png = await sharp(raw, { raw: { width: 96, height: 64, channels: 3 } }).png().toBuffer();
}, 120_000);

afterAll(async () => {
  await understanding?.close();
  await text?.close();
  rmSync(root, { recursive: true, force: true });
});

/** Logits after a full, uncached, batch-1 prefill of `question` about the image (the understanding prompt). */
async function fullPrefill(question: string): Promise<{ logits: Float32Array; ids: number[] }> {
  const enc = await understanding.encodeImage(png);
  const ids = expandImagePads(text.tokenizer.encodeChat(conversation(question, [])), enc.tokens);
  const embeds = await text.embed(ids);
  scatterImage(embeds, ids, enc.features, text.hiddenSize);
  const { positionIds } = ropeIndex(ids, [enc.grid], { imageTokenId: TOKENS.imagePad, mergeSize: understanding.mergeSize });
  const n = ids.length;
  const rows = [0, 1, 2].map((r) => Array.from(positionIds.subarray(r * n, (r + 1) * n), Number));
  return { logits: (await text.decoder.prefill(embeds, rows)).logits, ids };
}

/** Plain TS: the full softmax over the vocabulary, then P(yes ids) / P(yes ∪ no ids). */
function referenceYes(logits: Float32Array, yes: number[], no: number[]): number {
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  let z = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) z += p[i] = Math.exp(logits[i]! - max);
  const sum = (ids: number[]) => ids.reduce((s, i) => s + p[i]! / z, 0);
  return sum(yes) / (sum(yes) + sum(no));
}

describe('ImageChecker on the tiny checkpoint', () => {
  const questions = [
    { id: 'nudity', question: 'Does this image contain nudity?' },
    { id: 'violence', question: 'Does this image contain graphic violence?' },
  ];

  it('reads P(yes) from the real logits at the tokenizer’s yes/no ids, equal to a plain softmax over a full prefill', async () => {
    const ids = checker.yesNoIds();
    expect(ids.yes).toEqual([text.tokenizer.tokenId('yes'), text.tokenizer.tokenId('Yes')]);
    expect(ids.no).toEqual([text.tokenizer.tokenId('no'), text.tokenizer.tokenId('No')]);
    expect(new Set([...ids.yes, ...ids.no]).size).toBe(4);
    const prompt = 'a red fox in snow';
    const res = await checker.check({ image: png, prompt, match: true, questions }, context());
    const want = [
      [res.match, matchQuestion(prompt)],
      [res.answers.nudity, yesNoQuestion(questions[0]!.question)],
      [res.answers.violence, yesNoQuestion(questions[1]!.question)],
    ] as const;
    const refs: number[] = [];
    for (const [got, question] of want) {
      const { logits } = await fullPrefill(question);
      const ref = referenceYes(logits, ids.yes, ids.no);
      refs.push(ref);
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThan(1);
      expect(Math.abs(got! - ref)).toBeLessThan(1e-4);
      expect(Math.abs(yesProbability(logits, ids) - ref)).toBeLessThan(1e-9);
    }
    expect(new Set(refs.map((r) => r.toFixed(6))).size).toBe(3); // each question its own answer
  }, 60_000);

  it('writes the caption a batch-1 greedy decode of the caption prompt writes, and shares one encoding and one prefill', async () => {
    const before = understanding.visionRuns;
    const ctx = context();
    const res = await checker.check({ image: png, prompt: 'a red fox', captionMaxTokens: 12, match: true, questions }, ctx);
    expect(understanding.visionRuns - before).toBe(1);
    expect(res.counts).toMatchObject({ visionEncodings: 1, prefixPrefills: 1, batchedForwards: 1 });
    expect(res.counts.captionTokens).toBeGreaterThan(0);
    expect(ctx.reports.every((r) => r.stage === 'checking')).toBe(true);

    const { logits, ids } = await fullPrefill(CAPTION_QUESTION);
    const { tokens } = await generateTokens({
      prefill: async () => logits,
      step: async (id) => text.decoder.step(await text.embed([id])),
      promptIds: ids,
      maxNewTokens: 12,
      stopIds: text.tokenizer.generation.eosTokenIds,
      sampling: GREEDY,
    });
    expect(tokens.length).toBe(res.counts.captionTokens);
    expect(res.caption).toBe(firstSentence(text.tokenizer.decode(tokens)));
    expect(res.caption!.length).toBeGreaterThan(0);

    const again = await checker.check({ image: png, captionMaxTokens: 12, match: false, questions: [] }, context());
    expect(understanding.visionRuns - before).toBe(2 + 1); // + the one fullPrefill above
    expect(again.caption).toBe(res.caption);
    expect(again.match).toBeUndefined();
  }, 60_000);

  it('without a host cache (WebGPU) prefills each question whole: same scores and caption, still one vision encoding', async () => {
    const req = { image: png, prompt: 'a red fox', captionMaxTokens: 8, match: true, questions };
    const shared = await checker.check(req, context());
    Object.defineProperty(text.decoder, 'sharesCache', { get: () => false, configurable: true });
    try {
      const whole = await checker.check(req, context());
      expect(whole.counts).toMatchObject({ visionEncodings: 1, prefixPrefills: 4, batchedForwards: 0 });
      expect(whole.caption).toBe(shared.caption);
      expect(Math.abs(whole.match! - shared.match!)).toBeLessThan(1e-4);
      for (const q of questions) expect(Math.abs(whole.answers[q.id]! - shared.answers[q.id]!)).toBeLessThan(1e-4);
    } finally {
      delete (text.decoder as unknown as Record<string, unknown>).sharesCache;
    }
  }, 60_000);

  it('stops on abort between stages', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(checker.check({ image: png, captionMaxTokens: 4, match: false, questions: [] }, { signal: controller.signal, onProgress: () => {} })).rejects.toMatchObject({ code: 'cancelled' });
  });
});

describe('check helpers', () => {
  it('words the questions and keeps the caption’s first sentence', () => {
    expect(matchQuestion('a red fox in snow.')).toBe('Does this image show: a red fox in snow? Answer yes or no.');
    expect(matchQuestion('a <|im_end|> fox')).toBe('Does this image show: a fox? Answer yes or no.');
    expect(yesNoQuestion('Does this image contain nudity?')).toBe('Does this image contain nudity? Answer yes or no.');
    expect(firstSentence('A fox sits in snow. It is cold.')).toBe('A fox sits in snow.');
    expect(firstSentence('  no full stop  ')).toBe('no full stop');
  });
});
