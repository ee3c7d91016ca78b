// The progress relay's queue-position passes (bots/core/progress.ts, onActive and pushPositions), with the positions
// played by the test (the relay's queuePositions dependency) and the edits going through the real ledger on real
// Redis: which jobs a pass asks about, which edits it makes, and when passes begin (at least POSITION_REFRESH_MS, five
// times the last pass's duration and half the shortest edit interval of the waiting jobs apart; a start during a pass
// or its wait gets one more pass; none after the starts stop).
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { POSITION_REFRESH_MS, ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination, JobProgress } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-passes-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const chat: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const terminal: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C-terminal', userId: 'U1' };
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

/**
 * A relay whose passes answer `answer(jobIds)` after `passMs`; records each pass (when it began, the jobs asked) and
 * each edit. Edit intervals: `chat` 1,000 ms, `terminal` 100 ms.
 */
function relayWith(answer: (jobIds: readonly string[]) => (number | undefined)[], passMs = 0) {
  const events = new EventEmitter();
  const edits: JobProgress[] = [];
  const passes: { at: number; jobIds: string[] }[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void edits.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port,
    intervalMs: (d) => (d.channelId === terminal.channelId ? 100 : 1_000),
    ledger: new DeliveryLedger(redis, config), instanceId: `i-${randomUUID().slice(0, 6)}`, prefix, log: createLogger('test', 'silent'),
    queuePositions: async (_r, _q, jobIds) => {
      passes.push({ at: Date.now(), jobIds: [...jobIds] });
      await sleep(passMs);
      return answer(jobIds);
    },
  });
  relay.start();
  const start = (jobId = `other-${randomUUID().slice(0, 8)}`) => events.emit('active', { jobId });
  return { relay, edits, passes, start };
}

const newJob = () => `j-${randomUUID().slice(0, 8)}`;

it('asks about the waiting jobs only, and edits a job when its position changed, with that position', async () => {
  const [moved, same, unknown, started] = [newJob(), newJob(), newJob(), newJob()];
  const answers: Record<string, number | undefined> = { [moved]: 2, [same]: 4, [unknown]: undefined, [started]: 1 };
  const r = relayWith((ids) => ids.map((id) => answers[id]));
  try {
    r.relay.track(moved, chat, 3);
    r.relay.track(same, chat, 4);
    r.relay.track(unknown, chat, 5);
    r.relay.track(started, chat, 6);
    r.start(started); // it starts: no longer waiting, and this start is a pass
    await sleep(100);
    expect(r.passes.map((p) => p.jobIds)).toEqual([[moved, same, unknown]]);
    expect(r.edits.map((e) => [e.jobId, e.stage, e.queuePosition])).toEqual([[moved, 'queued', 2]]);

    answers[moved] = 1;
    r.start(); // ≈ 100 ms after the first pass: the next begins ≈ 500 ms after it (half the chat's 1,000 ms)
    await sleep(500);
    expect(r.passes).toHaveLength(2);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[moved, 2]]); // 1 waits for the 1,000 ms edit interval
    await sleep(600);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[moved, 2], [moved, 1]]);
  } finally {
    r.relay.stop();
  }
});

it('makes no pass while nothing waits, and passes again once a job waits', async () => {
  const r = relayWith((ids) => ids.map(() => 7));
  try {
    r.start();
    await sleep(50);
    expect(r.passes).toEqual([]);
    const waiting = newJob();
    r.relay.track(waiting, terminal, undefined);
    r.start();
    await sleep(POSITION_REFRESH_MS + 50); // the pass is not held back by the one that never ran
    expect(r.passes.map((p) => p.jobIds)).toEqual([[waiting]]);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[waiting, 7]]);
  } finally {
    r.relay.stop();
  }
});

it('gives a start during a pass one more pass, after the spacing, and none once the starts stop', async () => {
  const r = relayWith((ids) => ids.map(() => 3), 30);
  try {
    r.relay.track(newJob(), terminal, 3);
    r.start();
    await sleep(10);
    r.start(); // during the first pass
    await sleep(800);
    expect(r.passes).toHaveLength(2);
    const gap = r.passes[1]!.at - r.passes[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(POSITION_REFRESH_MS - 5);
    expect(gap).toBeLessThan(POSITION_REFRESH_MS + 150);
  } finally {
    r.relay.stop();
  }
});

it('spaces passes by five times the last one took, when that is longer', async () => {
  const r = relayWith((ids) => ids.map(() => 3), 120);
  try {
    r.relay.track(newJob(), terminal, 3);
    r.start();
    await sleep(200); // the first pass (120 ms) is over
    r.start();
    await sleep(800);
    expect(r.passes).toHaveLength(2);
    expect(r.passes[1]!.at - r.passes[0]!.at).toBeGreaterThanOrEqual(5 * 120 - 5);
  } finally {
    r.relay.stop();
  }
});

it('spaces passes by half the shortest edit interval among the waiting jobs', async () => {
  for (const [destinations, least, most] of [
    [[chat], 500, 700], // 1,000 ms: 500 apart
    [[chat, terminal], POSITION_REFRESH_MS, 450], // the terminal's 100 ms: the floor
  ] as const) {
    const r = relayWith((ids) => ids.map(() => 3));
    try {
      for (const d of destinations) r.relay.track(newJob(), d, 3);
      r.start();
      await sleep(20);
      r.start();
      await sleep(most + 200);
      expect(r.passes).toHaveLength(2);
      const gap = r.passes[1]!.at - r.passes[0]!.at;
      expect(gap).toBeGreaterThanOrEqual(least - 5);
      expect(gap).toBeLessThan(most);
    } finally {
      r.relay.stop();
    }
  }
});
