// A retention channel's job that failed, and the worker's 'failed' listener (worker/main.ts → processor.onFinallyFailed),
// which runs just after BullMQ moved the job to failed: it looks for the job's hand-over and settles its GPU-seconds
// again (worker/after-job.ts). A retention sweep (src/jobs/retention.ts) that purged the job in between (its result
// already delivered, its deadline passed) left that listener a job with no trace: it handed a second failure over,
// and the settle wrote `{usage}:settled:<id>` again, both kept a day past the channel's TTL. Real BullMQ worker,
// the real processor and after-hand-over step, real Redis.
import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { UserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, QueueNames, type JobRequest, type SlackDestination } from '../../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue, createQueueWorker } from '../../../src/jobs/queue.ts';
import { Retention } from '../../../src/jobs/retention.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, duplicateRedis } from '../../../src/redis.ts';
import { createAfterJob } from '../../../worker/after-job.ts';
import type { ModelHost } from '../../../worker/job-clock.ts';
import { createProcessor, type ProcessOutcome } from '../../../worker/processor.ts';
import { dumpPrefix, traces } from '../../doubles/redis-dump.ts';

const prefix = `t-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-retention-failed-listener');
const log = createLogger('test', 'silent');

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

/** A model that refuses every input: the processor decides the failure (UnrecoverableError), as for a cancel. */
const refusingHost = {
  generate: async () => { throw new UserError('bad_request', 'the model refuses this input'); },
} as unknown as ModelHost;

describe("a retention job's failure and the worker's 'failed' listener", () => {
  it('a sweep between the failure and the listener purges nothing yet; the listener hands nothing over again, and after it everything goes', async () => {
    const destination: SlackDestination = { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U', retentionSeconds: 1 };
    const request: JobRequest = {
      v: CONTRACT_VERSION, id: `j${randomUUID().replaceAll('-', '').slice(0, 20)}`, submittedAt: Date.now() - 10_000, kind: 'imagine',
      prompt: 'a secret pear', destination, options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
    };
    const blobs = createBlobStore(config, redis);
    const after = createAfterJob({ config, redis, blobs, log, manifestHash: 'm' });
    const processor = createProcessor({ config, redis, blobs, host: refusingHost, log, afterHandOver: after.afterHandOver });
    const jobs = createJobsQueue(config, redis);
    const deliveries = createDeliveryQueue(config, redis, 'delivery-slack');
    const retention = new Retention(redis, config);
    const worker = createQueueWorker<JobRequest, ProcessOutcome>(config, redis, QueueNames.jobs, processor.process, { concurrency: 1 });
    let sweptInBetween: number | undefined;
    // worker/main.ts's listener, with what can happen just before it runs: the failure delivered (its delivery job
    // completed) and a retention sweep past the job's deadline
    const listened = new Promise<void>((resolve, reject) => {
      worker.on('failed', (job, err) => {
        if (!job) return;
        void (async () => {
          if ((await job.getState()) !== 'failed') return;
          const connection = duplicateRedis(redis);
          const delivering = new Worker(deliveries.name, async () => 'posted', { connection, prefix });
          await new Promise<void>((done) => delivering.on('completed', () => done()));
          await delivering.close();
          await connection.quit();
          sweptInBetween = await retention.sweep(Date.now() + 5_000);
          await processor.onFinallyFailed(job, err);
        })().then(resolve, reject);
      });
    });
    try {
      await retention.schedule(request); // deadline 9 s ago
      await jobs.add(request.kind, request, { jobId: request.id });
      await listened;
      const secondFailure = await deliveries.getJobCounts('waiting', 'delayed');
      // the listener marked the job handled (markFailureHandled): purged at the next sweep, not HAND_OVER_WAIT_MS later
      expect(await redis.exists(`${prefix}:failure-handled:${request.id}`)).toBe(1);
      expect(await retention.sweep(Date.now() + 10_000)).toBe(1); // (the sweep in between put its entry 2 s past its own now)
      // before: the settle marker and a second failure handed over by the listener (its delivery's keys), a day each
      expect(traces(await dumpPrefix(redis, prefix), [request.id, 'secret pear'])).toEqual([]);
      expect(secondFailure).toEqual({ waiting: 0, delayed: 0 });
      expect(sweptInBetween).toBe(0); // the job waits for its listener; before: 1, purged while it was still to run
    } finally {
      await worker.close();
      await retention.stop();
      await jobs.close();
      await deliveries.close();
      await processor.close();
      await after.close();
    }
  }, 30_000);
});
