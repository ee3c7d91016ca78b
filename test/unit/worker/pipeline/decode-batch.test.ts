// Continuous batching of decode steps (worker/pipeline/decode-batch.ts, issue 18) on the tiny checkpoint: concurrent
// asks give the same answers as sequential ones, a request joins mid-decode, cancelling one leaves the others, a
// poisoned request fails alone, and the logits of a sequence differ from its solo run by at most a measured bound.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, UserError } from '../../../../src/errors.ts';
import type { AskOptions } from '../../../../src/jobs/contract.ts';
import { UNDERSTANDING_ONLY } from '../../../doubles/understanding-only.ts';
import { convertSnapshot } from '../../../../worker/builder/convert.ts';
import { readManifest } from '../../../../worker/builder/manifest.ts';
import { makeTiny } from '../../../../worker/builder/tiny/index.ts';
import { openSession, type ModelSession } from '../../../../worker/runtime/session.ts';
import { DecodeBatch } from '../../../../worker/pipeline/decode-batch.ts';
import { ImageChecker } from '../../../../worker/pipeline/checks.ts';
import { KvDecoder, type DecoderDims } from '../../../../worker/pipeline/sampling.ts';
import { loadTokenizer } from '../../../../worker/pipeline/tokenizer.ts';
import type { Answer, RunContext, UnderstandRequest } from '../../../../worker/pipeline/types.ts';
import { loadUnderstanding, openTextModel, type TextModel, type Understanding } from '../../../../worker/pipeline/understand.ts';

const limits = { minPixels: 3136, maxPixels: 200_704, maxInputPixels: 50_000_000, maxAspectRatio: 200 };
const greedy: AskOptions = { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1.05, seed: 1 };
const runtime = { executionProvider: 'cpu' as const, intraOpThreads: 1 };

const root = mkdtempSync(join(tmpdir(), 'decode-batch-'));
const snapshot = join(root, 'snapshot');
const onnx = join(root, 'onnx');
let solo: Understanding; // worker.maxBatch.decode 1: today's path (KvDecoder alone)
let batched: Understanding; // maxBatch 4: every decode step through the DecodeBatch
let batchedText: TextModel;
const images: Buffer[] = [];

function context(signal = new AbortController().signal): RunContext & { tokens: number } {
  const ctx = {
    signal,
    tokens: 0,
    onProgress: (r: { stage: string; step: number }) => {
      if (r.stage === 'answering' && r.step > 0) ctx.tokens = r.step;
    },
  };
  return ctx;
}

/** Four different requests: different images (prompt lengths), questions, lengths, sampling settings and seeds. */
function requests(): UnderstandRequest[] {
  return [
    { image: images[0]!, question: 'What is in the picture?', history: [], options: greedy },
    { image: images[1]!, question: 'Describe it in detail, please.', history: [], options: { ...greedy, maxNewTokens: 12, temperature: 1, topK: 50, seed: 7 } },
    { image: images[2]!, question: 'Colour?', history: [{ role: 'user', text: 'Hi' }, { role: 'assistant', text: 'Hello.' }], options: { ...greedy, maxNewTokens: 5 } },
    { image: images[0]!, question: 'Why?', history: [], options: { ...greedy, maxNewTokens: 10, temperature: 0.7, topP: 0.9, seed: 3, repetitionPenalty: 1.3 } },
  ];
}

beforeAll(async () => {
  makeTiny(snapshot);
  await convertSnapshot(snapshot, onnx, { dtype: 'fp32', architectures: UNDERSTANDING_ONLY });
  solo = await loadUnderstanding(onnx, runtime, limits, { tokenizerDir: snapshot });
  batchedText = await openTextModel(onnx, readManifest(onnx)!, loadTokenizer(snapshot), runtime, 4);
  batched = await loadUnderstanding(onnx, runtime, limits, { text: batchedText });
  for (const [w, h, k] of [
    [150, 100, 7],
    [60, 90, 13],
    [120, 120, 31],
  ] as const) {
    const raw = Buffer.alloc(w * h * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * k + (i >> 9)) % 256;
    images.push(await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer());
  }
}, 180_000);

afterAll(async () => {
  await solo?.close();
  await batched?.close();
  await batchedText?.close();
  rmSync(root, { recursive: true, force: true });
});

const ids = (answers: Answer[]) => answers.map((a) => a.tokenIds);

