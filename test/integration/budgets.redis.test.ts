// Issue 17 over real Redis and a real worker process (test double pipeline whose steps take a known time):
// GPU-second accounting, a daily budget set at runtime refusing the request that would exceed it (nothing enqueued),
// fair scheduling weighted by GPU-seconds (an expensive-jobs channel and a cheap-jobs channel share one worker
// equally in GPU time), and the usage report with its chart.
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { CommandInput, Invocation, Reply } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { DiscordDestination, JobResult } from '../../src/jobs/contract.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { measuredSeconds } from '../../src/accounting/usage.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, startWorker, stopProcess, until, type Harness, type Proc } from '../doubles/spine-harness.ts';

const secrets = loadSecrets({ REDIS_URL });
let redis: Redis;
const started: { core: Core; worker?: Proc; h: Harness }[] = [];

const dest = (channelId: string, userId = 'u1'): DiscordDestination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const inv = (input: CommandInput, d: DiscordDestination, isAdmin = false): Invocation => ({ input, destination: d, dedupeKey: randomUUID(), isAdmin });
const imagine = (prompt: string, d: DiscordDestination, steps: [number, number]) =>
  inv({ command: 'imagine', prompt, ditSteps: steps[0], decoderSteps: steps[1] }, d);
const jobIdOf = (r: Reply) => {
  if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
  return r.jobId;
};

async function setup(h: Harness) {
  const port = new RecordingPort('discord');
  const worker = await startWorker(h);
  const core = createCore({ config: h.config, secrets, ports: [port] });
  await core.start();
  started.push({ core, worker, h });
  return { port, core };
}

beforeAll(() => {
  redis = createRedis(REDIS_URL);
});
afterAll(async () => {
  for (const s of started) {
    await s.core.stop();
    await stopProcess(s.worker);
    await cleanup(redis, s.h.prefix);
  }
  await closeRedis(redis);
});

describe('GPU-second budgets and the usage report', () => {
  const h = makeHarness({ worker: { pipelineExtra: { stepDelayMs: 40, maxSteps: 3 } } });
  let env: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    env = await setup(h);
  }, 150_000);

  it('measures GPU-seconds per job; a runtime budget refuses the request that would exceed it, privately, and enqueues nothing', async () => {
    const d = dest('paid');
    for (const i of [1, 2]) {
      const id = jobIdOf(await env.core.handle(imagine(`budget warm-up ${i}`, d, [3, 3])));
      const r = await env.port.waitFor(id);
      expect(measuredSeconds(r, 0)).toBeGreaterThan(0.2); // 7 steps × 40 ms, measured by the worker
      // the worker counts a job right after handing its result over
      await until(async () => (await redis.exists(`${h.prefix}:{usage}:settled:${id}`)) === 1, 10_000, 'the job to be counted');
      // and BullMQ records it completed a moment later: the job counts below must not catch it still active
      await until(async () => (await env.core.queue.getJobState(id)) === 'completed', 10_000, 'the job to complete');
    }
    const today = await env.core.gate.usage.today(d);
    expect(today.channel.used).toBeGreaterThan(0.4);
    expect(today.channel.inflight).toBe(0); // the reservations were released when the jobs ended
    // an admin sets a budget just above what was used: the next request (estimated from the two) would exceed it
    const budget = Math.round((today.channel.used + 0.1) * 10) / 10;
    const set = await env.core.handle(inv({ command: 'budget', action: 'set', scope: 'channel', seconds: budget }, d, true));
    expect(set).toMatchObject({ kind: 'text', private: true });
    expect(set.text).toContain(`${budget} GPU-seconds per day`);
    const before = await env.core.queue.getJobCounts('completed', 'waiting', 'delayed', 'prioritized', 'active', 'failed');
    const runsBefore = runs(h).length;
    const refused = await env.core.handle(imagine('one too many', d, [3, 3]));
    expect(refused.kind).toBe('error');
    expect(refused).toMatchObject({ private: true });
    const used = Math.round(today.channel.used * 10) / 10;
    expect(refused.text).toMatch(new RegExp(`^This channel has used ${used >= 10 ? Math.round(used) : used} of its ${budget} GPU-seconds today; it resets at 00:00 UTC, in \\d+ (s|min|h \\d+ min)\\. This request needs about [\\d.]+\\.$`));
    expect(await env.core.queue.getJobCounts('completed', 'waiting', 'delayed', 'prioritized', 'active', 'failed')).toEqual(before);
    expect(runs(h).length).toBe(runsBefore);
    // another channel has its own budget (the default: none)
    const other = jobIdOf(await env.core.handle(imagine('another channel', dest('free'), [3, 3])));
    await env.port.waitFor(other);
    // non-admins cannot change budgets; reset restores the default
    expect(await env.core.handle(inv({ command: 'budget', action: 'set', scope: 'channel', seconds: 1e6 }, d))).toMatchObject({ kind: 'error' });
    await env.core.handle(inv({ command: 'budget', action: 'reset', scope: 'channel' }, d, true));
    const again = jobIdOf(await env.core.handle(imagine('one too many', d, [3, 3])));
    await env.port.waitFor(again);
    for (const id of [other, again]) await until(async () => (await redis.exists(`${h.prefix}:{usage}:settled:${id}`)) === 1, 10_000, 'the job to be counted');
  });

  it('/blip3o-admin usage: top channels and users by GPU-seconds, jobs, cache hits, refusals, with a chart, private', async () => {
    const report = await env.core.handle(inv({ command: 'usage', days: 1 }, dest('paid'), true));
    if (report.kind !== 'text') throw new Error(JSON.stringify(report));
    expect(report.private).toBe(true);
    expect(report.text).toMatch(/GPU usage in this server over today \(UTC\): [\d.]+ GPU-seconds\./);
    expect(report.text).toMatch(/Top channels:\n```\nname\s+GPU-s\s+jobs\s+cached\s+refused\nthis channel\s+[\d.]+\s+3\s+0\s+1\n#free\s+[\d.]+\s+1\s+0\s+0\n```/);
    expect(report.text).toMatch(/Top users:\n```\nname\s+GPU-s\s+jobs\s+cached\s+refused\n@u1\s+[\d.]+\s+4\s+0\s+1\n```/);
    const meta = await sharp(report.image!.png).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBe(640);
    expect(await env.core.handle(inv({ command: 'usage' }, dest('paid')))).toMatchObject({ kind: 'error', text: 'Only admins can see GPU usage.' });
    expect(await env.core.handle(inv({ command: 'usage', days: 0 }, dest('paid'), true))).toMatchObject({ kind: 'error' });
  });
});

