// worker/job-clock.ts on a fake clock: a job's GPU milliseconds over its runs, each on a meter of its own, driven as
// worker/thread-host.ts drives them (waitForRoom() while queued for a thread, share(n) while n runs share it, share(1)
// as the run leaves). The images of an --n job cost the same one after another or at once.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JobClock, timedHost } from '../../../worker/job-clock.ts';
import type { ShareMeter } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

beforeEach(() => void vi.useFakeTimers({ now: 1_000_000 }));
afterEach(() => void vi.useRealTimers());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A run of `computeMs` on a thread that `runs` runs share (its own among them), after `waitMs` queued for room. The
 * fake clock moves only when a test advances it: runs at once all see the same time pass.
 */
async function threadRun(meter: ShareMeter, { waitMs = 0, computeMs, runs = 1 }: { waitMs?: number; computeMs: number; runs?: number }): Promise<void> {
  meter.waitForRoom();
  await sleep(waitMs);
  meter.share(runs);
  await sleep(computeMs);
  meter.share(1);
}

/** Runs `work` while the fake clock advances `ms`; its outcome. */
async function during<T>(ms: number, work: Promise<T>): Promise<T> {
  work.catch(() => undefined); // awaited below
  await vi.advanceTimersByTimeAsync(ms);
  return work;
}

describe('JobClock', () => {
  it('counts its own work in full, a wait for room not at all, a shared thread 1/n', async () => {
    const clock = new JobClock();
    await vi.advanceTimersByTimeAsync(100); // the processor's own work before the first run
    await during(6_000, clock.run((m) => threadRun(m, { waitMs: 5_000, computeMs: 1_000, runs: 2 })));
    expect(clock.now()).toBe(100 + 500);
    await vi.advanceTimersByTimeAsync(50); // between runs
    expect(clock.now()).toBe(650);
  });

  it('four images one after another and four at once, alone on a thread, cost the same', async () => {
    const oneByOne = new JobClock();
    for (let i = 0; i < 4; i++) await during(1_300, oneByOne.run((m) => threadRun(m, { waitMs: 300, computeMs: 1_000 })));
    const oneByOneMs = oneByOne.now(); // read as the job ends (it goes on counting in full after its runs)
    // at once: one batch of the four, the thread's time split four ways (a batch of four takes what four steps of one take)
    const atOnce = new JobClock();
    await during(4_300, Promise.all(Array.from({ length: 4 }, () => atOnce.run((m) => threadRun(m, { waitMs: 300, computeMs: 4_000, runs: 4 })))));
    expect({ oneByOne: oneByOneMs, atOnce: atOnce.now() }).toEqual({ oneByOne: 4_000, atOnce: 4_000 });
  });

  it('two of its runs among four on a thread are charged half the thread, not the wall clock', async () => {
    const clock = new JobClock();
    await during(2_000, Promise.all([0, 1].map(() => clock.run((m) => threadRun(m, { computeMs: 2_000, runs: 4 })))));
    expect(clock.now()).toBe(1_000);
  });

  it('runs at once on two threads, one ending first and another starting while the rest go on: each charged once', async () => {
    const clock = new JobClock();
    const first = clock.run((m) => threadRun(m, { computeMs: 1_000 }));
    const long = clock.run((m) => threadRun(m, { computeMs: 3_000 }));
    await during(1_500, first);
    expect(clock.now()).toBe(1_000 + 1_500); // read while `long` runs (a stage's time under --n): its share so far
    const third = clock.run((m) => threadRun(m, { computeMs: 1_000 })); // while `long` runs
    await during(1_500, Promise.all([long, third]));
    expect(clock.now()).toBe(1_000 + 3_000 + 1_000);
  });

  it('a run that fails is charged up to its end, and the clock runs in full again after it', async () => {
    const clock = new JobClock();
    const failed = clock.run(async (m) => {
      await threadRun(m, { waitMs: 700, computeMs: 200 });
      throw new Error('the model thread exited (code 1) during the job');
    });
    await expect(during(900, failed)).rejects.toThrow('exited');
    expect(clock.now()).toBe(200);
    await vi.advanceTimersByTimeAsync(30);
    expect(clock.now()).toBe(230);
  });

  it('timedHost gives each call a meter of its own, in place of any the caller passed', async () => {
    const meters: (ShareMeter | undefined)[] = [];
    const record = async (_request: unknown, options: { meter?: ShareMeter }) => void meters.push(options.meter);
    const host = timedHost(
      { generate: record as never, understand: record as never, check: record as never },
      new JobClock(),
    );
    const options = { signal: new AbortController().signal, timeLimit: new JobTimeLimit(1_000), onProgress: () => undefined };
    await Promise.all([host.generate({} as never, options), host.generate({} as never, options), host.understand({} as never, options), host.check({} as never, options)]);
    expect(meters.every((m) => m !== undefined)).toBe(true);
    expect(new Set(meters).size).toBe(4);
  });
});
