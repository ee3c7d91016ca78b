// worker/thread-host.ts with worker.maxBatch: one thread takes several runs of one stage at once (they run as
// coroutines in it), cancelling one leaves its companions running, and a thread crash fails retryably only the run
// that crashes it alone. Uses the pipeline double (test/doubles/pipeline.ts) in real worker threads.
import { getEventListeners } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AppError, isUserError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import type { ProgressReport, UnderstandRequest } from '../../../worker/pipeline/types.ts';
import { formatDuration, loaderUrl, ShareMeter, ThreadHost, type RunOptions } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

const pipelineModule = resolve(import.meta.dirname, '../../doubles/pipeline.ts');
const understanding = { minPixels: 1, maxPixels: 1 << 24, maxInputPixels: 1 << 24, maxAspectRatio: 200 };
const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer());

let host: ThreadHost | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

async function start(maxBatch: { decode: number; diffusion: number }, extra: Record<string, unknown> = {}, host_: { abortGraceMs?: number; module?: string; log?: ReturnType<typeof createLogger>; onThreadLost?: (e: Error) => void; respawnBaseMs?: number } = {}) {
  host = await ThreadHost.start({
    size: 1,
    maxBatch,
    pipelineModule: host_.module ?? pipelineModule,
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding, maxBatch, extra: { stepDelayMs: 20, maxSteps: 4, ...extra } },
    abortGraceMs: host_.abortGraceMs ?? 2000,
    log: host_.log ?? createLogger('test', 'silent'),
    onThreadLost: host_.onThreadLost,
    respawnBaseMs: host_.respawnBaseMs,
  });
  return host;
}

/** A logger whose warn and error lines are kept as [message, fields]. */
function recordingLog() {
  const lines: [string, Record<string, unknown>][] = [];
  const base = createLogger('test', 'silent');
  const keep = (fields: Record<string, unknown>, msg: string) => void lines.push([msg, fields]);
  return { log: { ...base, warn: keep, error: keep } as unknown as typeof base, lines };
}

const ask = (question: string): UnderstandRequest => ({
  image: png,
  question,
  history: [],
  options: { maxNewTokens: 20, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0 },
});

/** Runs an ask, recording in `events` when its first progress arrives and when it ends. */
function run(h: ThreadHost, name: string, events: string[], signal = new AbortController().signal, meter?: ShareMeter) {
  let started = false;
  const options: RunOptions = {
    signal,
    ...(meter ? { meter } : {}),
    timeLimit: new JobTimeLimit(60_000),
    onProgress(_r: ProgressReport) {
      if (!started) events.push(`${name} started`);
      started = true;
    },
  };
  return h.understand(ask(name), options).then(
    (a) => {
      events.push(`${name} done`);
      return a;
    },
    (e: unknown) => {
      events.push(`${name} failed`);
      throw e;
    },
  );
}

