// worker/thread-host.ts: a model thread's life outside its runs. A thread that dies while it holds no run must be
// replaced, so that the next job runs on a live thread instead of waiting out its time limit on a dead one (and being
// told "This took longer than …", a failure that is not retried); and a host closed while it replaces a thread must not
// be left with the fresh one running (a whole model loaded again, in a stopping worker).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/log.ts';
import type { UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

const diesIdle = resolve(import.meta.dirname, '../../doubles/pipeline-dies-idle.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());

let host: ThreadHost | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

async function start(maxBatch: { decode: number; diffusion: number }, extra: Record<string, unknown> = {}) {
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule: diesIdle,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { stepDelayMs: 5, maxSteps: 2, ...extra } },
    abortGraceMs: 500,
    log: createLogger('test', 'silent'),
  });
  return host;
}

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});
const runOptions = (limitMs: number) => ({ signal: new AbortController().signal, timeLimit: new JobTimeLimit(limitMs), onProgress: () => undefined });

describe('ThreadHost: a thread that dies between runs', () => {
  it('is replaced, and the next run is answered instead of timing out on the dead thread', async () => {
    const h = await start({ decode: 2, diffusion: 1 });
    expect((await h.understand(ask('[exit when idle] first'), runOptions(10_000))).text).toContain('You asked:');
    await new Promise((r) => setTimeout(r, 300)); // the thread has exited; no run was on it
    const next = await h.understand(ask('the next one'), runOptions(3_000)).then(
      (a) => a.text,
      (e: unknown) => `${(e as { code?: string }).code}: ${(e as Error).message}`,
    );
    expect(next).toContain('You asked: the next one');
  }, 20_000);
});

describe('ThreadHost: closed while it replaces a thread', () => {
  it('terminates the thread that finished loading after close()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-heartbeat-'));
    try {
      const h = await start({ decode: 2, diffusion: 1 }, { heartbeatDir: dir, failures: { '[crash]': 'crash' } });
      await expect(h.understand(ask('[crash] now'), runOptions(10_000))).rejects.toMatchObject({ code: 'internal' });
      await h.close(); // the replacement is loading now
      host = undefined;
      await new Promise((r) => setTimeout(r, 3_000)); // long enough for the replacement to load
      const alive = readdirSync(dir).filter((f) => Number(readFileSync(join(dir, f), 'utf8')) > Date.now() - 400); // beat within the last 400 ms (one every 50)
      expect(alive).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});