describe('decode batching on the tiny checkpoint', () => {
  it('4 concurrent asks give the same answers as the same 4 run one after another (batched and unbatched)', async () => {
    const sequentialSolo: Answer[] = [];
    for (const r of requests()) sequentialSolo.push(await solo.understand(r, context()));
    const sequentialBatched: Answer[] = [];
    for (const r of requests()) sequentialBatched.push(await batched.understand(r, context()));
    const before = { ...batchedText.batch!.stats };
    const concurrent = await Promise.all(requests().map((r) => batched.understand(r, context())));
    expect(ids(concurrent)).toEqual(ids(sequentialSolo));
    expect(ids(sequentialBatched)).toEqual(ids(sequentialSolo));
    expect(concurrent.map((a) => a.tokenIds.length)).toEqual([8, 12, 5, 10]); // random weights never stop early
    // they really were batched: fewer forwards than tokens, rows per forward > 1
    const s = batchedText.batch!.stats;
    const forwards = s.forwards - before.forwards;
    const rows = s.steppedRows - before.steppedRows;
    expect(rows).toBeGreaterThan(forwards); // how many share a forward depends on when each finished its vision encoding
    expect(batchedText.batch!.size).toBe(0); // every sequence left
  }, 120_000);

  it('a request joining mid-decode gets its solo answer, and so does the one it joined', async () => {
    const [a, b] = [requests()[1]!, requests()[0]!];
    const want = [await solo.understand(a, context()), await solo.understand(b, context())];
    const ctxA = context();
    const first = batched.understand(a, ctxA);
    while (ctxA.tokens < 4) await new Promise((r) => setImmediate(r)); // A is mid-answer
    const second = batched.understand(b, context());
    expect(ids(await Promise.all([first, second]))).toEqual(ids(want));
  }, 60_000);

  it('cancelling one of a batch removes only it; the others finish with their solo answers', async () => {
    const reqs = requests().slice(0, 3);
    const want: Answer[] = [];
    for (const r of reqs) want.push(await solo.understand(r, context()));
    const cancel = new AbortController();
    const ctxs = [context(), context(cancel.signal), context()];
    const runs = reqs.map((r, i) => batched.understand(r, ctxs[i]!));
    while (ctxs[1]!.tokens < 2) await new Promise((r) => setImmediate(r));
    cancel.abort();
    const settled = await Promise.allSettled(runs);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((settled[1] as PromiseRejectedResult).reason as UserError).code).toBe('cancelled');
    expect((settled[0] as PromiseFulfilledResult<Answer>).value.tokenIds).toEqual(want[0]!.tokenIds);
    expect((settled[2] as PromiseFulfilledResult<Answer>).value.tokenIds).toEqual(want[2]!.tokenIds);
    expect(batchedText.batch!.size).toBe(0);
  }, 60_000);

  it('a poisoned request in a batch fails alone: an image that does not decode, and a step that throws', async () => {
    const reqs = requests();
    const want = [await solo.understand(reqs[0]!, context()), await solo.understand(reqs[2]!, context())];
    const poisoned = { ...reqs[1]!, image: Buffer.from('not an image at all') };
    const settled = await Promise.allSettled([batched.understand(reqs[0]!, context()), batched.understand(poisoned, context()), batched.understand(reqs[2]!, context())]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(UserError);
    expect(ids(settled.filter((s) => s.status === 'fulfilled').map((s) => (s as PromiseFulfilledResult<Answer>).value))).toEqual(ids(want));
  }, 60_000);

  it('the model checks (caption) decode through the batch alongside asks, with their solo results', async () => {
    const soloChecker = new ImageChecker(
      { ...(await openTextModel(onnx, readManifest(onnx)!, loadTokenizer(snapshot), runtime)) },
      solo,
    );
    const checker = new ImageChecker(batchedText, batched);
    const req = { image: images[1]!, captionMaxTokens: 6, prompt: 'a fox', match: true, questions: [{ id: 'nsfw', question: 'Is it explicit?' }] };
    const want = await soloChecker.check(req, context());
    const [got, answer] = await Promise.all([checker.check(req, context()), batched.understand(requests()[0]!, context())]);
    expect(got.caption).toBe(want.caption);
    expect(got.match).toBeCloseTo(want.match!, 5);
    expect(answer.tokenIds).toEqual((await solo.understand(requests()[0]!, context())).tokenIds);
  }, 60_000);
});

