// worker/job-time-limit.ts: a job's limit is spent while at least one of its runs is under way, once however many
// are; time with none under way spends nothing. On a fake Date.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

beforeEach(() => void vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 }));
afterEach(() => void vi.useRealTimers());
const pass = (ms: number) => vi.setSystemTime(Date.now() + ms);

describe('JobTimeLimit', () => {
  it('runs one after another add up; the time between them spends nothing', () => {
    const limit = new JobTimeLimit(1_000);
    const first = limit.run();
    pass(500); // waiting for a first room
    expect(first.deadline).toBeUndefined();
    expect(first.begin()).toBe(Date.now() + 1_000);
    pass(400);
    first.end();
    pass(10_000); // the job between its runs, or its next run queued
    expect(limit.leftMs()).toBe(600);
    const second = limit.run();
    expect(second.begin()).toBe(Date.now() + 600);
    pass(250);
    expect(limit.leftMs()).toBe(350);
    second.end();
    expect(limit.leftMs()).toBe(350);
  });

  it('runs under way at once spend it once, and share one deadline', () => {
    const limit = new JobTimeLimit(1_000);
    const a = limit.run();
    const deadline = a.begin();
    pass(300);
    const b = limit.run();
    expect(b.begin()).toBe(deadline);
    pass(300);
    expect(limit.leftMs()).toBe(400);
    a.end();
    pass(100);
    expect(limit.leftMs()).toBe(300); // b still under way
    b.end();
    pass(5_000);
    expect(limit.leftMs()).toBe(300);
  });

  it('begin() again keeps the first deadline (a run placed again); end() before begin() or twice changes nothing', () => {
    const limit = new JobTimeLimit(1_000);
    const never = limit.run();
    never.end(); // cancelled while it waited for a first room
    const run = limit.run();
    const deadline = run.begin();
    pass(200);
    expect(run.begin()).toBe(deadline);
    run.end();
    run.end();
    pass(1_000);
    expect(limit.leftMs()).toBe(800);
  });

  it('can run out: what is left goes to 0 and below', () => {
    const limit = new JobTimeLimit(100);
    const run = limit.run();
    run.begin();
    pass(150);
    run.end();
    expect(limit.leftMs()).toBe(-50);
    expect(limit.run().begin()).toBe(Date.now() - 50);
  });
});
