// The processor's crash-point logic, in process and deterministic (the spawned-process tests cover the rest):
// a job re-run after its result was handed over (worker died before the ack) runs nothing and adds nothing;
// the delivery consumer acknowledges a result the ledger already records without posting it again.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliverOne } from '../../bots/core/delivery.ts';
import { createBlobStore } from '../../src/blobs/index.ts';
import { CONTRACT_VERSION, type CliDestination, type JobRequest, type JobResult } from '../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import { createDeliveryQueue, createJobsQueue, deliveryQueueName, type JobsQueue } from '../../src/jobs/queue.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { createProcessor, type JobProcessor } from '../../worker/processor.ts';
import type { GenerateRequest } from '../../worker/pipeline/types.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL } from '../doubles/spine-harness.ts';

const h = makeHarness({});
const log = createLogger('test', 'silent');
let redis: Redis;
let queue: JobsQueue;
let processor: JobProcessor;
const generated: GenerateRequest[] = [];
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));

const destination: CliDestination = { platform: 'cli', clientId: randomUUID(), channelId: 'local', userId: 'u' };
const request = (id: string): JobRequest => ({
  v: CONTRACT_VERSION, id, destination, submittedAt: Date.now(), kind: 'imagine', prompt: 'fox',
  options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
});

beforeAll(() => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
  const host = {
    async generate(r: GenerateRequest) {
      generated.push(r);
      return { png: PNG.slice(), width: 1, height: 1 };
    },
    async understand(): Promise<never> {
      throw new Error('not used');
    },
    async check() {
      return { answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } };
    },
  };
  processor = createProcessor({ config: h.config, redis, blobs: createBlobStore(h.config, redis), host, log });
});

afterAll(async () => {
  await processor.close();
  await queue.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('processor and delivery crash points', () => {
  it('a job re-run after its result was handed over runs nothing and hands over nothing new', async () => {
    const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
    await queue.add('imagine', request(id), { jobId: id });
    const job = (await queue.getJob(id))!;
    const first = await processor.process(job, 'token', new AbortController().signal);
    expect(first.status).toBe('succeeded');
    expect(generated.length).toBe(1);
    // The worker "died" before BullMQ recorded completion: the stalled job runs again.
    const again = await processor.process(job, 'token', new AbortController().signal);
    expect(again).toMatchObject({ status: 'succeeded', alreadyHandedOver: true });
    expect(generated.length).toBe(1);
    const dq = createDeliveryQueue(h.config, redis, deliveryQueueName(destination));
    expect(await dq.getJobCountByTypes('wait', 'prioritized', 'delayed')).toBe(1);
    await dq.close();
  });

  it('delivery acknowledges a result the ledger already records, without posting it again', async () => {
    const port = new RecordingPort('cli');
    const deps = { config: h.config, redis, blobs: createBlobStore(h.config, redis), ledger: new DeliveryLedger(redis, h.config), port, log };
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: `j${randomUUID().slice(0, 8)}`, kind: 'ask', destination, status: 'succeeded',
      answer: { text: 'a fox', tokenCount: 2 }, timingsMs: {}, finishedAt: Date.now(),
    };
    expect(await deliverOne(deps, result)).toBe('delivered');
    // The bot died after the ledger mark, before the ack: the delivery job runs again.
    expect(await deliverOne(deps, result)).toBe('duplicate');
    expect(port.count(result.jobId)).toBe(1);
    // A malformed result is refused without retries (UnrecoverableError).
    await expect(deliverOne(deps, { ...result, v: 2 })).rejects.toMatchObject({ name: 'UnrecoverableError' });
  });
});
