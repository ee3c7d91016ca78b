// worker/thread-host.ts: a run's time limit (queue.jobTimeoutMs) is a deadline for the whole run, counted from when it
// first has room in a thread. A run placed again (its thread terminated for a batch-mate that ignored its abort, or a
// crashed batch) gets only what is left of it, and its wait to be placed again counts: before, each placement had the
// whole limit, so one run could hold its job's lock, budget reservation and user for up to three limits in all.
// The host's clock is faked (setTimeout, clearTimeout and Date of this thread only; the pipeline double's threads keep
// real time) and runs are held open with the double's holdWhile files, so nothing here depends on how fast it runs.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as realSleep } from 'node:timers/promises';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AppError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import type { UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { ThreadHost } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';
import { untilOrStillWaiting as until } from '../../doubles/real-time-poll.ts';

const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());
const LIMIT_MS = 60_000;
const TIMED_OUT = 'timeout: This took longer than 60 seconds and was stopped.'; // formatDuration's words

let host: ThreadHost | undefined;
let dir: string | undefined;
afterEach(async () => {
  vi.useRealTimers();
  await host?.close();
  host = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function flag(name: string): string {
  dir ??= mkdtempSync(join(tmpdir(), 'blip3o-deadline-'));
  return join(dir, name);
}

/** A logger that keeps its warn and error messages. */
function recordingLog() {
  const lines: string[] = [];
  const base = createLogger('test', 'silent');
  const keep = (_fields: unknown, msg: string) => void lines.push(msg);
  return { log: { ...base, warn: keep, error: keep } as unknown as typeof base, lines };
}

/** One thread taking up to three asks at once (`maxBatch.decode` 1 with `oneAtATime`), started on real time; the
 *  host's clock is faked from then on. `runs()`: the questions the threads started, in order. */
async function start(extra: Record<string, unknown>, options: { oneAtATime?: boolean; log?: ReturnType<typeof createLogger> } = {}) {
  const runLogFile = flag('runs.jsonl');
  const maxBatch = { decode: options.oneAtATime ? 1 : 3, diffusion: 1 };
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { maxSteps: 2, runLogFile, ...extra } },
    abortGraceMs: 300,
    log: options.log ?? createLogger('test', 'silent'),
    respawnBaseMs: 20,
  });
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const runs = (): string[] =>
    existsSync(runLogFile)
      ? readFileSync(runLogFile, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { question: string }).question)
      : [];
  return { h: host, runs };
}

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});

/** Runs an ask with a whole limit of its own, or its job's `timeLimit`; `ended()` is how it ended (its answer, or its
 *  error's code and message), or undefined while it runs. */
function outcome(h: ThreadHost, question: string, signal = new AbortController().signal, timeLimit = new JobTimeLimit(LIMIT_MS)) {
  let end: string | undefined;
  const done = h.understand(ask(question), { signal, timeLimit, onProgress: () => undefined }).then(
    (a) => (end = a.text),
    (e: unknown) => (end = `${(e as AppError).code}: ${(e as Error).message}`),
  );
  return { done, ended: () => end };
}

const count = (list: string[], item: string) => list.filter((x) => x === item).length;

