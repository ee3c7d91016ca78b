// worker/thread-host.ts ShareMeter under batching: the GPU-seconds a job is charged (docs/cost.md: compute stages
// only, "everything but waiting in the queue") must not include the time its run waits for room in a model thread.
// With worker.maxBatch a worker holds more jobs than its threads run (maxBatch.decode 4, diffusion 1: up to three
// imagines wait behind the one running), so that wait is common and can be many times the job's own compute.
import { resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../../src/log.ts';
import type { UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { ShareMeter, ThreadHost } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());

let host: ThreadHost | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});

describe('ShareMeter: waiting for room in a thread', () => {
  it('a run that waits behind another is charged its own run, not the wait', async () => {
    const maxBatch = { decode: 1, diffusion: 1 };
    host = await ThreadHost.start({
      size: 1,
      maxBatch,
      pipelineModule,
      pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { stepDelayMs: 60, maxSteps: 1 } },
      abortGraceMs: 2_000,
      log: createLogger('test', 'silent'),
    });
    const options = (meter?: ShareMeter) => ({ signal: new AbortController().signal, timeLimit: new JobTimeLimit(30_000), onProgress: () => undefined, ...(meter ? { meter } : {}) });
    const first = host.understand(ask('first'), options());
    const waiter = new ShareMeter(); // made as the job starts, as the processor makes it
    const t0 = Date.now();
    let startedAt = 0;
    const second = host.understand(ask('second'), { ...options(waiter), onProgress: () => void (startedAt ||= Date.now()) });
    await Promise.all([first, second]);
    const charged = waiter.now();
    const wall = Date.now() - t0;
    const ownRun = Date.now() - startedAt; // from its first step (its run started a step before)
    expect(startedAt - t0).toBeGreaterThan(300); // it did wait behind the first run
    // charged its own run (about ownRun plus one step), not the wall time that includes the wait
    expect(charged).toBeLessThan(ownRun + 200);
    expect(charged).toBeLessThan(wall - 250);
  }, 30_000);
});

describe('ShareMeter arithmetic', () => {
  it('counts nothing while waiting for room, then 1/n while n share the thread, then in full outside', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const meter = new ShareMeter();
      vi.advanceTimersByTime(100); // before the run: the processor's own work, in full
      meter.waitForRoom();
      vi.advanceTimersByTime(5_000); // queued behind other runs
      expect(meter.now()).toBe(100);
      meter.share(2);
      vi.advanceTimersByTime(1_000);
      expect(meter.now()).toBe(600);
      meter.share(1);
      vi.advanceTimersByTime(300);
      expect(meter.now()).toBe(900);
    } finally {
      vi.useRealTimers();
    }
  });
});
