// The imagine row of `npm run bench -- batch` (issue 18, worker.maxBatch.diffusion): 4 tiny imagines through the real
// pipeline (worker/pipeline/blip3o.ts createPipeline on make-tiny + convert, CPU), side by side in one run:
//   - total: the four one after another with batching off (maxBatch.diffusion 1) vs all four at once with
//     maxBatch.diffusion 4 (their DiT/UNet steps and VAE decodes share runs) → images/s each way;
//   - latency: one imagine alone with batching off vs on (on must not slow a request that has no companions).
// Each round runs the four one after another (off), the four at once (on), then one alone off and on (twice each,
// alternating); every side keeps its best time over `--rounds` rounds (other processes' load only adds time). The " "
// negative is computed before timing. The batched images are checked to be byte-identical to the sequential ones.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest, Pipeline } from '../worker/pipeline/types.ts';
import type { BatchBenchOptions, BatchRowResult } from './batch.ts';
import { convertTiny, tinyCpuPipeline } from './generate.ts';

/** The worker's defaults (config/default.yaml generation). */
const DIT_STEPS = 30;
const DECODER_STEPS = 50;
const N = 4;
/** Alone-off/alone-on pairs per round. */
const SOLO_PAIRS = 2;

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
    let identical = true;
    for (let r = 0; r < o.rounds; r++) {
      const [seqS, a] = await timed(async () => {
        const out: Uint8Array[] = [];
        for (const q of requests) out.push((await off.generate(q, ctx())).png);
        return out;
      });
      const [batS, b] = await timed(() => Promise.all(requests.map(async (q) => (await on.generate(q, ctx())).png)));
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
      ],
    };
  } finally {
    for (const p of pipelines) await p.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
