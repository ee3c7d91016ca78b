// The imagine row of `npm run bench -- batch` (issue 18, worker.maxBatch.diffusion): 4 tiny imagines through the real
// pipeline (worker/pipeline/blip3o.ts createPipeline on make-tiny + convert, CPU), side by side in one run:
//   - total: the four one after another with batching off (maxBatch.diffusion 1) vs all four at once with
//     maxBatch.diffusion 4 (their DiT/UNet steps and VAE decodes share runs) → images/s each way;
//   - latency: one imagine alone with batching off vs on (on must not slow a request that has no companions).
// Each round runs the four one after another (off), the four at once (on), then one alone off and on (twice each,
// alternating); every side keeps its best time over `--rounds` rounds (other processes' load only adds time). The " "
// negative is computed before timing. The batched images are checked to be byte-identical to the sequential ones.
//
// Where the time goes (docs/batching.md "Measured"), printed under the row:
//   - stage spans of the best round of each side: conditioning (tokenize + LLM), features (DiT), decoding (UNet, VAE,
//     PNG), each from the first request entering the stage to the last one leaving it, and the process CPU time of
//     each side (far less moved by other processes' load than wall time, though not immune: they evict caches);
//   - one run of each diffusion graph with 1 sample vs 4 samples (best of GRAPH_REPS, wall and CPU), and the
//     throughput ratio those costs allow at most when every step of the four is batched (the "ceiling");
//   - the same for the UNet's cross-attention K/V projections alone (every attn2.to_k/to_v of the checkpoint as one
//     MatMul of the [tokens, cross_attention_dim] condition), the part of a UNet step whose input never changes
//     between steps, and the ceiling if they were computed once per image instead of every step.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AppError } from '../src/errors.ts';
import { readManifest } from '../worker/builder/manifest.ts';
import { Graph } from '../worker/builder/onnx/graph.ts';
import { Checkpoint } from '../worker/builder/safetensors.ts';
import { openSession, type TensorInput } from '../worker/runtime/session.ts';
import type { GenerateRequest, Pipeline, ProgressReport } from '../worker/pipeline/types.ts';
import type { BatchBenchOptions, BatchRowResult } from './batch.ts';
import { convertTiny, tinyCpuPipeline } from './generate.ts';

/** The worker's defaults (config/default.yaml generation). */
const DIT_STEPS = 30;
const DECODER_STEPS = 50;
const N = 4;
/** Alone-off/alone-on pairs per round. */
const SOLO_PAIRS = 2;
/** Runs per graph and batch size in the cost table (best kept). */
const GRAPH_REPS = 30;

const STAGES = ['conditioning', 'features', 'decoding'] as const;
type Stage = (typeof STAGES)[number];
/** When each request entered and left each stage: wall ms (performance.now()) and process CPU ms. */
interface Span {
  from: number;
  to: number;
  cpuFrom: number;
  cpuTo: number;
}
type StageMarks = Partial<Record<Stage, Span>>[];
const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

/** A RunContext that records `marks[i]`: a stage runs from its first progress report to the next stage's first. */
function markingContext(marks: StageMarks, i: number) {
  const own: StageMarks[number] = (marks[i] = {});
  let current: Stage | undefined;
  return {
    signal: new AbortController().signal,
    onProgress: (p: ProgressReport) => {
      const now = performance.now();
      const cpu = cpuMs();
      const stage = p.stage as Stage;
      if (stage !== current) {
        if (current) Object.assign(own[current]!, { to: now, cpuTo: cpu });
        own[stage] = { from: now, to: now, cpuFrom: cpu, cpuTo: cpu };
        current = stage;
      }
      Object.assign(own[stage]!, { to: now, cpuTo: cpu }); // the last report of `decoding` comes after the PNG
    },
  };
}

/** Wall and process CPU seconds of each stage over the requests of one side: from the first entry to the last exit
 *  (they overlap when batched), or the sum of each request's own when `sequential`. */
function stageSeconds(marks: StageMarks, sequential: boolean): Record<Stage, { wall: number; cpu: number }> {
  const out = {} as Record<Stage, { wall: number; cpu: number }>;
  for (const st of STAGES) {
    const spans = marks.map((m) => m[st]).filter((x) => x !== undefined);
    const first = spans.reduce((a, x) => (x.from < a.from ? x : a));
    const last = spans.reduce((a, x) => (x.to > a.to ? x : a));
    out[st] = sequential
      ? { wall: spans.reduce((a, x) => a + x.to - x.from, 0) / 1000, cpu: spans.reduce((a, x) => a + x.cpuTo - x.cpuFrom, 0) / 1000 }
      : { wall: (last.to - first.from) / 1000, cpu: (last.cpuTo - first.cpuFrom) / 1000 };
  }
  return out;
}

const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1e6;
};

/**
 * One run of the DiT, UNet and VAE graphs with 1 and with 4 samples (each sample a CFG pair of rows, as
 * worker/pipeline/diffusion-steps.ts batches them), best of GRAPH_REPS: wall ms and process CPU ms. With the steps
 * of one imagine, gives what the four cost one after another and all batched, i.e. the most batching can gain.
 */
