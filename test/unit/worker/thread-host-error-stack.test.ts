// An error a model run throws in its thread (onnxruntime's, out of memory, a file missing) reaches the processor with
// the thread's stack: the worker's "job failed for good" line shows where in the pipeline it failed, not only where
// the host rebuilt it. Uses the pipeline double (test/doubles/pipeline.ts) in a real worker thread.
import { resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, expect, it } from 'vitest';
import type { AppError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';

const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const maxBatch = { decode: 1, diffusion: 1 };

let host: ThreadHost | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

it("a run's error keeps its code, message and the stack it had in the thread", async () => {
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { stepDelayMs: 0, maxSteps: 2, failures: { boom: 'transient' } } },
    abortGraceMs: 2000,
    log: createLogger('test', 'silent'),
  });
  const image = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());
  const options = { maxNewTokens: 4, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 };
  const e = await host
    .understand({ image, question: 'boom', history: [], options }, { signal: new AbortController().signal, timeLimit: new JobTimeLimit(60_000), onProgress: () => undefined })
    .then(() => undefined, (x: unknown) => x as AppError);
  expect(e).toMatchObject({ code: 'internal', message: 'injected transient failure' });
  expect(e!.stack).toContain('doubles/pipeline.ts'); // where the double threw it, in the thread
});
