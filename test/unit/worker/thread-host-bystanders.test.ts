// worker/thread-host.ts with worker.maxBatch: the jobs that share a thread with one that brings it down did nothing
// wrong, and must not lose one of their BullMQ attempts for it (a run's rejection is an attempt: worker/processor.ts
// rethrows it). Two ways a thread goes down under them:
//   - the host terminates it because a run ignored its abort: its companions, and runs that joined it during the
//     grace, are run again on the fresh thread;
//   - it crashes (an input that kills native code): which of the batch did it is unknown, so each is run again alone;
//     only one that crashes its thread alone fails (retryably, as before), so a poison job runs out of attempts by
//     itself, and it crashes its thread at most twice per attempt.
// Uses the pipeline double (test/doubles/pipeline.ts) in real worker threads.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AppError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import type { UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

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

/** One thread (or `size`) taking three asks at once; `runs()` lists the questions the threads started, with the
 *  thread of each; `flag(name)` is a path in the test's folder, for the double's `holdWhile` and `load`. */
async function start(extra: Record<string, unknown>, host_: { size?: number; respawnBaseMs?: number; log?: ReturnType<typeof createLogger> } = {}) {
  const runLogFile = flag('runs.jsonl');
  const maxBatch = { decode: 3, diffusion: 1 };
  host = await ThreadHost.start({
    size: host_.size ?? 1,
    maxBatch,
    pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { runLogFile, ...extra } },
    abortGraceMs: 300,
    log: host_.log ?? createLogger('test', 'silent'),
    respawnBaseMs: host_.respawnBaseMs,
  });
  const runs = () =>
    readFileSync(runLogFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { question: string; thread: number });
  return { h: host, runs };
}

function flag(name: string): string {
  dir ??= mkdtempSync(join(tmpdir(), 'blip3o-bystanders-'));
  return join(dir, name);
}

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});

/** How a run ended: its answer, or its error's code and message. */
function outcome(h: ThreadHost, question: string, signal = new AbortController().signal) {
  return h.understand(ask(question), { signal, timeLimit: new JobTimeLimit(60_000), onProgress: () => undefined }).then(
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

  // A run placed alone takes an idle thread and keeps it to itself: nothing joins it while it runs, and it joins no
  // batch. Runs are held open with the double's holdWhile files, so what is asserted does not depend on timing.
  it('the last run placed alone keeps its thread to itself: a run arriving meanwhile waits, it does not join', async () => {
    const holding = flag('hold');
    writeFileSync(holding, '');
    const { h, runs } = await start({ failures: { poison: 'crash' }, holdWhile: { held: holding } });
    // both in one batch; the poison's crash is heard first, so it is placed alone first (and crashes alone: it fails)
    const poison = outcome(h, 'poison image');
    const held = outcome(h, 'held companion');
    expect(await poison).toBe('internal: the model thread exited (code 1) during the job');
    // then the companion runs alone on the fresh thread, held open
    const afterPoison = () => {
      const questions = runs().map((r) => r.question);
      return questions.slice(questions.lastIndexOf('poison image') + 1);
    };
    await vi.waitFor(() => expect(afterPoison()).toEqual(['held companion']), { timeout: 10_000, interval: 20 });
    // an ask arriving now finds no one waiting and the thread running one ask of three: were it let in, its run would
    // be posted to the thread before the next turn of the event loop, and the thread would start it
    const cancel = new AbortController();
    const late = outcome(h, 'arrived during the lone run', cancel.signal);
    await new Promise((r) => setImmediate(r));
    cancel.abort();
    expect(await late).toBe('cancelled: Cancelled.');
    expect(runs().map((r) => r.question)).not.toContain('arrived during the lone run'); // it never reached the thread
    const settled: string[] = [];
    const next = outcome(h, 'waits its turn').then((a) => void settled.push(a));
    void held.then((a) => settled.push(a));
    rmSync(holding);
    await Promise.all([held, next]);
    expect(settled).toEqual([expect.stringContaining('You asked: held companion'), expect.stringContaining('You asked: waits its turn')]);
    expect(afterPoison()).toEqual(['held companion', 'waits its turn']);
  }, 30_000);

  it('a run placed alone joins no batch with room on another thread: it waits for an idle one', async () => {
    const holding = flag('hold');
    const third = flag('hold-third');
    const noRestart = flag('no-restart');
    writeFileSync(holding, '');
    writeFileSync(third, '');
    const lines: string[] = [];
    const base = createLogger('test', 'silent');
    const log = { ...base, warn: () => undefined, error: (_f: unknown, msg: string) => void lines.push(msg) } as unknown as typeof base;
    const { h, runs } = await start(
      { failures: { poison: 'crash' }, holdWhile: { held: holding, kept: third }, load: `fail-while:${noRestart}` },
      { size: 2, respawnBaseMs: 20, log },
    );
    // the first thread full (three asks of three), so the poison and its companion take the second
    const batch = [outcome(h, 'held one'), outcome(h, 'held two'), outcome(h, 'kept third')];
    writeFileSync(noRestart, ''); // the crashed thread cannot be replaced until the test says so
    const poison = outcome(h, 'poison image');
    const companion = outcome(h, 'companion');
    // the second thread crashed and its restart failed once: both runs wait in line to be placed alone
    await vi.waitFor(() => expect(lines).toContain('could not restart a model thread; retrying'), { timeout: 10_000, interval: 20 });
    rmSync(third); // the first thread now has room for one ask: a run placed alone must not take it
    expect(await batch[2]).toContain('You asked: kept third');
    rmSync(noRestart);
    expect(await poison).toBe('internal: the model thread exited (code 1) during the job');
    expect(await companion).toContain('You asked: companion');
    rmSync(holding);
    expect(await Promise.all(batch.slice(0, 2))).toEqual([expect.stringContaining('You asked: held one'), expect.stringContaining('You asked: held two')]);
    const started = runs();
    const firstThread = started.find((r) => r.question === 'held one')!.thread;
    expect(started.filter((r) => r.thread === firstThread).map((r) => r.question)).toEqual(['held one', 'held two', 'kept third']);
    expect(started.filter((r) => r.question === 'poison image')).toHaveLength(2); // in the batch, then alone on a fresh thread
  }, 30_000);
});