describe('DecodeBatch directly', () => {
  let session: ModelSession;
  let dims: DecoderDims;
  beforeAll(async () => {
    const m = readManifest(onnx)!;
    const info = m.components.text!.info as Record<string, number>;
    dims = { numLayers: info.num_hidden_layers!, numKvHeads: info.num_key_value_heads!, headDim: info.head_dim!, hiddenSize: info.hidden_size!, vocabSize: info.vocab_size! };
    session = await openSession(join(onnx, m.components.text!.graphs.decoder!.file), runtime);
  });
  afterAll(async () => session?.release());

  /** A prompt of `n` pseudo-random embeddings with 1-D positions. */
  const prompt = (n: number, salt: number) => ({
    embeds: Float32Array.from({ length: n * dims.hiddenSize }, (_, i) => Math.sin(i * 0.37 + salt)),
    positions: [0, 1, 2].map(() => Array.from({ length: n }, (_, i) => i)),
  });
  const embed = async (tokens: readonly number[]) => {
    if (tokens.some((t) => t < 0)) throw new AppError('bad_request', 'a poisoned token');
    return Float32Array.from({ length: tokens.length * dims.hiddenSize }, (_, i) => Math.cos(tokens[Math.floor(i / dims.hiddenSize)]! * 0.01 + (i % dims.hiddenSize)));
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

  /** Runs `steps` fixed tokens after the prompt; returns every step's logits. */
  async function drive(batch: DecodeBatch, p: { embeds: Float32Array; positions: number[][] }, tokens: number[]): Promise<Float32Array[]> {
    const { seq, logits } = await batch.start(p.embeds, p.positions);
    const out = [logits];
    try {
      for (const t of tokens) out.push(await batch.next(seq, t));
    } finally {
      batch.close(seq);
    }
    return out;
  }

  it('chunked prefill and batched steps of different-length sequences match KvDecoder alone within 1e-4', async () => {
    const reference = async (p: { embeds: Float32Array; positions: number[][] }, tokens: number[]) => {
      const dec = new KvDecoder(session, dims);
      const out = [(await dec.prefill(p.embeds, p.positions)).logits];
      for (const t of tokens) out.push(await dec.step(await embed([t])));
      return out;
    };
    const prompts = [prompt(23, 1), prompt(5, 2), prompt(40, 3)];
    const tokens = [[1, 2, 3, 4, 5, 6], [9, 8, 7], [4, 4, 4, 4, 4, 4, 4, 4, 4]];
    const want: Float32Array[][] = [];
    for (const [i, p] of prompts.entries()) want.push(await reference(p, tokens[i]!));
    const batch = new DecodeBatch(session, dims, embed, { maxBatch: 4, prefillChunkTokens: 8 });
    const got = await Promise.all(prompts.map((p, i) => drive(batch, p, tokens[i]!)));
    let worst = 0;
    got.forEach((rows, i) => rows.forEach((l, k) => (worst = Math.max(worst, maxDiff(l, want[i]![k]!)))));
    // The measured worst difference of batched vs alone on the CPU provider (docs/batching.md): rounding only.
    console.log(`decode batch vs alone: max |Δlogit| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-4);
    expect(batch.stats.prefillChunks).toBe(3 + 1 + 5); // ⌈23/8⌉, ⌈5/8⌉, ⌈40/8⌉
    expect(batch.stats.forwards).toBeLessThan(6 + 3 + 9);
    expect(batch.size).toBe(0);
  }, 60_000);

  it('a joiner prefills one chunk per step between the others’ decode steps', async () => {
    const batch = new DecodeBatch(session, dims, embed, { maxBatch: 4, prefillChunkTokens: 4 });
    const events: string[] = [];
    const long = (async () => {
      const { seq } = await batch.start(prompt(6, 5).embeds, prompt(6, 5).positions);
      for (let k = 0; k < 8; k++) {
        await batch.next(seq, k);
        events.push('step');
      }
      batch.close(seq);
    })();
    while (!events.includes('step')) await new Promise((r) => setImmediate(r));
    await batch.start(prompt(21, 6).embeds, prompt(21, 6).positions).then(({ seq }) => {
      events.push('joined');
      batch.close(seq);
    });
    await long;
    // 21 tokens = 6 chunks of at most 4: the long sequence stepped between them, not after them all
    const joined = events.indexOf('joined');
    expect(events.slice(0, joined).filter((e) => e === 'step').length).toBeGreaterThanOrEqual(5);
  }, 60_000);

  it('a member whose step throws fails alone; its companions get the right logits', async () => {
    const batch = new DecodeBatch(session, dims, embed, { maxBatch: 4 });
    const alone = await drive(new DecodeBatch(session, dims, embed, { maxBatch: 1 }), prompt(9, 7), [3, 4, 5]);
    const settled = await Promise.allSettled([drive(batch, prompt(9, 7), [3, 4, 5]), drive(batch, prompt(12, 8), [1, -1, 2])]);
    expect(settled[1]!.status).toBe('rejected');
    const got = (settled[0] as PromiseFulfilledResult<Float32Array[]>).value;
    got.forEach((l, k) => expect(maxDiff(l, alone[k]!)).toBeLessThan(1e-4));
    expect(batch.size).toBe(0);
  }, 60_000);
});
