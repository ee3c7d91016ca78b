// /blip3o-admin usage (bots/core/commands/usage.ts) on a deployment that keeps fewer than 7 days of usage
// (usage.retainDays): the report with no days given covers what is kept, rather than refusing a number the admin never typed.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Invocation } from '../../../../../bots/core/port.ts';
import { usageCommand } from '../../../../../bots/core/commands/usage.ts';
import { loadConfig } from '../../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../../src/jobs/contract.ts';
import { createJobsQueue, type JobsQueue } from '../../../../../src/jobs/queue.ts';
import { createGate, type Gate } from '../../../../../src/limits/gate.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../../src/redis.ts';

const prefix = `t-usage-days-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, usage: { retainDays: 3 } } });
let redis: Redis;
let queue: JobsQueue;
let gate: Gate;

const d: Destination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'admin', applicationId: 'app' };
const inv = (days?: number): Invocation => ({ input: { command: 'usage', ...(days !== undefined ? { days } : {}) }, destination: d, dedupeKey: randomUUID(), isAdmin: true });

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-usage-days');
  queue = createJobsQueue(config, redis);
  gate = createGate(redis, config, queue);
});
afterAll(async () => {
  gate.stop();
  await queue.close();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('/blip3o-admin usage with usage.retainDays below 7', () => {
  it('reports the days kept when the admin gives none, and still refuses more days than are kept when asked', async () => {
    const request: JobRequest = { v: CONTRACT_VERSION, id: 'r1', destination: d, submittedAt: 1, kind: 'imagine', prompt: 'p', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
    await gate.usage.settle(request, { status: 'succeeded', timingsMs: { decoding: 12_000 } }, 0);
    const reply = await usageCommand(inv(), { config, gate });
    expect(reply.kind === 'text' && reply.text.split('\n')[0]).toBe('GPU usage in this server over the last 3 days (UTC, today included): 12 GPU-seconds.');
    await expect(usageCommand(inv(7), { config, gate })).rejects.toThrow('days must be a whole number from 1 to 3.');
  });
});