async function graphCosts(onnx: string, threads: number): Promise<string[]> {
  const m = readManifest(onnx)!;
  const file = (c: string, g: string) => join(onnx, m.components[c]!.graphs[g]!.file);
  const info = (c: string) => m.components[c]!.info as Record<string, number>;
  const nQuery = info('dit').n_query!;
  const C = info('unet').cross_attention_dim!;
  const H = info('text').hidden_size!;
  const side = info('unet').sample_size!; // 1:1 latent side
  const ch = info('unet').in_channels!;
  const wave = (n: number): Float32Array => Float32Array.from({ length: n }, (_, k) => Math.sin(k * 0.37));
  const t = (dims: number[]): TensorInput => ({ data: wave(dims.reduce((a, b) => a * b, 1)), dims });
  // `kvOnly`: not a graph of the pipeline but a part of the UNet's step, counted apart from the sums
  const graphs: { name: string; model: string | Uint8Array; kvOnly?: true; runs: number; feeds: (b: number) => Record<string, TensorInput> }[] = [
    { name: 'DiT', model: file('dit', 'dit'), runs: DIT_STEPS, feeds: (b) => ({ x: t([2 * b, nQuery, C]), timestep: t([2 * b]), z: t([2 * b, nQuery, H]) }) },
    {
      name: 'UNet',
      model: file('unet', 'unet'),
      runs: DECODER_STEPS,
      feeds: (b) => ({ sample: t([2 * b, ch, side, side]), timestep: t([2 * b]), encoder_hidden_states: t([2 * b, nQuery, C]), text_embeds: t([2 * b, C]), time_ids: t([2 * b, 6]) }),
    },
    { name: 'VAE', model: file('vae', 'vae_decoder'), runs: 1, feeds: (b) => ({ latents: t([b, ch, side, side]) }) },
    {
      name: 'UNet attn2 K/V only',
      model: crossAttentionKvGraph(join(dirname(onnx), 'snapshot'), nQuery, C),
      kvOnly: true,
      runs: DECODER_STEPS,
      feeds: (b) => ({ enc: t([2 * b, nQuery, C]) }),
    },
  ];
  const lines: string[] = [];
  const total = { sequential: 0, batched: 0, kvSequential: 0, kvBatched: 0 };
  for (const g of graphs) {
    const session = await openSession(g.model, { executionProvider: 'cpu', intraOpThreads: threads });
    // 1 and N samples alternate, so both see the same load; each keeps its best run
    const sizes = [1, N].map((b) => ({ feeds: g.feeds(b), wall: Infinity, cpu: Infinity }));
    for (const sz of sizes) await session.run(sz.feeds); // first-run allocations
    for (let k = 0; k < GRAPH_REPS; k++)
      for (const sz of sizes) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await session.run(sz.feeds);
        sz.wall = Math.min(sz.wall, performance.now() - t0);
        sz.cpu = Math.min(sz.cpu, cpuSeconds(c0) * 1000);
      }
    const [one, four] = sizes as [(typeof sizes)[number], (typeof sizes)[number]];
    await session.release();
    if (g.kvOnly) {
      total.kvSequential += N * g.runs * one.cpu;
      total.kvBatched += g.runs * four.cpu;
    } else {
      total.sequential += N * g.runs * one.cpu;
      total.batched += g.runs * four.cpu;
    }
    lines.push(
      `${g.name} one run: 1 sample ${one.wall.toFixed(2)} ms wall / ${one.cpu.toFixed(2)} ms CPU, ${N} samples ${four.wall.toFixed(2)} / ${four.cpu.toFixed(2)} ms ` +
        `(${N} samples cost ${(four.cpu / one.cpu).toFixed(2)}× one; ×${g.runs} runs an image)`,
    );
  }
  const { sequential, batched, kvSequential, kvBatched } = total;
  lines.push(
    `ceiling from these CPU costs (DiT + UNet + VAE of ${N} images, all batched vs one after another): ${(sequential / batched).toFixed(2)}× (${sequential.toFixed(0)} ms vs ${batched.toFixed(0)} ms)`,
    `the same without the UNet's K/V projections (were they computed once per image): ${((sequential - kvSequential) / (batched - kvBatched)).toFixed(2)}×`,
  );
  return lines;
}

/** Every attn2.to_k / to_v weight [ch, C] of the UNet in `snapshot` as one MatMul of the input `enc` [2B, tokens, C]. */
function crossAttentionKvGraph(snapshot: string, tokens: number, C: number): Uint8Array {
  const dir = join(snapshot, 'diffusion-decoder', 'unet');
  const ck = new Checkpoint(readdirSync(dir).filter((f) => f.endsWith('.safetensors')).map((f) => join(dir, f)));
  try {
    const g = new Graph('unet-cross-attention-kv');
    const enc = g.input('enc', 'float32', ['batch', tokens, C]);
    const keys = ck.keys().filter((k) => /attn2\.to_[kv]\.weight$/.test(k));
    if (keys.length === 0) throw new AppError('model', `no attn2.to_k/to_v weights in ${dir}`);
    keys.forEach((k, i) => {
      const [ch, inFeatures] = ck.info(k)!.shape as [number, number];
      g.output(enc.matmul(g.constant('float32', [inFeatures, ch], new Array<number>(inFeatures * ch).fill(0.01))), `kv${i}`);
    });
    return g.toBytes();
  } finally {
    ck.close();
  }
}

