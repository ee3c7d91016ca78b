// worker/thread-host.ts with worker.maxBatch: the jobs that share a thread with one that brings it down did nothing
// wrong, and must not lose one of their BullMQ attempts for it (a run's rejection is an attempt: worker/processor.ts
// rethrows it). Two ways a thread goes down under them:
//   - the host terminates it because a run ignored its abort: its companions, and runs that joined it during the
//     grace, are run again on the fresh thread;
//   - it crashes (an input that kills native code): which of the batch did it is unknown, so each is run again alone;
//     only one that crashes its thread alone fails (retryably, as before), so a poison job runs out of attempts by
//     itself, and it crashes its thread at most twice per attempt.
// Uses the pipeline double (test/doubles/pipeline.ts) in real worker threads.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import type { AppError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import type { UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';

const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());

let host: ThreadHost | undefined;
let dir: string | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** One thread taking three asks at once; `runs()` lists the questions the threads started, with the thread of each. */
async function start(extra: Record<string, unknown>) {
  dir = mkdtempSync(join(tmpdir(), 'blip3o-bystanders-'));
  const runLogFile = join(dir, 'runs.jsonl');
  const maxBatch = { decode: 3, diffusion: 1 };
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { runLogFile, ...extra } },
    abortGraceMs: 300,
    log: createLogger('test', 'silent'),
  });
  const runs = () =>
    readFileSync(runLogFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { question: string; thread: number });
  return { h: host, runs };
}

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});

/** How a run ended: its answer, or its error's code and message. */
function outcome(h: ThreadHost, question: string, signal = new AbortController().signal) {
  return h.understand(ask(question), { signal, timeoutMs: 60_000, onProgress: () => undefined }).then(
    (a) => a.text,
    (e: unknown) => `${(e as AppError).code}: ${(e as Error).message}`,
  );
}

describe('ThreadHost: the companions of a run that ignores its abort', () => {
  it('are run again on the fresh thread, not failed: those batched before the abort and those that joined during the grace', async () => {
    const { h, runs } = await start({ stepDelayMs: 150, slowStepMs: 2_000, failures: { stuck: 'ignore-abort' } });
    const cancel = new AbortController();
    const stuck = outcome(h, 'stuck one', cancel.signal);
    const before = outcome(h, 'batched before'); // ≈ 1.2 s of steps: mid-answer when the thread is terminated
    await new Promise((r) => setTimeout(r, 100));
    cancel.abort(); // terminated ≈ 300 ms from now
    await new Promise((r) => setTimeout(r, 100));
    const during = outcome(h, 'joined during the grace');
    expect(await stuck).toBe('cancelled: Cancelled.'); // the thread is being terminated now
    const later = outcome(h, 'arrived after the termination'); // waits for the fresh thread, behind the two
    expect(await Promise.all([before, during, later])).toEqual([
      expect.stringContaining('You asked: batched before'),
      expect.stringContaining('You asked: joined during the grace'),
      expect.stringContaining('You asked: arrived after the termination'),
    ]);
    const started = runs();
    const stuckThread = started.find((r) => r.question === 'stuck one')!.thread;
    expect(started.filter((r) => r.thread === stuckThread).map((r) => r.question)).toEqual(['stuck one', 'batched before', 'joined during the grace']);
    // run again from the start on the fresh thread, ahead of the run that never had room
    expect(started.filter((r) => r.thread !== stuckThread).map((r) => r.question)).toEqual(['batched before', 'joined during the grace', 'arrived after the termination']);
  }, 20_000);
});

describe('ThreadHost: a batch whose thread crashes', () => {
  it('runs each of its jobs again alone: only the one that crashes its thread alone fails, and it crashes at most twice', async () => {
    const { h, runs } = await start({ stepDelayMs: 50, failures: { poison: 'crash' } });
    const settled = await Promise.all([outcome(h, 'first'), outcome(h, 'poison image'), outcome(h, 'third')]);
    expect(settled).toEqual([
      expect.stringContaining('You asked: first'),
      'internal: the model thread exited (code 1) during the job', // retryable: BullMQ charges it, and only it, an attempt
      expect.stringContaining('You asked: third'),
    ]);
    expect(runs().filter((r) => r.question === 'poison image')).toHaveLength(2); // in the batch, then alone
  }, 20_000);

  it('a run that crashes its thread alone fails at once (it is not run again)', async () => {
    const { h, runs } = await start({ failures: { poison: 'crash' } });
    expect(await outcome(h, 'poison alone')).toBe('internal: the model thread exited (code 1) during the job');
    expect(runs().filter((r) => r.question === 'poison alone')).toHaveLength(1);
    expect(await outcome(h, 'after')).toContain('You asked: after'); // the fresh thread serves
  }, 20_000);
});
