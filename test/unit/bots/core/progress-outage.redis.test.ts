// The progress relay while Redis is down (a redis-server of the test's own, SIGKILLed and started again from its
// append-only file, so the job and its lease are there after): the bot's connection (src/redis.ts, commands held until
// it is back) holds each edit's ledger script meanwhile. What the user sees after Redis returns: the newest step
// received, not one before it; no edit per held script; and nothing over the result once its delivery has begun.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobProgress } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger, SHOWING_SLOT_MS } from '../../../../src/jobs/ledger.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { startRedisServer, type RedisProcess } from '../../../doubles/redis-processes.ts';
import { until } from '../../../doubles/spine-harness.ts';

const prefix = `t-outage-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let server: RedisProcess;
let redis: Redis;
let queue: JobsQueue;

beforeAll(async () => {
  server = await startRedisServer('appendonly yes\nappendfsync always\n');
  redis = createRedis(`redis://127.0.0.1:${server.port}`, 'test-outage');
  queue = createJobsQueue(config, redis);
}, 30_000);
afterAll(async () => {
  await queue.close();
  await closeRedis(redis);
  await server.kill();
}, 30_000);

it('Redis down while an edit waits on it and a newer step is held: once it is back the newest step shows, and nothing lands over the result', async () => {
  const events = new EventEmitter();
  const shown: number[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void shown.push(p.step), deliver: async () => undefined } as unknown as PlatformPort;
  const ledger = new DeliveryLedger(redis, config);
  let tries = 0;
  const leased = ledger.whileLeasedAndNotDelivered.bind(ledger);
  ledger.whileLeasedAndNotDelivered = async (...args) => (tries++, leased(...args));
  const relay = new ProgressRelay({ queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20, ledger, instanceId: 'bot-a', prefix, log: createLogger('test', 'silent') });
  relay.start();
  const jobId = `job-${randomUUID().slice(0, 8)}`;
  await redis.hset(queue.toKey(jobId), 'name', 'generate'); // the job, not finished: edits are allowed
  relay.track(jobId, destination, 0);
  const progress = (step: number) => events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 10 } });
  try {
    progress(1);
    await until(async () => shown.includes(1) || undefined, 5_000, 'step 1');
    await server.crash();
    await sleep(50);
    progress(2); // its edit's ledger script waits for Redis
    await sleep(50);
    progress(3); // held behind the edit in flight
    await sleep(SHOWING_SLOT_MS + 1_000); // the edit in flight is given up on: the held one is tried (its script waits too)
    server = await server.restart();
    await until(async () => (shown.length > 1 ? true : undefined), 15_000, 'an edit after Redis came back');
    await sleep(500);
    expect(shown.at(-1)).toBe(3);
    expect(shown.filter((s) => s === 3)).toHaveLength(1);

    await ledger.beginDelivery(jobId); // the result's delivery begins: nothing after this covers it
    const triesBefore = tries;
    progress(4);
    await sleep(300);
    expect(tries).toBeGreaterThan(triesBefore);
    expect(shown).not.toContain(4);
  } finally {
    await relay.stop();
  }
}, 60_000);