export async function imagineRow(o: BatchBenchOptions): Promise<BatchRowResult> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-batch-imagine-'));
  const pipelines: Pipeline[] = [];
  try {
    const onnx = await convertTiny(dir);
    const open = async (diffusion: number) => {
      const p = await tinyCpuPipeline(onnx, o.threads, { decode: 1, diffusion });
      pipelines.push(p);
      return p;
    };
    const [off, on] = [await open(1), await open(N)];
    const requests: GenerateRequest[] = ['a red fox in snow', 'a lighthouse at dusk', 'a bowl of ramen', 'a paper boat'].map((prompt, i) => ({
      prompt,
      options: { seed: 100 + i, ditSteps: DIT_STEPS, decoderSteps: DECODER_STEPS, guidance: 3, aspect: '1:1' as const },
    }));
    const ctx = () => ({ signal: new AbortController().signal, onProgress: () => {} });
    const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
      const t = performance.now();
      const v = await f();
      return [(performance.now() - t) / 1000, v];
    };
    for (const p of [off, on]) await p.generate(requests[0]!, ctx()); // warm-up: sessions and the " " negative

    // Every side keeps its best (least disturbed) time over the rounds, as the decode row does: load from other
    // processes only ever adds time. All the times are printed in the notes.
    const seq: number[] = [];
    const bat: number[] = [];
    const offs: number[] = [];
    const ons: number[] = [];
    let best: Partial<Record<'seq' | 'bat', { cpu: number; stages: ReturnType<typeof stageSeconds> }>> = {};
    let identical = true;
    for (let r = 0; r < o.rounds; r++) {
      const seqMarks: StageMarks = [];
      let c0 = process.cpuUsage();
      const [seqS, a] = await timed(async () => {
        const out: Uint8Array[] = [];
        for (const [i, q] of requests.entries()) out.push((await off.generate(q, markingContext(seqMarks, i))).png);
        return out;
      });
      const seqCpu = cpuSeconds(c0);
      const batMarks: StageMarks = [];
      c0 = process.cpuUsage();
      const [batS, b] = await timed(() => Promise.all(requests.map(async (q, i) => (await on.generate(q, markingContext(batMarks, i))).png)));
      const batCpu = cpuSeconds(c0);
      if (seqS < Math.min(Infinity, ...seq)) best = { ...best, seq: { cpu: seqCpu, stages: stageSeconds(seqMarks, true) } };
      if (batS < Math.min(Infinity, ...bat)) best = { ...best, bat: { cpu: batCpu, stages: stageSeconds(batMarks, false) } };
      seq.push(seqS);
      bat.push(batS);
      identical &&= a.every((png, i) => Buffer.from(png).equals(Buffer.from(b[i]!)));
      // one request alone, off and on, alternating
      for (let k = 0; k < SOLO_PAIRS; k++) {
        offs.push((await timed(() => off.generate(requests[1]!, ctx())))[0]);
        ons.push((await timed(() => on.generate(requests[1]!, ctx())))[0]);
      }
    }
    const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' ');
    const stages = (s: ReturnType<typeof stageSeconds>) => STAGES.map((st) => `${st} ${s[st].wall.toFixed(2)} / ${s[st].cpu.toFixed(2)}`).join(', ');
    return {
      unit: 'images',
      sequential: { units: N, seconds: Math.min(...seq) },
      batched: { units: N, seconds: Math.min(...bat) },
      soloOff: Math.min(...offs),
      soloOn: Math.min(...ons),
      notes: [
        `end to end (tiny Qwen conditioning, ${DIT_STEPS} DiT steps, ${DECODER_STEPS} UNet steps, VAE, PNG), 128×128, negative cached`,
        `batched PNGs ${identical ? '==' : '!='} sequential PNGs (byte for byte)`,
        `all rounds (s): four one after another ${list(seq)}; four at once ${list(bat)}; one alone off ${list(offs)}; on ${list(ons)}`,
        `best rounds, stage seconds wall / CPU (decoding = UNet + VAE + PNG): one after another ${stages(best.seq!.stages)}; at once ${stages(best.bat!.stages)}`,
        `best rounds, process CPU seconds: one after another ${best.seq!.cpu.toFixed(2)}, at once ${best.bat!.cpu.toFixed(2)} (ratio ${(best.seq!.cpu / best.bat!.cpu).toFixed(2)}×)`,
        ...(await graphCosts(onnx, o.threads)),
      ],
    };
  } finally {
    for (const p of pipelines) await p.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
