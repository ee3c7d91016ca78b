// npm run bench -- batch [--layers 24] [--decode 16] [--threads 0] [--rounds 3] [--only decode]
//
// Batching across jobs (issue 18, docs/batching.md), measured side by side in one run. Each row runs the same four
// requests one after another with batching off, then all four at once with batching on, then one request alone
// with batching on and off, and prints:
//   total throughput (units/s) batched ÷ sequential      (target ≥ 2.5× for decode)
//   single-request latency batching on ÷ off             (target ≤ 1.1×)
//
// Rows (ROWS below; add one by pushing a BatchRow):
//   decode  4 asks' answers on the Qwen2.5-0.5B-shaped random decoder of bench/llm.ts (hidden 896, 24 layers, 14/2
//           heads, vocab 151668), fp32, onnxruntime CPU. Prompts of 20, 28, 36 and 52 tokens (different lengths, so
//           the batch really is ragged), greedy, `--decode` tokens each, no stop token. "sequential": each prompt
//           prefilled and decoded alone through KvDecoder (worker.maxBatch.decode 1); "batched": the four through one
//           DecodeBatch (maxBatch 4) started together, prefill chunks interleaved with the others' steps. Throughput
//           counts decoded tokens over the decode phase only (prefill is timed apart and printed). Rounds interleave
//           all sides; each keeps its best round.
//   imagine 4 imagines end to end through createPipeline on the tiny checkpoint (bench/_batch-imagine.ts), CPU, the
//           default 30 DiT + 50 UNet steps: one after another with worker.maxBatch.diffusion 1, then at once with 4
//           (DiT/UNet steps and VAE decodes shared); images/s over the whole request (conditioning included), with
//           stage times, process CPU time and each diffusion graph's cost at 1 vs 4 samples (where the time goes).
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { DecodeBatch } from '../worker/pipeline/decode-batch.ts';
import { generateTokens, GREEDY, KvDecoder, type DecoderDims } from '../worker/pipeline/sampling.ts';
import { openSession } from '../worker/runtime/session.ts';
import { imagineRow } from './_batch-imagine.ts';
import { cachedRandomDecoder, fill, smallTextConfig } from './llm.ts';

export interface BatchBenchOptions {
  rounds: number;
  threads: number;
  layers: number;
  decodeTokens: number;
}

/** One measured side: `units` of work (tokens, images) in `seconds`. */
export interface Measured {
  units: number;
  seconds: number;
}

export interface BatchRowResult {
  /** What a unit is ('tokens', 'images'). */
  unit: string;
  /** The four requests one after another, batching off. */
  sequential: Measured;
  /** The four requests at once, batching on. */
  batched: Measured;
  /** One request alone: batching off and on (seconds). */
  soloOff: number;
  soloOn: number;
  /** Extra lines to print under the row. */
  notes?: string[];
}

export interface BatchRow {
  name: string;
  /** Throughput target of batched ÷ sequential (the issue's), printed next to the ratio. */
  target: number;
  run(o: BatchBenchOptions): Promise<BatchRowResult>;
}

// ---- decode: 4 asks on the 0.5B-shaped random decoder -----------------------------------------------------------

const PROMPTS = [20, 28, 36, 52];

