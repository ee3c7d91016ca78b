// Two bot instances of one platform share Redis: a job's progress is shown by one of them only, its result
// is posted once, and no progress edit lands after the result (it would cover the image with "queued").
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { Destination, JobProgress, JobResult } from '../../src/jobs/contract.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, REDIS_URL, sleep, startWorker, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({
  slack: { progressUpdateIntervalMs: 50 },
  worker: { pipelineExtra: { stepDelayMs: 40 } },
});
const secrets = loadSecrets({ REDIS_URL });

type Event = { instance: string; what: 'progress' | 'deliver'; jobId: string; at: number };
const events: Event[] = [];

/** A Slack-platform port that logs into one shared timeline. */
const port = (instance: string) => ({
  platform: 'slack' as const,
  async showProgress(_d: Destination, p: JobProgress) {
    events.push({ instance, what: 'progress', jobId: p.jobId, at: Date.now() });
  },
  async deliver(r: JobResult) {
    events.push({ instance, what: 'deliver', jobId: r.jobId, at: Date.now() });
  },
});

let redis: Redis;
let worker: Proc;
const cores: Core[] = [];

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  worker = await startWorker(h);
  for (const name of ['A', 'B']) {
    const core = createCore({ config: h.config, secrets, ports: [port(name)] });
    await core.start();
    cores.push(core);
  }
});

afterAll(async () => {
  await worker?.kill('SIGTERM');
  for (const c of cores) await c.stop();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

it('progress comes from the submitting instance only, and never after the result', async () => {
  const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
  const jobIds: string[] = [];
  for (let i = 0; i < 3; i++) {
    const reply = await cores[0]!.handle({
      input: { command: 'imagine', prompt: `a lighthouse ${i}`, seed: i, ditSteps: 6, decoderSteps: 6 },
      destination, dedupeKey: randomUUID(), isAdmin: false,
    });
    expect(reply.kind).toBe('queued');
    if (reply.kind === 'queued') jobIds.push(reply.jobId);
  }
  await until(() => jobIds.every((id) => events.some((e) => e.what === 'deliver' && e.jobId === id)), 60_000, 'three deliveries');
  await sleep(500); // any late progress edit would land now

  for (const id of jobIds) {
    const mine = events.filter((e) => e.jobId === id);
    expect(mine.filter((e) => e.what === 'deliver')).toHaveLength(1);
    const progress = mine.filter((e) => e.what === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(new Set(progress.map((e) => e.instance))).toEqual(new Set(['A']));
    const deliveredAt = mine.findIndex((e) => e.what === 'deliver');
    expect(mine.slice(deliveredAt + 1).filter((e) => e.what === 'progress')).toEqual([]);
  }
});
