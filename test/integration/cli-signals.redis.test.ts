// A CLI stopped by SIGTERM (a closed terminal, `kill`, a supervisor) cancels its job like Ctrl-C does, reports it and
// removes its delivery queue (issue 15); before, SIGTERM killed it at once and left the job queued.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJobsQueue, type JobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, REDIS_URL, spawnTs, startWorker, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({ worker: { pipelineExtra: { slowStepMs: 500, failures: { '[slow]': 'slow' } } } });
let redis: Redis;
let worker: Proc;
let queue: JobsQueue;

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
  worker = await startWorker(h);
}, 180_000);

afterAll(async () => {
  await worker?.kill('SIGTERM');
  await queue?.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('CLI signals', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} while the job runs: the job is cancelled, the CLI says so and exits 130, its delivery queue is gone or expiring`, async () => {
      const before = new Set((await queue.getJobs(['active', 'wait', 'prioritized', 'delayed', 'completed', 'failed'])).map((j) => j.id));
      const cli = spawnTs('bots/cli/main.ts', h, ['imagine', `[slow] a fox ${signal}`, '--seed', '7', '--steps', '20']);
      const job = await until(async () => (await queue.getJobs(['active'])).find((j) => !before.has(j.id)), 120_000, 'the CLI job running');
      cli.child.kill(signal);
      const code = await new Promise<number | null>((resolve) => cli.child.once('exit', (c) => resolve(c)));
      expect(cli.output()).toMatch(/Cancelled\./);
      expect(code).toBe(130);
      await until(async () => ['failed', 'completed'].includes(await queue.getJobState(job.id!)), 30_000, 'the job ended');
      expect(await queue.getJobState(job.id!)).toBe('failed'); // cancelled jobs end as failed (not retried)
      // The CLI removes its delivery queue on the way out; a hand-over that lands after that (the worker's own
      // cancelled result racing the CLI's exit) re-creates keys, which carry the blobs' TTL: nothing stays for good.
      const cliQueues = await redis.keys(`${h.prefix}:delivery-cli-*`);
      for (const key of cliQueues) {
        const ttl = await redis.ttl(key);
        expect(ttl, key).toBeGreaterThan(0);
        expect(ttl, key).toBeLessThanOrEqual(h.config.blobs.ttlSeconds);
      }
    }, 240_000);
  }
});
