// A no-log channel's failure that quotes what was typed (a model's refusal) stays out of what BullMQ keeps: the job's
// failedReason and stacktrace and the jobs queue's event stream, which outlives the job. (Before 2026-12-07 the worker's
// log line withheld it, and the error it threw wrote it there.) The user has the text in the result handed over.
import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { afterAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import { UserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, type DiscordDestination, type JobRequest } from '../../../src/jobs/contract.ts';
import { createJobsQueue } from '../../../src/jobs/queue.ts';
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