describe('ThreadHost batching (worker.maxBatch)', () => {
  it('maxBatch 1: one run at a time per thread (the second starts after the first ends)', async () => {
    const h = await start({ decode: 1, diffusion: 1 });
    expect(h.maxRuns).toBe(1);
    const events: string[] = [];
    await Promise.all([run(h, 'a', events), run(h, 'b', events)]);
    expect(events).toEqual(['a started', 'a done', 'b started', 'b done']);
  });

  it('maxBatch.decode 3: three asks run at once on one thread; a fourth waits for room', async () => {
    const h = await start({ decode: 3, diffusion: 1 });
    expect(h.maxRuns).toBe(3);
    const events: string[] = [];
    const answers = await Promise.all(['a', 'b', 'c', 'd'].map((n) => run(h, n, events)));
    expect(events.slice(0, 3).sort()).toEqual(['a started', 'b started', 'c started']);
    expect(events.indexOf('d started')).toBeGreaterThan(events.findIndex((e) => e.endsWith('done')));
    expect(answers.map((a) => a.text)).toEqual(['a', 'b', 'c', 'd'].map((n) => expect.stringContaining(`You asked: ${n}`)));
  });

  it('cancelling one run of a batch removes only it', async () => {
    const h = await start({ decode: 3, diffusion: 1 });
    const events: string[] = [];
    const cancel = new AbortController();
    const runs = [run(h, 'a', events), run(h, 'b', events, cancel.signal), run(h, 'c', events)];
    setTimeout(() => cancel.abort(), 30);
    const settled = await Promise.allSettled(runs);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((settled[1] as PromiseRejectedResult).reason as AppError)).toMatchObject({ code: 'cancelled', message: 'Cancelled.' });
  });

  it('a run cancelled while it waits for room ends at once, and the runs behind it move up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-host-'));
    const holdA = join(dir, 'hold-a'); // a holds the thread, before its first step, while this file exists
    writeFileSync(holdA, '');
    const h = await start({ decode: 1, diffusion: 1 }, { holdWhile: { a: holdA } });
    const events: string[] = [];
    const cancel = new AbortController();
    const a = run(h, 'a', events);
    const b = run(h, 'b', events, cancel.signal); // waits behind a (one run at a time)
    const c = run(h, 'c', events);
    await new Promise((r) => setTimeout(r, 50));
    cancel.abort();
    const bEnd = await b.then(() => 'fulfilled', (e: AppError) => e.code);
    expect(bEnd).toBe('cancelled');
    await expect(b).rejects.toThrow('Cancelled.');
    expect(events).toEqual(['b failed']); // told while a still holds the thread, not once it had the thread
    rmSync(dir, { recursive: true, force: true }); // a goes on
    await Promise.all([a, c]);
    expect(events).toEqual(['b failed', 'a started', 'a done', 'c started', 'c done']);
    // a run already cancelled when it asks for room takes none
    const gone = new AbortController();
    gone.abort();
    const d = run(h, 'd', events, gone.signal);
    await expect(d).rejects.toMatchObject({ code: 'cancelled', message: 'Cancelled.' });
    expect(events).not.toContain('d started');
  });

  it('close() fails the runs still waiting for room retryably (another worker takes their jobs)', async () => {
    const h = await start({ decode: 1, diffusion: 1 }, { stepDelayMs: 150 });
    const first = run(h, 'first', []).catch((e: unknown) => e);
    const waiting = run(h, 'waiting', []).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    await h.close();
    const e = (await waiting) as AppError;
    expect([e.code, e.message, isUserError(e)]).toEqual(['internal', 'the worker is shutting down', false]);
    await first;
  });

  it('a run that fails alone does not fail its companions', async () => {
    const h = await start({ decode: 2, diffusion: 1 }, { failures: { poison: 'user' } });
    const settled = await Promise.allSettled([run(h, 'fine', []), run(h, 'poison', [])]);
    expect(settled[0]!.status).toBe('fulfilled');
    expect(isUserError((settled[1] as PromiseRejectedResult).reason)).toBe(true);
  });

  // Before: the companion failed too, and lost one of its job's attempts with the crashing run
  // (more in thread-host-bystanders.test.ts).
  it('a thread crash under a batch runs each again alone: only the run that crashes alone fails, retryably; the thread is replaced', async () => {
    const h = await start({ decode: 2, diffusion: 1 }, { failures: { crash: 'crash' }, stepDelayMs: 50 });
    const events: string[] = [];
    const companion = run(h, 'companion', events);
    // the companion is mid-answer (its first of ten 50 ms steps done) when the crash comes
    await vi.waitFor(() => expect(events).toContain('companion started'), { timeout: 15_000, interval: 5 });
    const settled = await Promise.allSettled([companion, run(h, 'crash', events)]);
    expect(settled[0]!.status).toBe('fulfilled');
    expect(settled[1]!.status).toBe('rejected');
    const e = (settled[1] as PromiseRejectedResult).reason as AppError;
    expect(e.code).toBe('internal'); // retryable: processor.ts rethrows it, BullMQ retries the job
    expect(e.message).toBe('the model thread exited (code 1) during the job');
    expect(isUserError(e)).toBe(false);
    expect((await run(h, 'after', [])).text).toContain('You asked: after'); // a fresh thread serves the next run
  });

  it('a thread never mixes stages: an imagine waits for the batch of asks, and later asks wait behind it', async () => {
    const h = await start({ decode: 3, diffusion: 1 });
    const events: string[] = [];
    const a = run(h, 'a', events);
    const image = h
      .generate(
        { prompt: 'p', options: { aspect: '1:1', seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, negativePrompt: '' } as never },
        { signal: new AbortController().signal, timeLimit: new JobTimeLimit(60_000), onProgress: () => undefined },
      )
      .then(() => events.push('image done'));
    const b = run(h, 'b', events); // arrives after the imagine: must not overtake it
    await Promise.all([a, image, b]);
    expect(events).toEqual(['a started', 'a done', 'image done', 'b started', 'b done']);
  });

  it('share meters: runs sharing a thread split its time (GPU-seconds); a run alone counts its wall time', async () => {
    const h = await start({ decode: 2, diffusion: 1 }, { stepDelayMs: 60 });
    const solo = new ShareMeter();
    const t0 = Date.now();
    await run(h, 'alone', [], undefined, solo);
    // Clock granularity and the hand-off to the thread make a few ms either way (20 ms of slack on a loaded machine).
    const aloneWall = Date.now() - t0;
    expect(solo.now()).toBeLessThanOrEqual(aloneWall + 20);
    expect(solo.now()).toBeGreaterThan(0.8 * aloneWall - 20);
    const meters = [new ShareMeter(), new ShareMeter()];
    const t1 = Date.now();
    // Each meter is read as its run ends (as the processor reads it): one that ended first counts on at full rate
    // while the other finishes, which on a loaded machine can be tens of ms.
    const charged = await Promise.all(meters.map((m, i) => run(h, `pair ${i}`, [], undefined, m).then(() => m.now())));
    const wall = Date.now() - t1;
    // the two ran side by side for nearly all of their time: each is charged about half of it, and together no more
    // than the wall time
    for (const c of charged) expect(c).toBeLessThan(0.8 * wall);
    expect(charged[0]! + charged[1]!).toBeLessThanOrEqual(wall + 20);
  });
});

