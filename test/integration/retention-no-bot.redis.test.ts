// A channel's retention TTL holds while no bot runs (every bot stopped, an upgrade): the worker processes sweep too.
// A job of a channel with a 1 s TTL is queued by a core that never starts (no sweep of its own, as a bot that has
// stopped), run by a real worker process, and its result taken off the delivery queue as a bot does before it stops.
// The job and its result must then be deleted by the worker's sweep. Before 2026-12-07 only bots swept (the jobs'
// `removeOn*: { age: TTL }` stood in for it, and deleted every channel's finished jobs: retention-bystanders tests).
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import { createDeliveryQueue, type DeliveryQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, duplicateRedis, type Redis } from '../../src/redis.ts';
import { coreDest, invocation, recordingPort, SILENT_LOG } from '../doubles/core-harness.ts';
import { cleanup, makeHarness, REDIS_URL, startWorker, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({ queue: { retentionSweepMs: 100 }, worker: { pipelineExtra: { stepDelayMs: 5, maxSteps: 2 } } });
let redis: Redis;
let worker: Proc | undefined;
let core: Core;
let delivery: DeliveryQueue;

beforeAll(async () => {
  redis = createRedis(REDIS_URL, 'test-retention-no-bot');
  core = createCore({ config: h.config, secrets: { REDIS_URL }, ports: [recordingPort()], redis, log: SILENT_LOG });
  delivery = createDeliveryQueue(h.config, redis, 'delivery-discord');
  worker = await startWorker(h);
}, 150_000);
afterAll(async () => {
  await stopProcess(worker);
  await delivery?.close();
  await core?.stop();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
}, 30_000);

describe('retention TTL with no bot running', () => {
  it("a finished and delivered job of a TTL channel is deleted by the workers' sweep", async () => {
    const secret = coreDest('u1', 'csecret');
    await core.settings.set('channel', secret, { retentionSeconds: 1 });
    const reply = await core.handle(invocation({ command: 'imagine', prompt: 'a pear' }, { destination: secret }));
    const jobId = (reply as { jobId: string }).jobId;
    await until(async () => (await delivery.getJob(jobId)) !== undefined, 30_000, 'the result handed over');
    expect((await delivery.getJob(jobId))!.data.destination).toMatchObject({ retentionSeconds: 1 });
    // delivered, as a bot does before it stops (its ledger and post are not what this is about)
    const connection = duplicateRedis(redis);
    const taker = new Worker(delivery.name, async () => 'posted', { connection, prefix: h.prefix });
    try {
      await until(async () => (await (await delivery.getJob(jobId))?.getState()) === 'completed' || (await delivery.getJob(jobId)) === undefined, 10_000, 'the delivery to complete');
    } finally {
      await taker.close();
      await connection.quit();
    }
    // before: timed out, nothing swept with no bot running
    // (its entry in the sweep's set goes last, after the job and its result: waited for too, not raced)
    await until(
      async () => (await core.queue.getJob(jobId)) === undefined && (await delivery.getJob(jobId)) === undefined && (await redis.zcard(`${h.prefix}:retention`)) === 0,
      20_000,
      "the worker's sweep to delete the job, its result and its entry",
    );
    await worker!.waitFor('retention TTL reached: job purged', 5_000); // the worker's own sweep did it
  }, 60_000);
});