async function decodeRow(o: BatchBenchOptions): Promise<BatchRowResult> {
  const c = smallTextConfig(o.layers);
  const H = c.hidden_size;
  const { model } = cachedRandomDecoder(c); // shared with bench/llm.ts
  const session = await openSession(model, { executionProvider: 'cpu', intraOpThreads: o.threads });
  const dims: DecoderDims = { numLayers: o.layers, numKvHeads: c.num_key_value_heads, headDim: H / c.num_attention_heads, hiddenSize: H, vocabSize: c.vocab_size };
  // A token's "embedding": a fixed pseudo-random row per id (the embedding graph is not what is measured here).
  const embed = async (ids: readonly number[]) => {
    const out = new Float32Array(ids.length * H);
    ids.forEach((id, k) => out.set(fill(H, 1000 + (id % 4096), 0.02), k * H));
    return out;
  };
  const prompts = PROMPTS.map((n, i) => ({
    embeds: fill(n * H, 50 + i, 0.02),
    positions: [0, 1, 2].map(() => Array.from({ length: n }, (_, k) => k)),
    ids: Array.from({ length: n }, (_, k) => k),
  }));
  const T = o.decodeTokens;
  const gen = (prefill: () => Promise<Float32Array>, step: (id: number) => Promise<Float32Array>, promptIds: number[]) =>
    generateTokens({ prefill, step, promptIds, maxNewTokens: T, stopIds: [], sampling: GREEDY });

  /** Off: KvDecoder alone. Returns prefill and decode seconds and the tokens. */
  const alone = async (p: (typeof prompts)[number]) => {
    const dec = new KvDecoder(session, dims);
    let t1 = 0;
    const t0 = performance.now();
    const { tokens } = await gen(
      async () => {
        const l = (await dec.prefill(p.embeds, p.positions)).logits;
        t1 = performance.now();
        return l;
      },
      async (id) => dec.step(await embed([id])),
      p.ids,
    );
    return { prefill: (t1 - t0) / 1000, decode: (performance.now() - t1) / 1000, tokens };
  };
  /** On: each prompt through one DecodeBatch; all prefilled first (timed apart), then all decode together. */
  const together = async (ps: typeof prompts) => {
    const batch = new DecodeBatch(session, dims, embed, { maxBatch: 4 });
    const t0 = performance.now();
    const started = await Promise.all(ps.map((p) => batch.start(p.embeds, p.positions)));
    const t1 = performance.now();
    const results = await Promise.all(
      started.map(async ({ seq, logits }, i) => {
        try {
          return (await gen(async () => logits, (id) => batch.next(seq, id), ps[i]!.ids)).tokens;
        } finally {
          batch.close(seq);
        }
      }),
    );
    return { prefill: (t1 - t0) / 1000, decode: (performance.now() - t1) / 1000, tokens: results, stats: { ...batch.stats } };
  };

  await alone(prompts[0]!); // warm-up: first-run allocations
  await together([prompts[0]!]);
  // Rounds interleave every measurement, so load from other processes hits both sides of each ratio alike; each
  // quantity keeps its best (least disturbed) round, as bench/llm.ts does.
  let seqDecode = Infinity;
  let seqPrefill = Infinity;
  let batDecode = Infinity;
  let batPrefill = Infinity;
  let soloOff = Infinity;
  let soloOn = Infinity;
  let same = true;
  let meanRows = 0;
  for (let r = 0; r < o.rounds; r++) {
    const off = await alone(prompts[1]!); // one request alone, off and on (end to end: prefill + decode)
    soloOff = Math.min(soloOff, off.prefill + off.decode);
    const on = await together([prompts[1]!]);
    soloOn = Math.min(soloOn, on.prefill + on.decode);
    let d = 0;
    let p = 0;
    const seqTokens: number[][] = [];
    for (const prompt of prompts) {
      const a = await alone(prompt); // the four one after another, batching off
      d += a.decode;
      p += a.prefill;
      seqTokens.push(a.tokens);
    }
    seqDecode = Math.min(seqDecode, d);
    seqPrefill = Math.min(seqPrefill, p);
    const b = await together(prompts); // the four at once, batching on
    batDecode = Math.min(batDecode, b.decode);
    batPrefill = Math.min(batPrefill, b.prefill);
    meanRows = b.stats.steppedRows / b.stats.forwards;
    same &&= b.tokens.every((t, i) => t.join() === seqTokens[i]!.join());
  }
  await session.release();
  return {
    unit: 'tokens',
    // the first token of each answer comes from its prefill's logits: T − 1 decode steps per request
    sequential: { units: 4 * (T - 1), seconds: seqDecode },
    batched: { units: 4 * (T - 1), seconds: batDecode },
    soloOff,
    soloOn,
    notes: [
      `prompts ${PROMPTS.join(', ')} tokens, ${T} tokens each; one request = prompt ${PROMPTS[1]} + ${T} tokens, end to end`,
      `prefill of the four: ${seqPrefill.toFixed(2)} s one by one, ${batPrefill.toFixed(2)} s through the batch (chunks of ≤ 64 tokens)`,
      `mean rows per batched forward ${meanRows.toFixed(2)}; batched tokens ${same ? '==' : '!='} sequential tokens (greedy, random weights)`,
    ],
  };
}

/** The rows, in print order. */
export const ROWS: BatchRow[] = [
  { name: 'decode: 4 asks, 0.5B-shaped random LLM', target: 2.5, run: decodeRow },
  { name: 'imagine: 4 tiny imagines, maxBatch.diffusion 4', target: 2.5, run: imagineRow },
];

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      layers: { type: 'string', default: '24' },
      decode: { type: 'string', default: '16' },
      threads: { type: 'string', default: '0' },
      rounds: { type: 'string', default: '3' },
      only: { type: 'string' },
    },
  });
  const o: BatchBenchOptions = { layers: Number(values.layers), decodeTokens: Number(values.decode), threads: Number(values.threads), rounds: Number(values.rounds) };
  const rows = values.only ? ROWS.filter((r) => r.name.startsWith(values.only!)) : ROWS;
  const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');
  console.log(`batch bench: ${rows.length} row(s), rounds ${o.rounds}, load average ${load()}`);
  const lines: string[] = [];
  for (const row of rows) {
    const r = await row.run(o);
    const seqRate = r.sequential.units / r.sequential.seconds;
    const batRate = r.batched.units / r.batched.seconds;
    const speedup = batRate / seqRate;
    const latency = r.soloOn / r.soloOff;
    lines.push(
      `${row.name}`,
      `  throughput  sequential ${seqRate.toFixed(2)} ${r.unit}/s   batched ${batRate.toFixed(2)} ${r.unit}/s   ratio ${speedup.toFixed(2)}×  (target ≥ ${row.target}×: ${speedup >= row.target ? 'met' : 'NOT met'})`,
      `  one request off ${r.soloOff.toFixed(2)} s   on ${r.soloOn.toFixed(2)} s   ratio ${latency.toFixed(2)}×  (target ≤ 1.1×: ${latency <= 1.1 ? 'met' : 'NOT met'})`,
      ...(r.notes ?? []).map((n) => `  ${n}`),
    );
  }
  console.log(lines.join('\n'));
  console.log(`load average at the end ${load()}`);
}
