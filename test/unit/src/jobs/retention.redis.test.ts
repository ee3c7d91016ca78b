// The retention sweeper (src/jobs/retention.ts) on real Redis: a job past its channel's TTL is not touched while it
// waits (its answer would be lost), is purged once finished (job, delivery, its event stream entries, per-job keys),
// and a request without a TTL is never scheduled.
import { randomUUID } from 'node:crypto';
import { Job, UnrecoverableError, Worker } from 'bullmq';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue } from '../../../../src/jobs/queue.ts';
import { HAND_OVER_WAIT_MS, markFailureHandled, Retention, jobKeys } from '../../../../src/jobs/retention.ts';
import type { Logger } from '../../../../src/log.ts';
import { closeRedis, createRedis, duplicateRedis } from '../../../../src/redis.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ overrides: { queue: { prefix } }, env: {} });
const redis = createRedis(REDIS_URL, 'test-retention-unit');

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

function request(retentionSeconds?: number): JobRequest {
  const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  return {
    v: CONTRACT_VERSION, id, submittedAt: Date.now() - 10_000, kind: 'imagine', prompt: 'a secret pear',
    destination: { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U', ...(retentionSeconds ? { retentionSeconds } : {}) },
    options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
  };
}

/** Let a BullMQ worker complete the one waiting job of `queue`. */
async function runOnce(queue: string): Promise<void> {
  const connection = duplicateRedis(redis);
  const worker = new Worker(queue, async () => 'done', { connection, prefix });
  await new Promise<void>((resolve) => worker.on('completed', () => resolve()));
  await worker.close();
  await connection.quit();
}

/** BullMQ fails the waiting job `jobId` of `queue` on its own, as the stall check fails one whose workers died too often. */
async function failOnItsOwn(queue: ReturnType<typeof createJobsQueue>, jobId: string): Promise<void> {
  const connection = duplicateRedis(redis);
  const worker = new Worker(queue.name, async () => { throw new UnrecoverableError('job stalled more than allowable limit'); }, { connection, prefix });
  await vi.waitFor(async () => expect(await (await queue.getJob(jobId))?.getState()).toBe('failed'), { timeout: 10_000 });
  await worker.close();
  await connection.quit();
}

/**
 * `body` with a retention channel's job (TTL 1 s: its deadline 9 s ago) that BullMQ failed on its own and no listener
 * marked; afterwards nothing of it is left to the next test (its entry, job, records), and the sweeper is stopped.
 */
async function withFailedJob(body: (it: { retention: Retention; jobs: ReturnType<typeof createJobsQueue>; r: JobRequest }) => Promise<void>, retentionConfig: Pick<typeof config, 'queue'> = config): Promise<void> {
  const retention = new Retention(redis, retentionConfig);
  const jobs = createJobsQueue(config, redis);
  const r = request(1);
  try {
    await retention.schedule(r);
    await jobs.add('imagine', r, { jobId: r.id, attempts: 1 });
    await failOnItsOwn(jobs, r.id);
    await body({ retention, jobs, r });
  } finally {
    await (await jobs.getJob(r.id))?.remove();
    await redis.del(`${prefix}:retention`, `${prefix}:failed-seen:${r.id}`, `${prefix}:failure-handled:${r.id}`);
    await retention.stop();
    await jobs.close();
  }
}

describe('Retention', () => {
  it('waits for a job that has not run, then purges job, delivery, event entries and per-job keys once it finished', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-slack');
    const r = request(1); // deadline 9 s in the past
    try {
      await retention.schedule(r);
      await jobs.add('imagine', r, { jobId: r.id });
      expect(await retention.sweep()).toBe(0); // waiting: left alone, tried again later
      expect(await jobs.getJob(r.id)).toBeDefined();

      await runOnce(jobs.name);
      const result: JobResult = { v: CONTRACT_VERSION, jobId: r.id, kind: 'imagine', destination: r.destination, status: 'cancelled', timingsMs: {}, finishedAt: Date.now() };
      await delivery.add('result', result, { jobId: r.id });
      await redis.set(jobKeys(prefix, r.id)[0]!, '1');
      expect(await retention.sweep()).toBe(0); // the delivery is still waiting

      await (await delivery.getJob(r.id))!.remove(); // as if delivered and removed
      await delivery.add('result', result, { jobId: r.id }); // …and a completed copy left behind
      await runOnce(delivery.name);

      expect(await retention.sweep(Date.now() + 5_000)).toBe(1);
      expect(await jobs.getJob(r.id)).toBeUndefined();
      expect(await delivery.getJob(r.id)).toBeUndefined();
      expect(await redis.exists(...jobKeys(prefix, r.id))).toBe(0);
      for (const stream of [jobs.keys.events!, delivery.keys.events!]) {
        const entries = (await redis.xrange(stream, '-', '+')) as [string, string[]][];
        expect(entries.filter(([, f]) => f.includes(r.id))).toEqual([]);
      }
      expect(await redis.zcard(`${prefix}:retention`)).toBe(0);
    } finally {
      await retention.stop();
      await jobs.close();
      await delivery.close();
    }
  }, 30_000);

  it('a job that finishes while the sweep looks at it is purged only once its delivery is: its result never outlives the purge', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-slack');
    const r = request(1);
    const getState = Job.prototype.getState;
    try {
      await retention.schedule(r);
      await jobs.add('imagine', r, { jobId: r.id });
      const result: JobResult = { v: CONTRACT_VERSION, jobId: r.id, kind: 'imagine', destination: r.destination, status: 'cancelled', timingsMs: {}, finishedAt: Date.now() };
      // a worker on another host hands the result over and completes the job the moment the sweep reads the job's state
      let first = true;
      Job.prototype.getState = async function (this: Job) {
        if (first && this.id === r.id && this.queueName === jobs.name) {
          first = false;
          await delivery.add('result', result, { jobId: r.id });
          await runOnce(jobs.name);
        }
        return getState.call(this);
      };
      expect(await retention.sweep()).toBe(0); // before: 1, the job purged and its result (waiting for delivery) left behind
      Job.prototype.getState = getState;
      expect(await delivery.getJob(r.id)).toBeDefined();
      expect(await redis.zcard(`${prefix}:retention`)).toBe(1); // tried again…
      await runOnce(delivery.name);
      expect(await retention.sweep(Date.now() + 5_000)).toBe(1); // …and purged once delivered
      expect([await jobs.getJob(r.id), await delivery.getJob(r.id)]).toEqual([undefined, undefined]);
    } finally {
      Job.prototype.getState = getState;
      await retention.stop();
      await jobs.close();
      await delivery.close();
    }
  }, 30_000);

  it('a job that failed with no result handed over (its worker died too often): purged with the failure its worker hands over after', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-slack');
    const r = request(1); // deadline 9 s in the past
    try {
      await retention.schedule(r);
      await jobs.add('imagine', r, { jobId: r.id, attempts: 1 });
      // BullMQ fails it on its own (as the stall check fails a job whose workers died more than maxStalledCount times)
      await failOnItsOwn(jobs, r.id);
      expect(await retention.sweep()).toBe(0); // before: 1, and the failure handed over next stayed, naming the job and its user
      // the worker's 'failed' listener hands the failure over (worker/processor.ts onFinallyFailed), then it is delivered
      const failure: JobResult = { v: CONTRACT_VERSION, jobId: r.id, kind: 'imagine', destination: r.destination, status: 'failed', error: { code: 'internal', message: `Generation failed (ref ${r.id})`, userFacing: false }, timingsMs: {}, finishedAt: Date.now() };
      await delivery.add('result', failure, { jobId: r.id });
      await runOnce(delivery.name);
      // a failed job waits for its worker's 'failed' listener, delivered or not (test/unit/worker/retention-failed-listener.redis.test.ts)
      const failedAt = (await jobs.getJob(r.id))!.finishedOn!;
      expect(await retention.sweep(failedAt + HAND_OVER_WAIT_MS - 1)).toBe(0);
      expect(await retention.sweep(failedAt + HAND_OVER_WAIT_MS + 2_000)).toBe(1);
      expect([await jobs.getJob(r.id), await delivery.getJob(r.id)]).toEqual([undefined, undefined]);
      const entries = (await redis.xrange(delivery.keys.events!, '-', '+')) as [string, string[]][];
      expect(entries.filter(([, f]) => f.includes(r.id))).toEqual([]);
    } finally {
      await retention.stop();
      await jobs.close();
      await delivery.close();
    }
  }, 30_000);

  it('a failed job whose result never comes is purged HAND_OVER_WAIT_MS after a sweep found it failed, not a millisecond before', () =>
    withFailedJob(async ({ retention, jobs, r }) => {
      // from when a sweep found it failed, not its finishedOn: that is the clock of the host that failed it
      // (test/unit/src/jobs/retention-clock-skew.redis.test.ts)
      const seenAt = (await jobs.getJob(r.id))!.finishedOn! + 5_000;
      expect(await retention.sweep(seenAt)).toBe(0);
      await retention.schedule(r); // due again at once (the sweep above put it RETRY_MS later)
      expect(await retention.sweep(seenAt + HAND_OVER_WAIT_MS - 1)).toBe(0);
      await retention.schedule(r);
      expect(await retention.sweep(seenAt + HAND_OVER_WAIT_MS)).toBe(1);
      expect(await jobs.getJob(r.id)).toBeUndefined();
    }), 30_000);

  it("a failed job is purged at the first sweep once its worker's 'failed' listener has run (its mark), not a minute later", () =>
    withFailedJob(async ({ retention, jobs, r }) => {
      const [later, none] = [request(3600), request()];
      const mark = (id: string) => `${prefix}:failure-handled:${id}`;
      const now = Date.now();
      expect(await retention.sweep(now)).toBe(0); // the listener has not run: wait for it
      await markFailureHandled(redis, prefix, r, now); // worker/processor.ts finallyFailed, last thing
      await retention.schedule(r); // due again at once (the sweep above put it RETRY_MS later)
      expect(await retention.sweep(now + 1)).toBe(1); // before 2026-12-08: a minute after the first sweep, whatever the listener did
      expect([await jobs.getJob(r.id), await redis.exists(mark(r.id), `${prefix}:failed-seen:${r.id}`)]).toEqual([undefined, 0]);
      // The mark lives until HAND_OVER_WAIT_MS past the deadline (then the wait purges the job anyway), and is written
      // only for a channel with a TTL (nothing would delete it otherwise).
      await markFailureHandled(redis, prefix, later, now);
      const deadline = later.submittedAt + 3_600_000;
      expect(await redis.pttl(mark(later.id))).toBeGreaterThan(deadline - now + HAND_OVER_WAIT_MS - 5_000);
      expect(await redis.pttl(mark(later.id))).toBeLessThanOrEqual(deadline - now + HAND_OVER_WAIT_MS);
      await markFailureHandled(redis, prefix, r, now);
      expect(await redis.pttl(mark(r.id))).toBeGreaterThan(HAND_OVER_WAIT_MS - 5_000);
      expect(await redis.pttl(mark(r.id))).toBeLessThanOrEqual(HAND_OVER_WAIT_MS);
      await markFailureHandled(redis, prefix, none, now);
      expect(await redis.exists(mark(none.id))).toBe(0);
      await redis.del(mark(later.id));
    }), 30_000);

  it('the record of when a sweep first found a job failed outlives two sweeps, however far apart queue.retentionSweepMs puts them', () => {
    // Before 2026-12-08 it lived 2 × HAND_OVER_WAIT_MS alone: with sweeps 5 minutes apart each found it gone and began
    // the wait again, and a failed job whose listener never marked it was never purged.
    const sweepMs = 5 * 60_000;
    return withFailedJob(async ({ retention, r }) => {
      expect(await retention.sweep()).toBe(0);
      expect(await redis.pttl(`${prefix}:failed-seen:${r.id}`)).toBeGreaterThan(2 * sweepMs + HAND_OVER_WAIT_MS);
    }, { queue: { ...config.queue, retentionSweepMs: sweepMs } });
  }, 30_000);

  it('a sweep that read the failed job just before another process purged it leaves no failed-seen record behind', () =>
    withFailedJob(async ({ retention, jobs, r }) => {
      // What this sweep read (failed, no mark yet) is stale: the other process, finding the listener's mark, purged it
      const stale = (await jobs.getJob(r.id))!;
      await stale.remove();
      vi.spyOn(stale, 'getState').mockResolvedValue('failed');
      (retention as unknown as { jobs: { getJob: () => Promise<Job> } }).jobs.getJob = async () => stale;
      expect(await retention.sweep()).toBe(0);
      // before: the record stayed, naming the job, two waits past its purge (redis-keys.redis.test.ts saw it)
      expect(await redis.exists(`${prefix}:failed-seen:${r.id}`)).toBe(0);
    }), 30_000);

  it('a job completed with its result delivered and removed waits HAND_OVER_WAIT_MS from its end; its images go with it', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const delivery = createDeliveryQueue(config, redis, 'delivery-slack');
    const blob = () => `${prefix}:blob:${randomUUID()}`;
    const [asked, gallery] = [{ ...request(1), imageKey: blob() }, request(1)];
    const made = [blob(), blob()];
    try {
      for (const key of [asked.imageKey, ...made]) await redis.set(key, 'png');
      for (const r of [asked, gallery]) {
        await retention.schedule(r);
        await jobs.add('imagine', r, { jobId: r.id });
        await runOnce(jobs.name); // completed; its result handed over, delivered and removed, as a bot does
      }
      const finishedAt = (await jobs.getJob(asked.id))!.finishedOn!;
      expect(await retention.sweep(finishedAt + HAND_OVER_WAIT_MS - 1)).toBe(0);
      await retention.schedule(asked); // due again at once (the sweep above put it RETRY_MS later)
      expect(await retention.sweep(finishedAt + HAND_OVER_WAIT_MS)).toBe(1);
      expect(await redis.exists(asked.imageKey)).toBe(0); // the image asked about
      // A completed copy of a result, a gallery: every image made goes with the job
      const result = { v: CONTRACT_VERSION, jobId: gallery.id, kind: 'imagine', destination: gallery.destination, status: 'succeeded', images: made.map((blobKey) => ({ blobKey })), timingsMs: {}, finishedAt };
      await delivery.add('result', result as unknown as JobResult, { jobId: gallery.id });
      await runOnce(delivery.name);
      await retention.schedule(gallery);
      expect(await retention.sweep()).toBe(1);
      expect(await redis.exists(...made)).toBe(0);
    } finally {
      await redis.del(`${prefix}:retention`, asked.imageKey, ...made);
      await retention.stop();
      await jobs.close();
      await delivery.close();
    }
  }, 30_000);

  it('is due at submission + TTL, not a millisecond before; an unfinished job is tried again 2 s later', async () => {
    const retention = new Retention(redis, config);
    const jobs = createJobsQueue(config, redis);
    const r = request(60);
    const deadline = r.submittedAt + 60_000;
    try {
      await retention.schedule(r);
      const member = (await redis.zrange(`${prefix}:retention`, '0', '-1'))[0]!;
      expect(Number(await redis.zscore(`${prefix}:retention`, member))).toBe(deadline);
      expect(await retention.sweep(deadline - 1)).toBe(0);
      await jobs.add('imagine', r, { jobId: r.id }); // waiting at its deadline
      expect(await retention.sweep(deadline)).toBe(0);
      expect(Number(await redis.zscore(`${prefix}:retention`, member))).toBe(deadline + 2_000);
      await (await jobs.getJob(r.id))!.remove();
      expect(await retention.sweep(deadline + 2_000)).toBe(1);
      expect(await redis.zcard(`${prefix}:retention`)).toBe(0);
    } finally {
      await retention.stop();
      await jobs.close();
    }
  });

  it("deletes the job's own per-job keys and event entries, and nobody else's; a failed job is finished too", async () => {
    const log = { info: vi.fn(), warn: vi.fn() };
    const retention = new Retention(redis, config, log as unknown as Logger);
    const jobs = createJobsQueue(config, redis);
    const [r, other] = [request(1), request(1)];
    // the keys other modules name after a job (ledger, cancel, progress, submit, Slack port, usage), spelled out here
    const names = ['delivered', 'delivering', 'showing', 'delivery-claim', 'cancelled', 'progress-owner', 'served', 'slack:finished', '{usage}:settled', 'failed-seen', 'failure-handled'];
    const keysOf = (id: string) => names.map((n) => `${prefix}:${n}:${id}`);
    expect(jobKeys(prefix, r.id)).toEqual(keysOf(r.id));
    try {
      for (const id of [r.id, other.id]) for (const key of keysOf(id)) await redis.set(key, '1');
      for (const job of [r, other]) await jobs.add('imagine', job, { jobId: job.id, attempts: 1 });
      const connection = duplicateRedis(redis);
      const worker = new Worker(jobs.name, async () => { throw new Error('no'); }, { connection, prefix });
      await vi.waitFor(async () => expect(await jobs.getFailedCount()).toBe(2), { timeout: 10_000 });
      await worker.close();
      await connection.quit();
      await retention.schedule(r);
      // failed: finished, and its worker's 'failed' listener has run (its failure-handled key above)
      expect(await retention.sweep()).toBe(1);
      expect(await redis.exists(...keysOf(r.id))).toBe(0);
      expect(await redis.exists(...keysOf(other.id))).toBe(names.length);
      const entries = (await redis.xrange(jobs.keys.events!, '-', '+')) as [string, string[]][];
      expect(entries.filter(([, f]) => f.includes(r.id))).toEqual([]);
      expect(entries.filter(([, f]) => f.includes(other.id)).length).toBeGreaterThan(0);
      expect(await jobs.getJob(other.id)).toBeDefined();
      expect(log.info).toHaveBeenCalledWith({ jobId: r.id }, 'retention TTL reached: job purged');
    } finally {
      await retention.stop();
      await jobs.close();
    }
  }, 30_000);

  it('sweeps on its own every queue.retentionSweepMs once started; sweeps asked for at once share one run', async () => {
    const fast = loadConfig({ overrides: { queue: { prefix, retentionSweepMs: 50 } }, env: {} });
    const retention = new Retention(redis, fast);
    try {
      const reads = vi.spyOn(redis, 'zrangebyscore');
      await Promise.all([retention.sweep(), retention.sweep()]);
      expect(reads).toHaveBeenCalledTimes(1);
      reads.mockRestore();
      await retention.schedule(request(1)); // due already, and no job: purged by the next sweep
      retention.start();
      await vi.waitFor(async () => expect(await redis.zcard(`${prefix}:retention`)).toBe(0), { timeout: 2_000 });
    } finally {
      await retention.stop();
    }
  });

  it('drops an entry it cannot read and goes on; a sweep that fails is a warning; stop() ends the sweeps', async () => {
    const log = { info: vi.fn(), warn: vi.fn() };
    const fast = loadConfig({ overrides: { queue: { prefix, retentionSweepMs: 50 } }, env: {} });
    const retention = new Retention(redis, fast, log as unknown as Logger);
    const key = `${prefix}:retention`;
    try {
      await redis.zadd(key, 1, 'not json at all', 2, '{"j":"x"}'); // neither is an entry: dropped, not retried for ever
      await retention.schedule(request(1));
      expect(await retention.sweep()).toBe(1);
      expect(await redis.zcard(key)).toBe(0);

      const broken = vi.spyOn(redis, 'zrangebyscore').mockRejectedValue(new Error('READONLY You can\'t write against a read only replica.'));
      retention.start();
      await vi.waitFor(() => expect(log.warn).toHaveBeenCalledWith({ err: "READONLY You can't write against a read only replica." }, 'retention sweep failed'), { timeout: 2_000 });
      broken.mockRestore();
      await retention.stop();
      await retention.schedule(request(1)); // due, but nothing sweeps any more
      await new Promise((r) => setTimeout(r, 300));
      expect(await redis.zcard(key)).toBe(1);
      await redis.del(key);
    } finally {
      await retention.stop();
    }
  });

  it('a request without a TTL is never scheduled', async () => {
    const retention = new Retention(redis, config);
    await retention.schedule(request());
    expect(await redis.zcard(`${prefix}:retention`)).toBe(0);
    await retention.stop();
  });
});
