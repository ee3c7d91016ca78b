// The worker is a trust boundary (issue 15): it enforces its own configured limits whatever the contract's hard bounds
// allow, refusing with a failure the user can read before any model runs; and a job with a valid destination but a
// kind it does not know still gets a failure delivered to that destination.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../src/blobs/index.ts';
import type { BlobStore } from '../../src/blobs/store.ts';
import { CONTRACT_VERSION, JobResult, type CliDestination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue, deliveryQueueName, type JobsQueue } from '../../src/jobs/queue.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { createProcessor, type JobProcessor } from '../../worker/processor.ts';
import { cleanup, makeHarness, REDIS_URL } from '../doubles/spine-harness.ts';

const h = makeHarness({
  generation: { maxDitSteps: 100, maxDecoderSteps: 150, maxGuidance: 20, maxPromptChars: 1000 },
  understanding: { maxNewTokens: 512, maxInputImageBytes: 4096, maxQuestionChars: 2000, maxHistoryTurns: 8 },
});
const log = createLogger('test', 'silent');
let redis: Redis;
let queue: JobsQueue;
let blobs: BlobStore;
let processor: JobProcessor;
let runs = 0;

const destination: CliDestination = { platform: 'cli', clientId: randomUUID(), channelId: 'local', userId: 'u' };
const newId = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const imagine = { seed: 1, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' };
const ask = { maxNewTokens: 512, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1.05, seed: 1 };

beforeAll(() => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
  blobs = createBlobStore(h.config, redis);
  const host = {
    async generate(): Promise<never> {
      runs++;
      throw new Error('the model must not run');
    },
    async understand(): Promise<never> {
      runs++;
      throw new Error('the model must not run');
    },
    async check(): Promise<never> {
      runs++;
      throw new Error('the model must not run');
    },
  };
  processor = createProcessor({ config: h.config, redis, blobs, host, log });
});

afterAll(async () => {
  await processor.close();
  await queue.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

/** Adds `data` as a job, runs the processor on it, returns the error it threw and the result handed to delivery. */
async function process(data: Record<string, unknown>): Promise<{ error: unknown; result: JobResult | undefined }> {
  const id = data.id as string;
  await queue.add('job', data as never, { jobId: id });
  const job = (await queue.getJob(id))!;
  const error = await processor.process(job, 'token', new AbortController().signal).then(
    () => undefined,
    (e: unknown) => e,
  );
  const dq = createDeliveryQueue(h.config, redis, deliveryQueueName(destination));
  const delivered = await dq.getJob(id);
  await dq.close();
  return { error, result: delivered ? JobResult.parse(delivered.data) : undefined };
}

const base = (kind: string) => ({ v: CONTRACT_VERSION, id: newId(), destination, submittedAt: Date.now(), kind });

describe('the worker enforces its configured limits, not only the contract bounds', () => {
  const cases: [string, () => Promise<Record<string, unknown>>, RegExp][] = [
    ['maxNewTokens 8192 (config 512)', async () => ({ ...base('ask'), imageKey: await blobs.put(new Uint8Array(100), 'input'), question: 'what?', history: [], options: { ...ask, maxNewTokens: 8192 } }), /8192 tokens.*limit is 512/],
    ['ditSteps 200 (config 100)', async () => ({ ...base('imagine'), prompt: 'a fox', options: { ...imagine, ditSteps: 200 } }), /steps is 200; the limit is 100/],
    ['decoderSteps 500 (config 150)', async () => ({ ...base('imagine'), prompt: 'a fox', options: { ...imagine, decoderSteps: 500 } }), /decoder steps is 500; the limit is 150/],
    ['guidance 50 (config 20)', async () => ({ ...base('imagine'), prompt: 'a fox', options: { ...imagine, guidance: 50 } }), /guidance is 50; the limit is 20/],
    ['a 3000-character prompt (config 1000)', async () => ({ ...base('imagine'), prompt: 'x'.repeat(3000), options: imagine }), /3000 characters; the limit is 1000/],
    ['an input image over maxInputImageBytes (4 KiB)', async () => ({ ...base('vary'), imageKey: await blobs.put(new Uint8Array(50_000), 'input'), prompt: '', options: imagine }), /49 KiB; the limit is 4 KiB/],
    ['64 history turns (config 8)', async () => ({ ...base('ask'), imageKey: await blobs.put(new Uint8Array(100), 'input'), question: 'what?', history: Array.from({ length: 64 }, () => ({ role: 'user', text: 'hi' })), options: ask }), /64 earlier turns; the limit is 8/],
  ];
  for (const [name, make, message] of cases) {
    it(`refuses ${name} at once, with a failure the user can read, and runs no model`, async () => {
      const before = runs;
      const { error, result } = await process(await make());
      expect(error).toMatchObject({ name: 'UnrecoverableError' });
      expect(result).toMatchObject({ status: 'failed', error: { userFacing: true } });
      expect(result!.error!.message).toMatch(message);
      expect(runs).toBe(before);
    });
  }
});

describe('a job of an unknown kind', () => {
  it('with a valid destination gets a failure delivered there (not silence)', async () => {
    const { error, result } = await process({ ...base('upscale'), prompt: 'a fox', options: imagine });
    expect(error).toMatchObject({ name: 'UnrecoverableError' });
    expect(result).toMatchObject({ status: 'failed', destination, error: { code: 'contract', userFacing: false } });
  });
});

describe("a CLI client's delivery queue", () => {
  it('expires (blobs.ttlSeconds) once a result is handed to it, so a killed CLI leaves nothing behind for good', async () => {
    const { result } = await process({ ...base('imagine'), prompt: 'a fox', options: { ...imagine, ditSteps: 500 } });
    expect(result?.status).toBe('failed');
    const q = createDeliveryQueue(h.config, redis, deliveryQueueName(destination));
    const keys = [q.keys.wait!, q.keys.meta!, q.keys.events!, q.toKey(result!.jobId)];
    await q.close();
    for (const key of keys) {
      expect(await redis.exists(key), key).toBe(1);
      const ttl = await redis.ttl(key);
      expect(ttl, key).toBeGreaterThan(0);
      expect(ttl, key).toBeLessThanOrEqual(h.config.blobs.ttlSeconds);
    }
  });

  it("leaves BullMQ's stall-check timer its own short TTL (a day-long one stops a restarted CLI recovering a stalled delivery)", async () => {
    const q = createDeliveryQueue(h.config, redis, deliveryQueueName(destination));
    const timer = q.keys['stalled-check']!;
    await redis.set(timer, '1', 'PX', 5_000); // as a delivery worker's stall check leaves it
    const { result } = await process({ ...base('imagine'), prompt: 'a fox', options: { ...imagine, ditSteps: 500 } });
    await q.close();
    expect(result?.status).toBe('failed');
    const ttl = await redis.pttl(timer);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(5_000);
  });
});
