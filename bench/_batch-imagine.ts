// The imagine rows of `npm run bench -- batch` (issue 18, worker.maxBatch.diffusion): 4 tiny imagines through the real
// pipeline (worker/pipeline/blip3o.ts createPipeline on make-tiny + convert, CPU), side by side in one run:
//   - total: the four one after another with batching off (maxBatch.diffusion 1) vs all four at once with
//     maxBatch.diffusion 4 (their DiT/UNet steps and VAE decodes share runs) → images/s each way;
//   - latency: one imagine alone with batching off vs on (on must not slow a request that has no companions).
// Each measurement is repeated `--runs` times, alternating off/on, and the median is kept; the " " negative is
// computed before timing. The batched images are checked to be byte-identical to the sequential ones.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest, Pipeline } from '../worker/pipeline/types.ts';

/** One printed row: the same work done two ways, milliseconds (medians). */
export interface ImagineBatchRow {
  name: string;
  sequentialMs: number;
  batchedMs: number;
  soloOffMs: number;
  soloOnMs: number;
  /** What `sequential`/`batched` produced (images), for a rate. */
  units: number;
  unitName: string;
  /** Whether every batched PNG equalled its sequential twin byte for byte. */
  identical: boolean;
}

const arg = (args: string[], name: string, def: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function imagineRows(args: string[]): Promise<ImagineBatchRow[]> {
  const { makeTiny } = await import('../worker/builder/tiny/index.ts');
  const { convertSnapshot } = await import('../worker/builder/convert.ts');
  const { createPipeline } = await import('../worker/pipeline/blip3o.ts');
  const runs = arg(args, 'runs', 3);
  const ditSteps = arg(args, 'dit-steps', 30);
  const decoderSteps = arg(args, 'decoder-steps', 50);
  const n = 4;
  const dir = mkdtempSync(join(tmpdir(), 'bench-batch-imagine-'));
  const pipelines: Pipeline[] = [];
  try {
    const snap = join(dir, 'snapshot');
    const onnx = join(dir, 'onnx');
    mkdirSync(onnx, { recursive: true });
    makeTiny(snap);
    await convertSnapshot(snap, onnx, { dtype: 'fp32' });
    const open = async (diffusion: number) => {
      const p = await createPipeline({
        modelDir: onnx,
        dtype: 'fp32',
        executionProvider: 'cpu',
        intraOpThreads: arg(args, 'threads', 0),
        understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
        maxBatch: { decode: 1, diffusion },
      });
      pipelines.push(p);
      return p;
    };
    const [off, on] = [await open(1), await open(n)];
    const requests: GenerateRequest[] = ['a red fox in snow', 'a lighthouse at dusk', 'a bowl of ramen', 'a paper boat'].map((prompt, i) => ({
      prompt,
      options: { seed: 100 + i, ditSteps, decoderSteps, guidance: 3, aspect: '1:1' as const },
    }));
    const ctx = () => ({ signal: new AbortController().signal, onProgress: () => {} });
    const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
      const t = performance.now();
      const v = await f();
      return [performance.now() - t, v];
    };
    for (const p of [off, on]) await p.generate(requests[0]!, ctx()); // warm-up: sessions and the " " negative

    const seq: number[] = [];
    const bat: number[] = [];
    const soloOff: number[] = [];
    const soloOn: number[] = [];
    let identical = true;
    for (let r = 0; r < runs; r++) {
      const [ms, a] = await timed(async () => {
        const out: Uint8Array[] = [];
        for (const q of requests) out.push((await off.generate(q, ctx())).png);
        return out;
      });
      seq.push(ms);
      const [msB, b] = await timed(() => Promise.all(requests.map(async (q) => (await on.generate(q, ctx())).png)));
      bat.push(msB);
      identical &&= a.every((png, i) => Buffer.from(png).equals(Buffer.from(b[i]!)));
      soloOff.push((await timed(() => off.generate(requests[1]!, ctx())))[0]);
      soloOn.push((await timed(() => on.generate(requests[1]!, ctx())))[0]);
    }
    return [
      {
        name: `${n} tiny imagines (${ditSteps} DiT + ${decoderSteps} UNet steps, maxBatch.diffusion ${n})`,
        sequentialMs: median(seq),
        batchedMs: median(bat),
        soloOffMs: median(soloOff),
        soloOnMs: median(soloOn),
        units: n,
        unitName: 'images',
        identical,
      },
    ];
  } finally {
    for (const p of pipelines) await p.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The lines `npm run bench -- batch` prints for a row. */
export function formatImagineRow(r: ImagineBatchRow): string[] {
  const rate = (ms: number) => (r.units / (ms / 1000)).toFixed(2);
  return [
    `${r.name}:`,
    `  one after another ${(r.sequentialMs / 1000).toFixed(2)} s (${rate(r.sequentialMs)} ${r.unitName}/s), batched ${(r.batchedMs / 1000).toFixed(2)} s (${rate(r.batchedMs)} ${r.unitName}/s): ${(r.sequentialMs / r.batchedMs).toFixed(2)}× the throughput`,
    `  single request: batching off ${(r.soloOffMs / 1000).toFixed(2)} s, on ${(r.soloOnMs / 1000).toFixed(2)} s: ${(r.soloOnMs / r.soloOffMs).toFixed(2)}× the latency`,
    `  batched PNGs byte-identical to the sequential ones: ${r.identical ? 'yes' : 'NO'}`,
  ];
}
