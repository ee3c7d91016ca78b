// A result the platform never took (Discord answering 503 on every try, Slack's rate limit outlasting the retries):
// the user is left without it, and the admin finds why in one error line naming the job, where it was to go, and the
// platform's error with its stack; the attempts before it are warnings. Over real Redis.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { UnrecoverableError } from 'bullmq';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deliverOne, startDeliveryWorker } from '../../../../bots/core/delivery.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { createBlobStore } from '../../../../src/blobs/index.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type JobResult } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createDeliveryQueue } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { cleanup } from '../../../doubles/spine-harness.ts';

const prefix = `t-delivfail-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
let redis: Redis;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
});
afterAll(async () => {
  await cleanup(redis, prefix);
  await closeRedis(redis);
});

type Line = { level: number; msg: string; [k: string]: unknown };

/** A failed result handed to a delivery worker whose port throws `fail` on every try, `attempts` tries at most: the log lines naming it, once `lineCount` are there. */
async function undeliverable(fail: () => Error, attempts: number, lineCount: number): Promise<Line[]> {
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) });
  const port: PlatformPort = {
    platform: 'discord', showProgress: async () => undefined,
    deliver: async () => {
      throw fail();
    },
  };
  const name = `delivery-discord-${randomUUID().slice(0, 6)}`;
  const worker = startDeliveryWorker({ config, redis, blobs: createBlobStore(config, redis), ledger: new DeliveryLedger(redis, config), port, log }, name, 1);
  const queue = createDeliveryQueue(config, redis, name);
  try {
    await worker.waitUntilReady();
    const r: JobResult = {
      v: CONTRACT_VERSION, jobId: `j${randomUUID().slice(0, 8)}`, kind: 'ask', status: 'failed', timingsMs: {}, finishedAt: 1,
      destination: { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'a1' },
      error: { code: 'internal', message: 'Generation failed (ref x).', userFacing: false },
    };
    await queue.add('result', r, { jobId: r.jobId, attempts, backoff: { type: 'fixed', delay: 10 } });
    for (let i = 0; i < 500 && (await queue.getJobState(r.jobId)) !== 'failed'; i++) await new Promise((res) => setTimeout(res, 10));
    for (let i = 0; i < 100 && lines.filter((l) => l.jobId === r.jobId).length < lineCount; i++) await new Promise((res) => setTimeout(res, 10));
    return lines.filter((l) => l.jobId === r.jobId);
  } finally {
    await worker.close();
    await queue.close();
  }
}

it('retries run out: one error line with the job, its destination and the platform error; a warning per attempt before', async () => {
  const unavailable = () => Object.assign(new Error('Service Unavailable'), { name: 'DiscordAPIError[0]', status: 503 });
  expect(await undeliverable(unavailable, 2, 2)).toMatchObject([
    { level: 40, msg: 'delivery attempt failed', attempts: 1, err: 'Service Unavailable' },
    {
      level: 50, msg: 'delivery failed for good: the result was not posted', attempts: 2, kind: 'ask', status: 'failed',
      platform: 'discord', workspace: 'g1', channel: 'c1', err: 'Service Unavailable', stack: expect.stringContaining('delivery-failure-log.redis.test.ts'),
    },
  ]);
});

it('a platform error no retry can help (UnrecoverableError): failed for good at its first attempt, one error line', async () => {
  expect(await undeliverable(() => new UnrecoverableError('Missing Access'), 3, 1)).toMatchObject([
    { level: 50, msg: 'delivery failed for good: the result was not posted', attempts: 1, platform: 'discord', channel: 'c1', err: 'Missing Access' },
  ]);
});

it('an image that expired before it could be posted: the user is told so, and the admin gets a warning naming the job', async () => {
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Line) });
  const posted: JobResult[] = [];
  const port: PlatformPort = { platform: 'discord', showProgress: async () => undefined, deliver: async (r) => void posted.push(r) };
  const r: JobResult = {
    v: CONTRACT_VERSION, jobId: `j${randomUUID().slice(0, 8)}`, kind: 'imagine', status: 'succeeded', timingsMs: {}, finishedAt: 1,
    destination: { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'a1' },
    image: { blobKey: `${prefix}:blob:output:gone`, mime: 'image/png', width: 8, height: 8, altText: 'x', prompt: 'x', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } },
  };
  await deliverOne({ config, redis, blobs: createBlobStore(config, redis), ledger: new DeliveryLedger(redis, config), port, log }, r);
  expect(posted[0]?.error?.message).toBe('The image expired before it could be posted. Please try again.');
  expect(lines.filter((l) => l.jobId === r.jobId && l.level >= 40)).toMatchObject([
    { level: 40, msg: 'the image expired before it could be posted (blobs.ttlSeconds passed while no bot delivered it)', platform: 'discord', channel: 'c1' },
  ]);
});