describe('ThreadHost: a run placed again has only what is left of its time limit', () => {
  it('after its batch crashed: run again alone, it is stopped when its first placement\'s deadline passes', async () => {
    const held = flag('hold');
    writeFileSync(held, '');
    const { h, runs } = await start({ failures: { poison: 'crash' }, holdWhile: { held } });
    const companion = outcome(h, 'held companion');
    expect(await until(() => (runs().includes('held companion') ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(45_000); // 15 s of its limit left
    const poison = outcome(h, 'poison image'); // joins the batch and crashes the thread
    // each is run again alone on the fresh thread, one after the other; the companion is held open there
    expect(await until(() => (count(runs(), 'held companion') === 2 ? true : undefined))).toBe(true);
    expect(companion.ended()).toBeUndefined();
    vi.advanceTimersByTime(15_000);
    expect(await until(companion.ended)).toBe(TIMED_OUT); // before: a fresh minute, and it ran on
    expect(await until(poison.ended)).toBe('internal: the model thread exited (code 1) during the job'); // crashed again, alone
  }, 30_000);

  it('after a batch-mate ignored its abort: run again on the fresh thread, it is stopped when its first placement\'s deadline passes', async () => {
    const held = flag('hold');
    writeFileSync(held, '');
    const { h, runs } = await start({ failures: { stuck: 'ignore-abort' }, slowStepMs: 2_000, holdWhile: { held } });
    const companion = outcome(h, 'held companion');
    expect(await until(() => (runs().includes('held companion') ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(50_000); // 10 s of its limit left
    const cancel = new AbortController();
    const stuck = outcome(h, 'stuck one', cancel.signal);
    expect(await until(() => (runs().includes('stuck one') ? true : undefined))).toBe(true);
    cancel.abort();
    vi.advanceTimersByTime(300); // the grace: the stuck thread is terminated, the companion placed again
    expect(await until(stuck.ended)).toBe('cancelled: Cancelled.');
    expect(await until(() => (count(runs(), 'held companion') === 2 ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(9_700);
    expect(await until(companion.ended)).toBe(TIMED_OUT);
  }, 30_000);

  it('the wait to be placed again counts: a run whose deadline passes while its thread cannot be restarted leaves the line', async () => {
    const held = flag('hold');
    const noRestart = flag('no-restart');
    writeFileSync(held, '');
    const { log, lines } = recordingLog();
    const { h, runs } = await start({ failures: { poison: 'crash' }, holdWhile: { held }, load: `fail-while:${noRestart}` }, { log });
    const companion = outcome(h, 'held companion');
    expect(await until(() => (runs().includes('held companion') ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(45_000);
    writeFileSync(noRestart, '');
    const poison = outcome(h, 'poison image');
    // both wait in line for a thread that cannot be restarted
    expect(await until(() => (lines.includes('could not restart a model thread; retrying') ? true : undefined))).toBe(true);
    expect(count(lines, 'model thread went down under a run not to blame; running it again')).toBe(2);
    vi.advanceTimersByTime(15_000);
    expect(await until(companion.ended)).toBe(TIMED_OUT); // before: it waited for the thread, then ran a fresh minute
    expect(poison.ended()).toBeUndefined(); // placed again 45 s later: 45 s of its own limit left
    rmSync(noRestart);
    rmSync(held);
    for (let i = 0; i < 300 && !poison.ended(); i++) {
      vi.advanceTimersByTime(100); // the restart's back-off (of at most 30 s of its 45 s)
      await realSleep(50);
    }
    expect(await until(poison.ended)).toBe('internal: the model thread exited (code 1) during the job');
    expect(count(runs(), 'held companion')).toBe(1); // never posted again
  }, 30_000);

  it('a run whose deadline passed by the time it is placed again is not posted again: it fails as timed out', async () => {
    const held = flag('hold');
    writeFileSync(held, '');
    const { h, runs } = await start({ failures: { poison: 'crash' }, holdWhile: { held } });
    const companion = outcome(h, 'held companion');
    expect(await until(() => (runs().includes('held companion') ? true : undefined))).toBe(true);
    vi.setSystemTime(Date.now() + LIMIT_MS); // the clock at its deadline, its timer not run yet (a busy event loop)
    const poison = outcome(h, 'poison image');
    expect(await until(companion.ended)).toBe(TIMED_OUT); // before: run again with a fresh minute
    expect(count(runs(), 'held companion')).toBe(1);
    expect(await until(poison.ended)).toBe('internal: the model thread exited (code 1) during the job');
  }, 30_000);

  it('the wait for a first room does not count: the limit runs from when the run first has room in a thread', async () => {
    const held = flag('hold');
    writeFileSync(held, '');
    const { h, runs } = await start({ holdWhile: { held } }, { oneAtATime: true });
    const first = outcome(h, 'held first');
    expect(await until(() => (runs().includes('held first') ? true : undefined))).toBe(true);
    const second = outcome(h, 'second'); // waits for room behind the first
    vi.advanceTimersByTime(LIMIT_MS - 1); // just inside the first's limit; the second has not started
    rmSync(held);
    expect(await until(first.ended)).toContain('You asked: held first');
    expect(await until(second.ended)).toContain('You asked: second');
  }, 30_000);
});

describe('ThreadHost: the runs of one job spend one limit (worker/job-time-limit.ts)', () => {
  it('a wait for a first room between a job\'s runs does not count: behind another job for most of a limit, it still has its rest', async () => {
    const [heldA1, heldB, heldA2] = [flag('a1'), flag('b'), flag('a2')];
    for (const f of [heldA1, heldB, heldA2]) writeFileSync(f, '');
    const { h, runs } = await start({ holdWhile: { 'job A, first': heldA1, 'job B': heldB, 'job A, second': heldA2 } }, { oneAtATime: true });
    const limitA = new JobTimeLimit(LIMIT_MS);
    const a1 = outcome(h, 'job A, first', undefined, limitA);
    expect(await until(() => (runs().includes('job A, first') ? true : undefined))).toBe(true);
    const b = outcome(h, 'job B'); // waits for room behind A's first run
    vi.advanceTimersByTime(30_000);
    const a2 = outcome(h, 'job A, second', undefined, limitA); // waits behind B
    rmSync(heldA1);
    expect(await until(a1.ended)).toContain('You asked: job A, first');
    expect(await until(() => (runs().includes('job B') ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(54_000); // B runs; A has none under way: its limit stands at 30 s left
    rmSync(heldB);
    expect(await until(b.ended)).toContain('You asked: job B');
    expect(await until(() => (runs().includes('job A, second') ? true : undefined))).toBe(true);
    vi.advanceTimersByTime(27_000);
    expect(a2.ended()).toBeUndefined(); // 57 s of A's 60 in its runs, 111 s since its first had room
    rmSync(heldA2);
    expect(await until(a2.ended)).toContain('You asked: job A, second');
    expect(limitA.leftMs()).toBe(3_000);
  }, 30_000);

  it('a run of a job whose earlier runs spent its limit is stopped at once, without waiting for room', async () => {
    const [heldFirst, heldOther] = [flag('first'), flag('other')];
    for (const f of [heldFirst, heldOther]) writeFileSync(f, '');
    const { h, runs } = await start({ holdWhile: { 'first run': heldFirst, 'other job': heldOther } }, { oneAtATime: true });
    const limit = new JobTimeLimit(LIMIT_MS);
    const first = outcome(h, 'first run', undefined, limit);
    expect(await until(() => (runs().includes('first run') ? true : undefined))).toBe(true);
    const other = outcome(h, 'other job'); // waits for room
    vi.setSystemTime(Date.now() + LIMIT_MS); // the clock at the deadline, its timer not run yet (a busy event loop)
    rmSync(heldFirst);
    expect(await until(first.ended)).toContain('You asked: first run'); // its answer came before its timer ran
    expect(await until(() => (runs().includes('other job') ? true : undefined))).toBe(true);
    const next = outcome(h, 'next run', undefined, limit); // the thread is busy with the other job
    expect(await until(next.ended)).toBe(TIMED_OUT); // not after the other job's run
    expect(other.ended()).toBeUndefined();
    expect(runs()).not.toContain('next run');
    rmSync(heldOther);
    expect(await until(other.ended)).toContain('You asked: other job');
  }, 30_000);
});