describe('ThreadHost: time limits, stuck threads, loading and shutting down', () => {
  it('a run past its time limit is stopped with the limit in words, and no progress is reported after', async () => {
    const h = await start({ decode: 1, diffusion: 1 }, { failures: { slow: 'slow' }, slowStepMs: 400 });
    const reports: number[] = [];
    const t0 = Date.now();
    let stoppedAt = 0;
    const e = (await h
      .understand(ask('slow question'), { signal: new AbortController().signal, timeLimit: new JobTimeLimit(500), onProgress: () => void reports.push(Date.now()) })
      .then(() => undefined, (x: unknown) => ((stoppedAt = Date.now()), x))) as AppError;
    expect([e.code, e.message]).toEqual(['timeout', 'This took longer than 1 second and was stopped.']);
    expect(stoppedAt - t0).toBeLessThan(1_600); // the thread honoured the abort at its next step
    expect(reports.every((at) => at - t0 < 650)).toBe(true); // a step that ended after the limit is not shown
    expect((await run(h, 'next', [])).text).toContain('You asked: next'); // the same thread serves the next run
  });

  it('a thread that ignores an abort is terminated after abortGraceMs and replaced; the run ends at once', async () => {
    const { log, lines } = recordingLog();
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-host-'));
    const runLogFile = join(dir, 'runs.jsonl');
    const h = await start({ decode: 1, diffusion: 1 }, { failures: { stuck: 'ignore-abort' }, slowStepMs: 2_000, runLogFile }, { abortGraceMs: 300, log });
    const cancel = new AbortController();
    const stuck = h.understand(ask('stuck question'), { signal: cancel.signal, timeLimit: new JobTimeLimit(60_000), onProgress: () => undefined }).then(() => undefined, (x: unknown) => x as AppError);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    cancel.abort();
    const e = await stuck;
    expect(e?.code).toBe('cancelled');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
    expect(Date.now() - t0).toBeLessThan(1_500); // not the ≈ 8 s the stuck steps would take
    expect(lines).toContainEqual(['model thread ignored abort; terminating it', expect.objectContaining({ abortGraceMs: 300 })]);
    const t1 = Date.now();
    expect((await run(h, 'the next one', [])).text).toContain('You asked: the next one');
    expect(Date.now() - t1).toBeLessThan(5_000);
    const threads = readFileSync(runLogFile, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { thread: number }).thread);
    expect(threads[1]).not.toBe(threads[0]); // a fresh thread, not the stuck one
    rmSync(dir, { recursive: true, force: true });
  });

  it('a pipeline module that cannot load fails the start with why; a host that is closed refuses runs', async () => {
    const notAPipeline = resolve(import.meta.dirname, '../../doubles/png-header.ts');
    await expect(start({ decode: 1, diffusion: 1 }, {}, { module: notAPipeline })).rejects.toMatchObject({
      code: 'model',
      message: `the pipeline failed to load: ${notAPipeline} does not export createPipeline`,
    });
    const h = await start({ decode: 1, diffusion: 1 });
    await h.close();
    await expect(run(h, 'too late', [])).rejects.toMatchObject({ code: 'internal', message: 'the worker is shutting down' });
  });

  it('says a time limit in words', () => {
    expect([0, 400, 1_000, 1_499, 1_500, 45_000, 119_000, 119_999, 120_000, 150_000, 600_000].map(formatDuration)).toEqual([
      '1 second', '1 second', '1 second', '1 second', '2 seconds', '45 seconds', '119 seconds', '120 seconds', '2 minutes', '3 minutes', '10 minutes',
    ]);
  });

  it('a share meter counts time alone in full and time shared by n at 1/n', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const meter = new ShareMeter();
      vi.advanceTimersByTime(1_000);
      expect(meter.now()).toBe(1_000);
      meter.share(4);
      vi.advanceTimersByTime(2_000);
      expect(meter.now()).toBe(1_500);
      meter.share(0); // never below one
      vi.advanceTimersByTime(1_000);
      expect(meter.now()).toBe(2_500);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('ThreadHost: the edges of a run and of a thread\'s life', () => {
  it('a thread that ends while loading, or throws outside the loader, fails the start with why', async () => {
    await expect(start({ decode: 1, diffusion: 1 }, { load: 'exit' })).rejects.toMatchObject({ code: 'model', message: 'the model thread exited with code 3 while loading' });
    const e = (await start({ decode: 1, diffusion: 1 }, { load: 'uncaught' }).then(() => undefined, (x: unknown) => x)) as AppError;
    expect([e.code, e.message, (e.cause as Error).message]).toEqual(['model', 'the model thread failed to start: uncaught while loading', 'uncaught while loading']);
  });

  it('a thread that cannot be restarted at once (its GPU memory not yet freed) is retried with a back-off, then serves again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-host-'));
    const flag = join(dir, 'no-memory');
    try {
      const { log, lines } = recordingLog();
      const h = await start({ decode: 1, diffusion: 1 }, { failures: { crash: 'crash' }, load: `fail-while:${flag}` }, { log, respawnBaseMs: 500 });
      writeFileSync(flag, '');
      await expect(run(h, 'crash now', [])).rejects.toMatchObject({ code: 'internal' });
      const next = run(h, 'the next one', []);
      // the first restart fails while the flag is there (waited for, not slept on: a loaded machine starts a thread slowly)
      await vi.waitFor(() => expect(lines).toContainEqual(['could not restart a model thread; retrying', { err: 'the pipeline failed to load: out of GPU memory (test)', attempt: 1 }]), { timeout: 15_000, interval: 10 });
      const failedAt = Date.now(); // at most 10 ms after the first try failed
      rmSync(flag);
      expect((await next).text).toContain('You asked: the next one'); // waited for the fresh thread, not failed
      // the first retry comes respawnBaseMs × 2 (here 1 s; 2 s unless set) after the first try failed
      expect(Date.now() - failedAt).toBeGreaterThanOrEqual(980);
      expect(existsSync(flag)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Before: the host tried for ever, and the jobs waiting for room waited for ever on a worker that looked ready.
  it('a thread that cannot be restarted 5 times in a row is reported lost, once, and the host keeps trying', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-host-'));
    const flag = join(dir, 'gpu-gone');
    try {
      const lost: string[] = [];
      const { log, lines } = recordingLog();
      const h = await start({ decode: 1, diffusion: 1 }, { failures: { crash: 'crash' }, load: `fail-while:${flag}` }, { log, respawnBaseMs: 5, onThreadLost: (e) => lost.push(e.message) });
      writeFileSync(flag, '');
      await expect(run(h, 'crash now', [])).rejects.toMatchObject({ code: 'internal' });
      const next = run(h, 'the next one', []);
      const tries = () => lines.filter(([m]) => m === 'could not restart a model thread; retrying').length;
      for (let i = 0; i < 800 && tries() < 6; i++) await new Promise((r) => setTimeout(r, 50)); // waits 10+20+40+80+160 ms, and six thread starts
      expect({ tries: tries() >= 6, lost }).toEqual({ tries: true, lost: ['the pipeline failed to load: out of GPU memory (test)'] });
      expect(lines.filter(([m]) => m === 'could not restart a model thread; retrying').slice(0, 5).map(([, f]) => f.attempt)).toEqual([1, 2, 3, 4, 5]);
      rmSync(flag);
      expect((await next).text).toContain('You asked: the next one'); // a later try still serves
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('cancelling a run that already has its room leaves the line behind it alone', async () => {
    const h = await start({ decode: 1, diffusion: 1 }, { stepDelayMs: 40 });
    const events: string[] = [];
    const cancel = new AbortController();
    const a = run(h, 'a', events, cancel.signal).catch(() => undefined);
    const b = run(h, 'b', events);
    const c = run(h, 'c', events);
    await vi.waitFor(() => expect(events).toContain('a started'), { timeout: 15_000, interval: 5 }); // a has its room
    cancel.abort();
    await Promise.all([a, b, c]);
    expect(events).toEqual(['a started', 'a failed', 'b started', 'b done', 'c started', 'c done']);
  });

  it('the first reason to stop a run wins: cancelled, then timed out before the thread\'s next step, ends as cancelled', async () => {
    const h = await start({ decode: 1, diffusion: 1 }, { failures: { slow: 'slow' }, slowStepMs: 600 }, { abortGraceMs: 2_000 });
    const cancel = new AbortController();
    const end = h.understand(ask('slow again'), { signal: cancel.signal, timeLimit: new JobTimeLimit(300), onProgress: () => undefined }).then(() => undefined, (e: unknown) => e as AppError);
    setTimeout(() => cancel.abort(), 100);
    expect([(await end)?.code, (await end)?.message]).toEqual(['cancelled', 'Cancelled.']);
  });

  it('an error thrown in the thread outside a run fails its runs retryably, and the thread is replaced', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blip3o-host-'));
    const runLogFile = join(dir, 'runs.jsonl');
    try {
      const h = await start({ decode: 1, diffusion: 1 }, { failures: { boom: 'uncaught' }, runLogFile });
      const e = (await run(h, 'boom', []).then(() => undefined, (x: unknown) => x)) as AppError;
      expect([e.code, e.message, isUserError(e), (e.cause as Error).message]).toEqual(['internal', 'the model thread crashed: uncaught in a run', false, 'uncaught in a run']);
      expect((await run(h, 'fine', [])).text).toContain('You asked: fine');
      const threads = readFileSync(runLogFile, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { thread: number }).thread);
      expect(threads).toHaveLength(2);
      expect(threads[1]).not.toBe(threads[0]); // a fresh thread
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('close() ends the runs in flight retryably (their threads are terminated: no progress after)', async () => {
    const h = await start({ decode: 1, diffusion: 1 }, { failures: { slow: 'slow' }, slowStepMs: 150 });
    const reports: number[] = [];
    const inFlight = h.understand(ask('slow to close'), { signal: new AbortController().signal, timeLimit: new JobTimeLimit(60_000), onProgress: () => void reports.push(Date.now()) }).then(() => undefined, (x: unknown) => x as AppError);
    await new Promise((r) => setTimeout(r, 200));
    await h.close();
    const closedAt = Date.now();
    expect((await inFlight)?.code).toBe('internal');
    await new Promise((r) => setTimeout(r, 400));
    expect(reports.filter((at) => at > closedAt)).toEqual([]);
  });

  it('a run that ended leaves nothing behind: no warning from its grace timer, none from a later abort', async () => {
    const { log, lines } = recordingLog();
    const h = await start({ decode: 1, diffusion: 1 }, { failures: { slow: 'slow' }, slowStepMs: 100 }, { abortGraceMs: 300, log });
    const cancel = new AbortController();
    const stopped = run(h, 'slow one', [], cancel.signal).catch((e: unknown) => e);
    setTimeout(() => cancel.abort(), 50);
    expect(((await stopped) as AppError).code).toBe('cancelled'); // the thread honoured it within a step
    const later = new AbortController();
    await run(h, 'quick', [], later.signal);
    later.abort(); // after the run ended
    await new Promise((r) => setTimeout(r, 500)); // past abortGraceMs
    expect(lines).toEqual([]);
  });

  it('a run that waited for room leaves no listener on its signal: its place in the line stops listening when it has room', async () => {
    const h = await start({ decode: 1, diffusion: 1 });
    const first = new AbortController();
    const waited = new AbortController(); // behind the first: it waits in the line, listening for a Cancel there
    await Promise.all([run(h, 'first', [], first.signal), run(h, 'waited', [], waited.signal)]);
    expect(getEventListeners(first.signal, 'abort')).toHaveLength(0);
    expect(getEventListeners(waited.signal, 'abort')).toHaveLength(0);
  });

  it('a share meter leaves its thread with its run: afterwards it counts in full however many share the thread', async () => {
    const h = await start({ decode: 2, diffusion: 1 }, { stepDelayMs: 30 });
    const done = new ShareMeter();
    await run(h, 'first', [], undefined, done);
    const before = done.now();
    const t0 = Date.now();
    await Promise.all([run(h, 'pair a', [], undefined, new ShareMeter()), run(h, 'pair b', [], undefined, new ShareMeter())]);
    expect(done.now() - before).toBeGreaterThanOrEqual(0.9 * (Date.now() - t0));
  });

  it('finds the TypeScript loader its process was started with, for the threads', () => {
    const at = '/opt/blip3o/node_modules/tsx/dist/loader.mjs';
    expect(loaderUrl(['--import', at])).toBe(pathToFileURL(at).href);
    expect(loaderUrl([`--import=${at}`])).toBe(pathToFileURL(at).href);
    expect(loaderUrl(['--import', 'file:///srv/tsx/esm.mjs'])).toBe('file:///srv/tsx/esm.mjs');
    expect(loaderUrl(['--import', '/opt/other-hooks.mjs', '--max-old-space-size=4096', `--import=${at}`])).toBe(pathToFileURL(at).href);
    expect(loaderUrl(['--import'])).toMatch(/^file:.*tsx/); // nothing after it: the repo's own tsx
    expect(loaderUrl(['--require=/opt/tsx/cjs/index.cjs'])).toBe(loaderUrl([])); // not an --import
    expect(loaderUrl([])).toMatch(/^file:.*\/node_modules\/tsx\//);
  });
});
