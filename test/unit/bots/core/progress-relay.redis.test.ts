// The progress relay of two bot instances of one platform, over real Redis and BullMQ: the submitting instance shows a
// job's progress; the other tries once per lease period, not once per edit interval, and takes the job over when the
// lease lapses (its holder died). And how often a relay recomputes its waiting jobs' queue positions.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { POSITION_REFRESH_MS, ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobProgress } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { queuePositions } from '../../../../src/jobs/position.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-relay-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let redis: Redis;
let queue: JobsQueue;

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
  queue = createJobsQueue(config, redis);
});
afterAll(async () => {
  await queue.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

/** A relay as `instanceId` with its own events, port and ledger; counts its edits and its tries (ledger calls). */
function instance(instanceId: string) {
  const events = new EventEmitter();
  const shown: JobProgress[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void shown.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const ledger = new DeliveryLedger(redis, config);
  let tries = 0;
  const leased = ledger.whileLeasedAndNotDelivered.bind(ledger);
  ledger.whileLeasedAndNotDelivered = async (...args) => (tries++, leased(...args));
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20, ledger, instanceId, prefix, log: createLogger('test', 'silent'),
  });
  relay.start();
  const progress = (jobId: string, step: number) => events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 100 } });
  return { relay, shown, progress, tries: () => tries };
}

it('the submitter shows progress; another instance tries once per lease period, and takes over once the lease lapses', async () => {
  const a = instance('A');
  const b = instance('B');
  try {
    const j1 = `j1-${randomUUID().slice(0, 8)}`;
    await queue.add('imagine', { destination } as never, { jobId: j1 });
    a.relay.track(j1, destination, undefined); // takes the lease
    const lease = `${prefix}:progress-owner:${j1}`;
    for (let i = 0; i < 50 && (await redis.get(lease)) !== 'A'; i++) await sleep(10);
    for (let step = 0; step < 12; step++) {
      a.progress(j1, step);
      b.progress(j1, step);
      await sleep(25); // past the 20 ms edit interval each time
    }
    await sleep(50);
    expect(a.shown.length).toBeGreaterThanOrEqual(6);
    expect(b.shown).toEqual([]);
    expect(b.tries()).toBeLessThanOrEqual(2); // one per lease period (a second may start before the first answers)
    expect(b.tries()).toBeGreaterThanOrEqual(1);

    // A dies (no more edits, its lease not renewed) with 200 ms left on the lease of a second job: B waits that long.
    a.relay.stop();
    const j2 = `j2-${randomUUID().slice(0, 8)}`;
    await queue.add('imagine', { destination } as never, { jobId: j2 });
    await redis.set(`${prefix}:progress-owner:${j2}`, 'A', 'PX', 200);
    const t0 = Date.now();
    for (let step = 0; step < 20; step++) {
      b.progress(j2, step);
      await sleep(25);
    }
    await sleep(50);
    const mine = b.shown.filter((p) => p.jobId === j2);
    expect(mine.length).toBeGreaterThanOrEqual(3); // taken over: edits every interval since
    expect(mine[0]!.step).toBeGreaterThanOrEqual(6); // not before the lease lapsed (200 ms, a step every 25 ms)
    expect(await redis.get(`${prefix}:progress-owner:${j2}`)).toBe('B');
    expect(Date.now() - t0).toBeLessThan(5_000);
  } finally {
    a.relay.stop();
    b.relay.stop();
  }
});

it('recomputes queue positions at most every POSITION_REFRESH_MS, and at most twice per edit interval of the waiting jobs', async () => {
  // Two relays, each with a job waiting (added parked, never started): one for a destination edited every 1,000 ms
  // (as a chat's), one every 100 ms (a terminal's). Other jobs start every 20 ms for 1.1 s.
  const passes = { chat: 0, terminal: 0 };
  const relays = (['chat', 'terminal'] as const).map((kind) => {
    const events = new EventEmitter();
    const port = { platform: 'slack', showProgress: async () => undefined, deliver: async () => undefined } as unknown as PlatformPort;
    const relay = new ProgressRelay({
      queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => (kind === 'chat' ? 1_000 : 100),
      ledger: new DeliveryLedger(redis, config), instanceId: kind, prefix, log: createLogger('test', 'silent'),
      queuePositions: (...args) => (passes[kind]++, queuePositions(...args)),
    });
    relay.start();
    return { relay, events };
  });
  try {
    for (const [i, { relay }] of relays.entries()) {
      const waiting = `w${i}-${randomUUID().slice(0, 8)}`;
      await queue.add('imagine', { destination } as never, { jobId: waiting, delay: 60_000 });
      relay.track(waiting, destination, undefined);
    }
    const t0 = Date.now();
    while (Date.now() - t0 < 1_100) {
      for (const { events } of relays) events.emit('active', { jobId: `other-${randomUUID().slice(0, 8)}` });
      await sleep(20);
    }
    await sleep(50);
    expect(POSITION_REFRESH_MS).toBe(250);
    expect(passes.chat).toBeGreaterThanOrEqual(2); // at 0 and ≈ 500 ms (≈ 1,000 too, if it began in time)
    expect(passes.chat).toBeLessThanOrEqual(3); // every 250 ms would be 5
    expect(passes.terminal).toBeGreaterThanOrEqual(4); // 0, 250, 500, 750 (≈ 1,000 too): the floor, not the 50 ms half interval
    expect(passes.terminal).toBeLessThanOrEqual(5);
  } finally {
    for (const { relay } of relays) relay.stop();
  }
});
