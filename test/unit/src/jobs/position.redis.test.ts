// queuePosition over real Redis and a real BullMQ queue: the fair scheduler's prediction for the jobs it lines up,
// BullMQ's own lists (wait before prioritized) for anything else, and no number for a job that is not waiting.
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueNames, type Destination } from '../../../../src/jobs/contract.ts';
import { HELD, queuePlaces, queuePosition, queuePositions } from '../../../../src/jobs/position.ts';
import { createFairScheduler } from '../../../../src/scheduling/fair.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-pos-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let queue: Queue;
const dest = (channelId: string): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId: 'u1', applicationId: 'app' });

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
  queue = new Queue(QueueNames.jobs, { connection: redis.duplicate(), prefix });
});

afterAll(async () => {
  await queue.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('queuePosition', () => {
  it("counts BullMQ's wait list first-in first-out, then the prioritized set by rank, 1-based", async () => {
    for (const id of ['w1', 'w2', 'w3']) await queue.add('imagine', {}, { jobId: id });
    await queue.add('imagine', {}, { jobId: 'p2', priority: 20 });
    await queue.add('imagine', {}, { jobId: 'p1', priority: 10 });
    const places = await Promise.all(['w1', 'w2', 'w3', 'p1', 'p2'].map((id) => queuePosition(redis, queue, id)));
    expect(places).toEqual([1, 2, 3, 4, 5]);
    expect(await queuePositions(redis, queue, ['w1', 'w2', 'w3', 'p1', 'p2', 'never-added'])).toEqual([1, 2, 3, 4, 5, undefined]);
    await queue.obliterate({ force: true });
  });

  it('is undefined for a job that is not waiting: unknown, or taken off the lists (running, finished)', async () => {
    await queue.add('imagine', {}, { jobId: 'gone' });
    await redis.lrem(`${prefix}:${QueueNames.jobs}:wait`, 0, 'gone'); // what a worker's move to active does
    expect(await queuePosition(redis, queue, 'gone')).toBeUndefined();
    expect(await queuePosition(redis, queue, 'never-added')).toBeUndefined();
    await queue.obliterate({ force: true });
  });

  it("gives the fair scheduler's place for jobs it lines up, and undefined while their channel is paused", async () => {
    const scheduler = createFairScheduler(redis, { queue: { prefix } }, queue);
    // Two channels, two jobs each: the scheduler alternates channels (a1, b1, a2, b2), unlike arrival order.
    for (const [id, channel] of [['a1', 'A'], ['a2', 'A'], ['b1', 'B'], ['b2', 'B']] as const) {
      await queue.add('imagine', {}, { jobId: id, ...scheduler.parkedOptions() });
      await scheduler.enqueue(id, dest(channel));
    }
    const order = await Promise.all(['a1', 'b1', 'a2', 'b2'].map((id) => queuePosition(redis, queue, id)));
    expect(order).toEqual([1, 2, 3, 4]);
    expect(await queuePositions(redis, queue, ['a1', 'b1', 'a2', 'b2'])).toEqual([1, 2, 3, 4]); // one round trip for all
    await scheduler.pause('discord:g:B');
    expect(await queuePosition(redis, queue, 'b2')).toBeUndefined();
    expect(await queuePosition(redis, queue, 'a2')).toBeDefined();
    expect(await queuePositions(redis, queue, ['b2', 'a2'])).toEqual([undefined, await queuePosition(redis, queue, 'a2')]);
    // what the progress relay shows: a held job says so (before, it kept showing its last place), the others their place
    expect(await queuePlaces(redis, queue, ['b2', 'a2', 'never-added'])).toEqual([HELD, await queuePosition(redis, queue, 'a2'), undefined]);
  });
});
