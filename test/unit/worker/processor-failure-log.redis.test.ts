// What the worker logs when a job ends in a failure the chat user sees as "failed (ref <jobId>)": the admin greps the
// ref and finds one line, at level error, with the cause (message and stack), the job's kind and where it came from.
// The failure's ref (the job id) is in the result handed over and in that line. Over real Redis, as
// processor-outputs.redis.test.ts, with hosts that throw.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import type { Job } from 'bullmq';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import type { BlobStore } from '../../../src/blobs/store.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { AppError, UserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, type DiscordDestination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import { createProcessor } from '../../../worker/processor.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-procfail-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const discord: DiscordDestination = { platform: 'discord', guildId: 'g1', channelId: `c${randomUUID().slice(0, 6)}`, userId: 'u', applicationId: 'a' };
const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
const imagine = (): JobRequest => ({ v: CONTRACT_VERSION, id: `j${randomUUID().replaceAll('-', '').slice(0, 20)}`, destination: discord, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options });
const failureOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error);

let redis: Redis;
let blobs: BlobStore;
const closers: (() => Promise<void>)[] = [];

/** A processor whose model throws `fail()`, logging into `lines`. */
function processorThrowing(fail: () => Error) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const host = {
    generate: async () => { throw fail(); },
    understand: async () => { throw fail(); },
    check: async () => { throw fail(); },
  };
  const p = createProcessor({ config, redis, blobs, host, log: pino({ level: 'info' }, sink) });
  closers.push(() => p.close());
  /** The lines that name this job, warnings and errors only. */
  const about = (jobId: string) => lines.filter((l) => l.jobId === jobId && (l.level as number) >= 40);
  return { p, about };
}

function job(data: JobRequest, attempts: number, attemptsMade: number): Job<JobRequest> {
  return { id: data.id, data, opts: { attempts }, attemptsMade, updateProgress: async () => undefined } as unknown as Job<JobRequest>;
}

async function handedOver(id: string): Promise<JobResult | undefined> {
  const q = createDeliveryQueue(config, redis, deliveryQueueName(discord));
  try {
    return (await q.getJob(id))?.data;
  } finally {
    await q.close();
  }
}

beforeAll(() => {
  redis = createRedis(url);
  blobs = createBlobStore(config, redis);
});
afterAll(async () => {
  for (const c of closers) await c();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('a failed job, as the admin finds it', () => {
  it('retries run out: one error line with the ref the user sees, the cause and its stack, kind and channel', async () => {
    // what onnxruntime throws when the GPU is full, as it reaches the processor
    const { p, about } = processorThrowing(() => new Error('Failed to allocate memory for requested buffer of size 123'));
    const request = imagine();
    await failureOf(p.process(job(request, 3, 0), 'token', new AbortController().signal));
    expect(about(request.id)).toMatchObject([{ level: 40, msg: 'job attempt failed', attempt: 1, stack: expect.stringContaining('Failed to allocate memory') }]);
    await failureOf(p.process(job(request, 3, 2), 'token', new AbortController().signal)); // the last attempt
    const failure = await handedOver(request.id);
    expect(failure?.error?.message).toBe(`Generation failed (ref ${request.id}).`);
    const last = about(request.id).slice(1);
    expect(last).toMatchObject([{
      level: 50, msg: 'job failed for good', jobId: request.id, attempt: 3, attempts: 3, kind: 'imagine',
      platform: 'discord', workspace: 'g1', channel: discord.channelId, err: 'Failed to allocate memory for requested buffer of size 123',
      stack: expect.stringContaining('processor-failure-log.redis.test.ts'),
    }]);
    // onFinallyFailed (BullMQ's 'failed' listener) finds it handed over: it says nothing more
    await p.onFinallyFailed(job(request, 3, 3), new Error('Failed to allocate memory for requested buffer of size 123'));
    expect(about(request.id)).toHaveLength(2);
  });

  it('a stalled job BullMQ failed without running it: one error line, with its reason', async () => {
    const { p, about } = processorThrowing(() => new Error('never runs'));
    const request = imagine();
    await p.onFinallyFailed(job(request, 3, 0), new Error('job stalled more than allowable limit'));
    expect((await handedOver(request.id))?.error?.message).toBe(`Generation failed (ref ${request.id}): job stalled more than allowable limit`);
    expect(about(request.id)).toMatchObject([{
      level: 50, msg: 'job failed for good', jobId: request.id, kind: 'imagine', platform: 'discord', workspace: 'g1',
      channel: discord.channelId, err: 'job stalled more than allowable limit',
    }]);
  });

  it('the job time limit: a warning (the admin sizes it), with the kind and channel', async () => {
    const { p, about } = processorThrowing(() => new AppError('timeout', 'That took too long (over 15 minutes), so I stopped it.'));
    const request = imagine();
    await failureOf(p.process(job(request, 3, 0), 'token', new AbortController().signal));
    expect(about(request.id)).toMatchObject([{ level: 40, msg: 'job failed (not retried)', code: 'timeout', kind: 'imagine', platform: 'discord', channel: discord.channelId }]);
  });

  it("a failure that is the user's to fix (their image refused): handed over, with no warning or error for the admin", async () => {
    const { p, about } = processorThrowing(() => new UserError('bad_image', 'That image is too large.'));
    const request = imagine();
    await failureOf(p.process(job(request, 3, 0), 'token', new AbortController().signal));
    expect((await handedOver(request.id))?.error).toMatchObject({ code: 'bad_image', userFacing: true });
    expect(about(request.id)).toEqual([]); // its 'job failed (not retried)' line is info
  });
});
