// A channel's retention TTL must delete that channel's jobs and nobody else's. BullMQ applies the keep options of the
// job that finishes to the whole completed (or failed) set it joins (moveToFinished's removeJobsByMaxAge), so a job
// added with `removeOnComplete: { age: TTL }` deleted every finished job older than the TTL, of every channel, when it
// finished. Here the real core queues the jobs (bots/core/submit.ts) and the real hand-over adds the deliveries
// (src/cache/fanout.ts DeliveryQueues, as the worker's does), on real Redis and BullMQ; plain BullMQ workers finish
// them. An open channel's job and result, completed and failed, finished a minute ago; then a channel with a 1 s TTL
// has a job complete and one fail, in both queues. The open channel's four records must still be there, and the
// retention sweep still purges the TTL channel's at their deadline.
import { UnrecoverableError, Worker } from 'bullmq';
import { describe, expect, it, vi } from 'vitest';
import type { Invocation } from '../../../../bots/core/port.ts';
import { DeliveryQueues } from '../../../../src/cache/fanout.ts';
import { CONTRACT_VERSION, type Destination, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, type DeliveryQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { HAND_OVER_WAIT_MS, Retention } from '../../../../src/jobs/retention.ts';
import { duplicateRedis } from '../../../../src/redis.ts';
import { coreDest, coreHarness, invocation } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-bystand');
const TTL_S = 1;

/**
 * Let a plain BullMQ worker take the one job waiting in `queue` and complete it, or fail it for good. A job that fair
 * scheduling holds (delayed: its turn comes when the one before has started, which only the real worker says) is
 * released first.
 */
async function finish(queue: JobsQueue | DeliveryQueue, jobId: string, how: 'completed' | 'failed'): Promise<void> {
  const job = (await queue.getJob(jobId))!;
  if ((await job.getState()) === 'delayed') await job.promote();
  const connection = duplicateRedis(h.redis);
  const worker = new Worker(queue.name, async () => {
    if (how === 'failed') throw new UnrecoverableError('refused');
    return 'done';
  }, { connection, prefix: queue.opts.prefix });
  try {
    await vi.waitFor(async () => expect(await (await queue.getJob(jobId))?.getState()).toBe(how), { timeout: 10_000 });
  } finally {
    await worker.close();
    await connection.quit();
  }
}

/** The job's entry in its finished set dated `ms` earlier: it finished that long ago. */
async function finishedAgo(queue: JobsQueue | DeliveryQueue, jobId: string, state: 'completed' | 'failed', ms: number): Promise<void> {
  const set = queue.keys[state]!;
  const at = Number(await h.redis.zscore(set, jobId));
  await h.redis.zadd(set, 'XX', at - ms, jobId);
}

describe("a retention channel's jobs finishing", () => {
  it("leave other channels' finished jobs and results (completed and failed, both queues) alone, and are purged at their deadline", async () => {
    const c = h.core();
    const deliveries = new DeliveryQueues(c.config, h.redis);
    const delivery = createDeliveryQueue(c.config, h.redis, 'delivery-discord');
    const secret = (user: string) => coreDest(user, 'csecret');
    await c.settings.set('channel', secret('u9'), { retentionSeconds: TTL_S });
    const imagine = async (destination: Destination): Promise<string> => {
      const reply = await c.handle(invocation({ command: 'imagine', prompt: 'a pear' }, { destination } as Partial<Invocation>));
      return (reply as { jobId: string }).jobId;
    };
    const result = async (jobId: string): Promise<JobResult> => {
      const { destination } = (await c.queue.getJob(jobId))!.data;
      return { v: CONTRACT_VERSION, jobId, kind: 'imagine', destination, status: 'cancelled', timingsMs: {}, finishedAt: Date.now() };
    };
    /** Queue a job, finish it `how`, hand its result over and finish that delivery `how` too. */
    const run = async (destination: Destination, how: 'completed' | 'failed'): Promise<string> => {
      const id = await imagine(destination);
      await finish(c.queue, id, how);
      await deliveries.handOver(await result(id));
      await finish(delivery, id, how);
      return id;
    };
    try {
      // the open channel's: one succeeded, one failed, a minute ago
      const done = await run(coreDest('u1', 'copen'), 'completed');
      const refused = await run(coreDest('u2', 'copen'), 'failed');
      for (const [id, state] of [[done, 'completed'], [refused, 'failed']] as const) {
        await finishedAgo(c.queue, id, state, 60_000);
        await finishedAgo(delivery, id, state, 60_000);
      }
      // the TTL channel's: one succeeds, one fails, now
      const kept = await run(secret('u3'), 'completed');
      const lost = await run(secret('u4'), 'failed');
      expect((await c.queue.getJob(kept))!.data.destination).toMatchObject({ retentionSeconds: TTL_S });

      // before: all four undefined, deleted by the TTL channel's jobs finishing (their removeOn* age, 1 s, applied to every job)
      const states = async (id: string) => [await (await c.queue.getJob(id))?.getState(), await (await delivery.getJob(id))?.getState()];
      expect({ done: await states(done), refused: await states(refused) }).toEqual({ done: ['completed', 'completed'], refused: ['failed', 'failed'] });

      // the TTL channel's own are deleted at their deadline (a failed one a minute after a sweep found it failed), and only they
      const retention = new Retention(h.redis, c.config);
      try {
        const deadline = Date.now() + TTL_S * 1000;
        expect(await retention.sweep(deadline)).toBe(1);
        expect(await retention.sweep(deadline + HAND_OVER_WAIT_MS)).toBe(1);
      } finally {
        await retention.stop();
      }
      for (const id of [kept, lost]) expect(await states(id)).toEqual([undefined, undefined]);
      expect(await states(done)).toEqual(['completed', 'completed']);
      expect(await states(refused)).toEqual(['failed', 'failed']);
    } finally {
      await deliveries.close();
      await delivery.close();
    }
  }, 60_000);
});
