// Moderation of the images users send (issue 16): with checks.moderation on, the worker asks the moderation questions
// of an /ask or vary input before the model answers or draws from it. Flagged: the model does not run, the input is
// deleted from the blob store at once, and the hand-over is a private, user-facing `input_withheld` failure. In process,
// real Redis and the real processor; the host's check answers as the test sets it.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../src/blobs/index.ts';
import type { BlobStore } from '../../src/blobs/store.ts';
import { CONTRACT_VERSION, JobResult, type CliDestination, type JobRequest } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue, deliveryQueueName, type JobsQueue } from '../../src/jobs/queue.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import type { CheckRequest } from '../../worker/pipeline/types.ts';
import { createProcessor, type JobProcessor } from '../../worker/processor.ts';
import { cleanup, makeHarness } from '../doubles/spine-harness.ts';

const h = makeHarness({ checks: { altText: false, moderation: { enabled: true, checkInputs: true } } });
const log = createLogger('test', 'silent');
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const destination: CliDestination = { platform: 'cli', clientId: randomUUID(), channelId: 'local', userId: 'u' };
let redis: Redis;
let queue: JobsQueue;
let blobs: BlobStore;
let processor: JobProcessor;
const ran: string[] = [];
const asked: CheckRequest[] = [];
let nudity = 0.01;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  queue = createJobsQueue(h.config, redis);
  blobs = createBlobStore(h.config, redis);
  const host = {
    async generate() {
      ran.push('generate');
      return { png: PNG.slice(), width: 1, height: 1 };
    },
    async understand() {
      ran.push('understand');
      return { text: 'a fox', tokenIds: [1, 2] };
    },
    async check(r: CheckRequest) {
      asked.push(r);
      return { answers: Object.fromEntries(r.questions.map((q) => [q.id, q.id === 'nudity' ? nudity : 0.01])), counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 1, captionTokens: 0 } };
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

async function runJob(make: (id: string, imageKey: string) => JobRequest): Promise<{ outcome: unknown; result: JobResult; imageKey: string }> {
  const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  const imageKey = await blobs.put(PNG, 'input');
  await queue.add('job', make(id, imageKey), { jobId: id });
  const job = (await queue.getJob(id))!;
  const outcome = await processor.process(job, 'token', new AbortController().signal).catch((e: unknown) => e);
  const dq = createDeliveryQueue(h.config, redis, deliveryQueueName(destination));
  const result = JobResult.parse((await dq.getJob(id))!.data);
  await dq.close();
  return { outcome, result, imageKey };
}

const ask = (id: string, imageKey: string): JobRequest => ({
  v: CONTRACT_VERSION, id, destination, submittedAt: Date.now(), kind: 'ask', imageKey, question: 'what is this?', history: [],
  options: { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 },
});
const vary = (id: string, imageKey: string): JobRequest => ({
  v: CONTRACT_VERSION, id, destination, submittedAt: Date.now(), kind: 'vary', imageKey, prompt: '',
  options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' },
});

describe('moderation of input images', () => {
  it('an /ask image under every threshold is answered; the questions were asked of it first', async () => {
    nudity = 0.01;
    ran.length = 0;
    const { result } = await runJob(ask);
    expect(result).toMatchObject({ status: 'succeeded', answer: { text: 'a fox' } });
    expect(ran).toEqual(['understand']);
    expect(asked.at(-1)!.questions.map((q) => q.id)).toEqual(['nudity', 'violence']);
    expect(asked.at(-1)!.match).toBe(false);
  });

  it('a flagged /ask or vary image: no model run, the input deleted, a private input_withheld failure', async () => {
    nudity = 0.97;
    for (const make of [ask, vary]) {
      ran.length = 0;
      const { outcome, result, imageKey } = await runJob(make);
      expect(outcome).toMatchObject({ name: 'UnrecoverableError' });
      expect(ran).toEqual([]);
      expect(result).toMatchObject({ status: 'failed', error: { code: 'input_withheld', userFacing: true, private: true } });
      expect(result.error!.message).toMatch(/can't work with that image here.*\(nudity\)/);
      expect(await blobs.get(imageKey)).toBeUndefined();
    }
  });
});
