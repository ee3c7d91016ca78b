// What a worker keeps of a private channel's job. A no-log channel's failure that quotes what was typed (a model's
// refusal) stays out of what BullMQ keeps: the job's failedReason and stacktrace and the jobs queue's event stream,
// which outlives the job (before 2026-12-07 the worker's log line withheld it, and the error it threw wrote it there;
// the user has the text in the result handed over). A retention channel's generated PNG is stored until the channel's
// deadline (submitted + TTL), not the TTL from when it was made, and the sweep deletes it with the job (before, a job
// that waited in a busy queue, whose delivery then failed, kept its PNG that long past the deadline).
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, Worker } from 'bullmq';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import { UserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, type DiscordDestination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue } from '../../../src/jobs/queue.ts';
import { Retention } from '../../../src/jobs/retention.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, duplicateRedis, type Redis } from '../../../src/redis.ts';
import { createProcessor } from '../../../worker/processor.ts';
import type { GenerateRequest } from '../../../worker/pipeline/types.ts';
import { cleanup, makeHarness, REDIS_URL } from '../../doubles/spine-harness.ts';

const redises: { redis: Redis; prefix: string }[] = [];
afterAll(async () => {
  for (const { redis, prefix } of redises) {
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
});

describe('no-log channel: a refusal quoting the prompt', () => {
  it('is not written into BullMQ\'s failedReason, stacktrace or event stream', async () => {
    const h = makeHarness({});
    const redis = createRedis(REDIS_URL);
    redises.push({ redis, prefix: h.prefix });
    const host = {
      async generate(r: GenerateRequest): Promise<never> {
        throw new UserError('bad_request', `I cannot draw "${r.prompt}"`); // a model refusal that quotes the input
      },
      understand: async (): Promise<never> => { throw new Error('not used'); },
      check: async () => ({ answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }),
    };
    const processor = createProcessor({ config: h.config, redis, blobs: createBlobStore(h.config, redis), host, log: createLogger('t', 'silent') });
    const queue = createJobsQueue(h.config, redis);
    let jw: Worker | undefined;
    try {
      const secret = `zebra-${randomUUID().slice(0, 8)}`;
      const destination: DiscordDestination = { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a', noLog: true };
      const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
      const request: JobRequest = { v: CONTRACT_VERSION, id, destination, submittedAt: Date.now(), kind: 'imagine', prompt: `a ${secret} on the moon`, options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
      await queue.add('imagine', request, { jobId: id });
      jw = new Worker(queue.name, (job, token, signal) => processor.process(job, token, signal), { connection: duplicateRedis(redis), prefix: h.prefix });
      for (let i = 0; i < 200 && (await (await queue.getJob(id))?.getState()) !== 'failed'; i++) await new Promise((r) => setTimeout(r, 50));
      const hash = await redis.hgetall(`${h.prefix}:jobs:${id}`);
      const events = ((await redis.xrange(`${h.prefix}:jobs:events`, '-', '+')) as [string, string[]][]).map(([, f]) => f.join(' '));
      const found = {
        failedReason: (hash.failedReason ?? '').includes(secret),
        stacktrace: (hash.stacktrace ?? '').includes(secret),
        eventStream: events.some((e) => e.includes(secret)),
      };
      expect(found).toEqual({ failedReason: false, stacktrace: false, eventStream: false });
    } finally {
      await jw?.close();
      await processor.close();
      await queue.close();
    }
  }, 60_000);
});

describe('retention TTL: generated PNG', () => {
  it('is gone from Redis once the TTL has passed and the sweep purged the job', async () => {
    const TTL_S = 60;
    const h = makeHarness({ queue: { retentionSweepMs: 60_000 } });
    const redis = createRedis(REDIS_URL);
    redises.push({ redis, prefix: h.prefix });
    const png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f80' } }).png().toBuffer());
    const host = {
      generate: async () => ({ png, width: 8, height: 8 }),
      understand: async (): Promise<never> => { throw new Error('not used'); },
      check: async () => ({ answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }),
    };
    const log = createLogger('t', 'silent');
    const processor = createProcessor({ config: h.config, redis, blobs: createBlobStore(h.config, redis), host, log });
    const queue = createJobsQueue(h.config, redis);
    const retention = new Retention(redis, h.config);
    const delivery = createDeliveryQueue(h.config, redis, 'delivery-discord');
    let w: Worker | undefined;
    let jw: Worker | undefined;
    try {
      // Submitted 50 s ago to a channel with a 60 s TTL; it waited in a busy queue and runs now.
      const submittedAt = Date.now() - 50_000;
      const deadline = submittedAt + TTL_S * 1000;
      const destination: DiscordDestination = { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a', retentionSeconds: TTL_S };
      const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
      const request: JobRequest = { v: CONTRACT_VERSION, id, destination, submittedAt, kind: 'imagine', prompt: 'a secret okapi', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
      await retention.schedule(request);
      await queue.add('imagine', request, { jobId: id });
      jw = new Worker(queue.name, (job, token, signal) => processor.process(job, token, signal), { connection: duplicateRedis(redis), prefix: h.prefix });
      for (let i = 0; i < 200 && (await (await queue.getJob(id))?.getState()) !== 'completed'; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await (await queue.getJob(id))?.getState()).toBe('completed');
      const result = (await delivery.getJob(id))!.data as JobResult;
      const blobKey = result.image!.blobKey;
      // Its delivery failed for good (the platform refused it every time): BullMQ marks it failed.
      w = new Worker(delivery.name, async (): Promise<void> => { throw new UnrecoverableError('platform refused'); }, { connection: duplicateRedis(redis), prefix: h.prefix });
      for (let i = 0; i < 100 && (await (await delivery.getJob(id))?.getState()) !== 'failed'; i++) await new Promise((r) => setTimeout(r, 50));
      // The sweep at the deadline purges the job and its delivery …
      const purged = await retention.sweep(deadline + 1);
      expect(purged).toBe(1);
      expect(await queue.getJob(id)).toBeUndefined();
      // … and the PNG must not outlive the deadline.
      const pttl = await redis.pttl(blobKey);
      const expiresAt = pttl > 0 ? Date.now() + pttl : pttl;
      expect({ blobExists: (await redis.exists(blobKey)) === 1, expiresAfterDeadlineMs: pttl > 0 ? expiresAt - deadline : 0 }).toEqual({ blobExists: false, expiresAfterDeadlineMs: 0 });
    } finally {
      await w?.close();
      await jw?.close();
      await processor.close();
      await queue.close();
      await delivery.close();
      await retention.stop();
    }
  }, 60_000);
});