describe('fair scheduling weighted by GPU-seconds', () => {
  // one worker thread; every step 25 ms: an expensive job (1 + 10 + 9 steps) costs 4× a cheap one (1 + 2 + 2)
  const h = makeHarness({
    worker: { concurrency: 1, pipelineExtra: { stepDelayMs: 25, maxSteps: 50 } },
    usage: { fairCostUnitMs: 10 },
  });
  let env: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    env = await setup(h);
  }, 150_000);

  it('an expensive-jobs channel and a cheap-jobs channel share the worker equally in GPU-seconds, not in jobs', async () => {
    const expensive: [number, number] = [10, 9];
    const cheap: [number, number] = [2, 2];
    // recent measurements for both kinds of job, so admission can estimate them
    for (let i = 0; i < 3; i++) {
      await env.port.waitFor(jobIdOf(await env.core.handle(imagine(`warm-up expensive ${i}`, dest('warm'), expensive))));
      await env.port.waitFor(jobIdOf(await env.core.handle(imagine(`warm-up cheap ${i}`, dest('warm'), cheap))));
    }
    // the expensive channel queues first: FIFO would run all of it first, job-count round-robin would give it 4×
    const ids = { A: [] as string[], B: [] as string[] };
    for (let i = 0; i < 12; i++) ids.A.push(jobIdOf(await env.core.handle(imagine(`expensive ${i}`, dest('A'), expensive))));
    for (let i = 0; i < 48; i++) ids.B.push(jobIdOf(await env.core.handle(imagine(`cheap ${i}`, dest('B'), cheap))));
    const results: Record<'A' | 'B', JobResult[]> = {
      A: await Promise.all(ids.A.map((id) => env.port.waitFor(id, 120_000))),
      B: await Promise.all(ids.B.map((id) => env.port.waitFor(id, 120_000))),
    };
    // GPU time each channel had received by the moment the first of them started its last job (until then both
    // had work waiting), each job counted for the part of it run by then (it ran from finishedAt - its GPU time)
    const startOf = (r: JobResult) => r.finishedAt - measuredSeconds(r, 0) * 1000;
    const until = Math.min(...(['A', 'B'] as const).map((c) => Math.max(...results[c].map(startOf))));
    const gpu = (c: 'A' | 'B') => results[c].reduce((sum, r) => sum + Math.min(Math.max(0, until - startOf(r)), measuredSeconds(r, 0) * 1000) / 1000, 0);
    const served = (c: 'A' | 'B') => results[c].filter((r) => startOf(r) < until);
    const [a, b] = [gpu('A'), gpu('B')];
    const share = a / (a + b);
    console.log(`fair share by GPU-seconds: A ${a.toFixed(2)} s in ${served('A').length} jobs, B ${b.toFixed(2)} s in ${served('B').length} jobs → A/B ${(a / b).toFixed(3)}`);
    expect(Math.abs(a / b - 1)).toBeLessThanOrEqual(0.15);
    expect(share).toBeGreaterThan(0.4);
    expect(served('B').length).toBeGreaterThanOrEqual(2.5 * served('A').length); // many more cheap jobs than expensive ones
  }, 240_000);
});
