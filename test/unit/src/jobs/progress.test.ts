// The worker's progress writes (src/jobs/progress.ts): at most one per interval, a new stage at once, the newest
// report never lost while the run lasts, nothing once it is over.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobProgress } from '../../../../src/jobs/contract.ts';
import { coalesceProgress, progressIntervalMs, progressWriteIntervalMs } from '../../../../src/jobs/progress.ts';

const report = (stage: JobProgress['stage'], step: number): JobProgress => ({ v: CONTRACT_VERSION, jobId: 'j', stage, step, total: 100 });
const steps = (written: JobProgress[]) => written.map((p) => `${p.stage}:${p.step}`);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('coalesceProgress', () => {
  it('writes the first report at once, then the newest once per interval', () => {
    const written: JobProgress[] = [];
    const c = coalesceProgress(500, (p) => written.push(p));
    c.push(report('features', 0));
    expect(steps(written)).toEqual(['features:0']);
    for (let i = 1; i <= 9; i++) {
      vi.advanceTimersByTime(100); // a step every 100 ms
      c.push(report('features', i));
    }
    // t = 900: written at 0 and 500 (the newest then, step 4, held from 400); step 9 waits for 1000
    expect(steps(written)).toEqual(['features:0', 'features:4']);
    vi.advanceTimersByTime(99);
    expect(written).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(steps(written)).toEqual(['features:0', 'features:4', 'features:9']);
    vi.advanceTimersByTime(5_000);
    expect(written).toHaveLength(3); // nothing new: nothing written
  });

  it('a new stage is written at once, and replaces the old stage’s pending report', () => {
    const written: JobProgress[] = [];
    const c = coalesceProgress(1_000, (p) => written.push(p));
    c.push(report('features', 0));
    vi.advanceTimersByTime(10);
    c.push(report('features', 1)); // pending
    vi.advanceTimersByTime(10);
    c.push(report('decoding', 0)); // a new stage: at once
    expect(steps(written)).toEqual(['features:0', 'decoding:0']);
    vi.advanceTimersByTime(2_000);
    expect(steps(written)).toEqual(['features:0', 'decoding:0']); // features:1 was superseded, not written late
    c.push(report('decoding', 1)); // the interval since decoding:0 has passed
    expect(steps(written)).toEqual(['features:0', 'decoding:0', 'decoding:1']);
  });

  it('writes nothing once stopped, a pending report included', () => {
    const written: JobProgress[] = [];
    const c = coalesceProgress(500, (p) => written.push(p));
    c.push(report('answering', 1));
    c.push(report('answering', 2)); // pending
    c.stop();
    vi.advanceTimersByTime(1_000);
    c.push(report('answering', 3));
    c.push(report('decoding', 0));
    expect(steps(written)).toEqual(['answering:1']);
  });

  it('interval 0 writes every report', () => {
    const written: JobProgress[] = [];
    const c = coalesceProgress(0, (p) => written.push(p));
    for (let i = 0; i < 5; i++) c.push(report('features', i));
    expect(written).toHaveLength(5);
  });

  it('the worker writes twice per edit interval of the destination', () => {
    const config = loadConfig({ env: {}, overrides: { discord: { progressEditIntervalMs: 1200 }, slack: { progressUpdateIntervalMs: 3000 } } });
    const discord: Destination = { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a' };
    const slack = { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' } as Destination;
    const cli = { platform: 'cli', clientId: 'x' } as Destination;
    expect([discord, slack, cli].map((d) => progressIntervalMs(config, d))).toEqual([1200, 3000, 100]);
    expect([discord, slack, cli].map((d) => progressWriteIntervalMs(config, d))).toEqual([600, 1500, 50]);
  });
});
