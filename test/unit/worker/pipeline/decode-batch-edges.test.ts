// worker/pipeline/decode-batch.ts at its edges, on the tiny checkpoint: a sequence whose owner is busy between its
// steps rides along in the others' forwards (a masked dummy column each) and must still get its own logits when it
// steps again; a sequence closed while others keep stepping leaves no trace in their logits.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNDERSTANDING_ONLY } from '../../../doubles/understanding-only.ts';
import { convertSnapshot } from '../../../../worker/builder/convert.ts';
import { readManifest } from '../../../../worker/builder/manifest.ts';
import { makeTiny } from '../../../../worker/builder/tiny/index.ts';
import { openSession, type ModelSession } from '../../../../worker/runtime/session.ts';
import { DecodeBatch } from '../../../../worker/pipeline/decode-batch.ts';
import { KvDecoder, type DecoderDims } from '../../../../worker/pipeline/sampling.ts';

const root = mkdtempSync(join(tmpdir(), 'decode-batch-edges-'));
let session: ModelSession;
let dims: DecoderDims;

beforeAll(async () => {
  const snapshot = join(root, 'snapshot');
  const onnx = join(root, 'onnx');
  makeTiny(snapshot);
  await convertSnapshot(snapshot, onnx, { dtype: 'fp32', architectures: UNDERSTANDING_ONLY });
  const m = readManifest(onnx)!;
  const info = m.components.text!.info as Record<string, number>;
  dims = { numLayers: info.num_hidden_layers!, numKvHeads: info.num_key_value_heads!, headDim: info.head_dim!, hiddenSize: info.hidden_size!, vocabSize: info.vocab_size! };
  session = await openSession(join(onnx, m.components.text!.graphs.decoder!.file), { executionProvider: 'cpu', intraOpThreads: 1 });
}, 180_000);

afterAll(async () => {
  await session?.release();
  rmSync(root, { recursive: true, force: true });
});

const prompt = (n: number, salt: number) => ({
  embeds: Float32Array.from({ length: n * dims.hiddenSize }, (_, i) => Math.sin(i * 0.37 + salt)),
  positions: [0, 1, 2].map(() => Array.from({ length: n }, (_, i) => i + 3 * salt)), // a rope delta of 3·salt
});
const embed = async (tokens: readonly number[]) =>
  Float32Array.from({ length: tokens.length * dims.hiddenSize }, (_, i) => Math.cos(tokens[Math.floor(i / dims.hiddenSize)]! * 0.01 + (i % dims.hiddenSize)));
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function reference(p: { embeds: Float32Array; positions: number[][] }, tokens: number[]): Promise<Float32Array[]> {
  const dec = new KvDecoder(session, dims);
  const out = [(await dec.prefill(p.embeds, p.positions)).logits];
  for (const t of tokens) out.push(await dec.step(await embed([t])));
  return out;
}

/** Prefill, then the tokens one step each; `pause(k)` runs before step k (busy owner: the row rides along meanwhile). */
async function drive(batch: DecodeBatch, p: { embeds: Float32Array; positions: number[][] }, tokens: number[], pause: (k: number) => Promise<void> = async () => undefined) {
  const { seq, logits } = await batch.start(p.embeds, p.positions);
  const out = [logits];
  try {
    for (const [k, t] of tokens.entries()) {
      await pause(k);
      out.push(await batch.next(seq, t));
    }
  } finally {
    batch.close(seq);
  }
  return out;
}

describe('DecodeBatch edges', () => {
  it('a row whose owner is busy rides along masked, and its later steps match its solo run', async () => {
    const pa = prompt(7, 1);
    const pb = prompt(11, 2);
    const ta = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
    const tb = [21, 22, 23, 24];
    const want = [await reference(pa, ta), await reference(pb, tb)];
    const batch = new DecodeBatch(session, dims, embed, { maxBatch: 4 });
    const got = await Promise.all([drive(batch, pa, ta), drive(batch, pb, tb, (k) => (k > 0 ? sleep(25) : Promise.resolve()))]);
    let worst = 0;
    got.forEach((rows, i) => rows.forEach((l, k) => (worst = Math.max(worst, maxDiff(l, want[i]![k]!)))));
    expect(worst).toBeLessThan(1e-4);
    expect(batch.stats.steppedRows).toBeLessThan(2 * batch.stats.forwards); // b really sat out some forwards
    expect(batch.size).toBe(0);
  }, 60_000);

  it('the last other row closing while a joiner’s first step is in flight leaves the joiner its own logits', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let waiting = false;
    const gatedEmbed = async (tokens: readonly number[]) => {
      if (tokens.includes(77)) {
        waiting = true;
        await gate;
      }
      return embed(tokens);
    };
    const pa = prompt(6, 3);
    const pj = prompt(9, 4);
    const tj = [77, 78, 79];
    const want = await reference(pj, tj);
    const batch = new DecodeBatch(session, dims, gatedEmbed, { maxBatch: 4 });
    const a = await batch.start(pa.embeds, pa.positions);
    await batch.next(a.seq, 5);
    await batch.next(a.seq, 6); // a is in the batched cache now
    const j = await batch.start(pj.embeds, pj.positions);
    const got = [j.logits];
    const first = batch.next(j.seq, 77); // its call lays out [a, j] and waits in the embedding
    while (!waiting) await sleep(1);
    batch.close(a.seq); // a was the only row in the cache: it is cleared while the call runs
    release();
    got.push(await first);
    got.push(await batch.next(j.seq, 78));
    got.push(await batch.next(j.seq, 79));
    batch.close(j.seq);
    got.forEach((l, k) => expect(maxDiff(l, want[k]!)).toBeLessThan(1e-4));
    expect(batch.size).toBe(0);
  }, 60_000);
});
