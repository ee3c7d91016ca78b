// The worker's hand-over over real Redis (issue 19): the result's PNG, its delivery job and a CLI queue's expiry go in
// one MULTI, one round trip (counted on the connection: a round trip starts at each command sent after a reply came
// in), and land together or not at all: a blob SET that Redis refuses leaves no delivery job, so BullMQ's retry runs
// the job again. A server that lost its script cache (SCRIPT FLUSH) still gets the hand-over. The refusals and the
// flush change server-wide state, so those run on a redis-server of their own.
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../src/blobs/index.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest, type JobResult } from '../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../src/jobs/ledger.ts';
import { createDeliveryQueue, deliveryJobOptions, deliveryQueueName } from '../../../src/jobs/queue.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../src/redis.ts';
import { createProcessor, type JobProcessor } from '../../../worker/processor.ts';
import { startRedisServer, type RedisProcess } from '../../doubles/redis-processes.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-handover-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, checks: { altText: false } } });
const log = createLogger('test', 'silent');
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
const cli: Destination = { platform: 'cli', clientId: `c${randomUUID().slice(0, 8)}`, channelId: 'local', userId: 'u' };
const discord: Destination = { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'a' };
const uid = () => `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
const askOptions = { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 };
const imagine = (destination: Destination, id = uid()): JobRequest => ({ v: CONTRACT_VERSION, id, destination, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options });

function job(data: JobRequest, attemptsMade = 0): Job<JobRequest> {
  return { id: data.id, data, opts: { attempts: 3 }, attemptsMade, updateProgress: async () => undefined } as unknown as Job<JobRequest>;
}

/**
 * Round trips on `redis` between start() and the processor's afterHandOver (stop()): one begins at each command sent
 * after a reply came in (the replies' callbacks run before any code that awaited them sends its next command).
 */
function roundTrips(redis: Redis) {
  type Command = { name: string; promise: Promise<unknown> };
  const events: ('send' | 'reply')[] = [];
  const sent: string[] = [];
  let tracing = false;
  const r = redis as unknown as { sendCommand(command: Command, ...rest: unknown[]): unknown };
  const send = r.sendCommand.bind(redis);
  r.sendCommand = (command, ...rest) => {
    if (tracing) {
      events.push('send');
      sent.push(command.name);
      const replied = () => void events.push('reply');
      command.promise.then(replied, replied);
    }
    return send(command, ...rest);
  };
  return {
    start() {
      events.length = 0;
      sent.length = 0;
      tracing = true;
    },
    stop() {
      tracing = false;
    },
    get count() {
      let trips = 0;
      let replied = true;
      for (const e of events) {
        if (e === 'reply') replied = true;
        else if (replied) [trips, replied] = [trips + 1, false];
      }
      return trips;
    },
    sent,
  };
}

/**
 * A processor on `redis` whose model takes 20 ms (a CLI run's delivery queue, opened at the job's start, writes its
 * meta meanwhile, as it does during a real run); tracing starts when the model is done, stops at afterHandOver.
 */
function processorOn(redis: Redis, afterMs = 0) {
  const trace = roundTrips(redis);
  const model = () => new Promise((r) => setTimeout(r, 20));
  const host = {
    generate: async () => (await model(), trace.start(), { png: PNG, width: 1, height: 1 }),
    understand: async () => (await model(), trace.start(), { text: 'a cat', tokenIds: [1] }),
    check: async () => ({ answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }),
  };
  const processor = createProcessor({ config, redis, blobs: createBlobStore(config, redis), host, log, afterHandOver: async () => (trace.stop(), await new Promise((r) => setTimeout(r, afterMs))) });
  return { processor, trace, run: (data: JobRequest, attemptsMade = 0) => processor.process(job(data, attemptsMade), 'token', new AbortController().signal) };
}

/** Resolves once `ready()` holds (polled every 5 ms, for 5 s at most). */
async function until(ready: () => boolean): Promise<void> {
  for (const end = Date.now() + 5_000; !ready(); ) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function handedOver(redis: Redis, request: JobRequest): Promise<Job<JobResult> | undefined> {
  const q = createDeliveryQueue(config, redis, deliveryQueueName(request.destination));
  try {
    return await q.getJob(request.id);
  } finally {
    await q.close();
  }
}

describe('the hand-over', () => {
  let redis: Redis;
  let on: ReturnType<typeof processorOn>;
  beforeAll(() => {
    redis = createRedis(url);
    on = processorOn(redis);
  });
  afterAll(async () => {
    await on.processor.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    await closeRedis(redis);
  });

  it('sends the PNG, the delivery job and a CLI queue’s expiry in one round trip, for an image and for an answer', async () => {
    const ask = (destination: Destination): JobRequest => ({ v: CONTRACT_VERSION, id: uid(), destination, submittedAt: 1, kind: 'ask', imageKey: '', question: 'what?', history: [], options: askOptions });
    for (const destination of [cli, discord]) {
      await on.run(imagine(destination)); // the platform's delivery queue is opened (its connection checks) first
      const request = imagine(destination);
      await on.run(request);
      expect(on.trace.count, `${destination.platform} image: ${on.trace.sent.join(' ')}`).toBe(1);
      // blob, delivery job (BullMQ's add script) and, for a CLI, the expiry script, in one transaction
      expect(on.trace.sent).toEqual(destination.platform === 'cli' ? ['multi', 'set', 'evalsha', 'evalsha', 'exec'] : ['multi', 'set', 'evalsha', 'exec']);
      const delivery = (await handedOver(redis, request))!;
      expect(await redis.getBuffer(delivery.data.image!.blobKey)).toEqual(Buffer.from(PNG));
      // the job BullMQ's own add would have made: the delivery queue's defaults (attempts, backoff), name, id
      expect(delivery.opts).toMatchObject({ ...deliveryJobOptions(config), jobId: request.id });
      expect(delivery.name).toBe('result');
      expect(await redis.ttl(delivery.data.image!.blobKey)).toBeGreaterThan(config.blobs.ttlSeconds - 60);
    }
    const cliQueue = createDeliveryQueue(config, redis, deliveryQueueName(cli));
    try {
      for (const key of [cliQueue.keys.wait!, cliQueue.keys.events!]) expect(await redis.ttl(key), key).toBeGreaterThan(config.blobs.ttlSeconds - 60);
    } finally {
      await cliQueue.close();
    }
    // An answer has no blob: a CLI's delivery job and its queue's expiry, together; elsewhere the add alone.
    const blob = await createBlobStore(config, redis).put(Uint8Array.from([1]), 'input');
    for (const destination of [cli, discord]) {
      const request = { ...ask(destination), imageKey: blob };
      await on.run(request);
      expect(on.trace.count, `${destination.platform} answer: ${on.trace.sent.join(' ')}`).toBe(1);
      expect(on.trace.sent).toEqual(destination.platform === 'cli' ? ['multi', 'evalsha', 'evalsha', 'exec'] : ['evalsha']);
      expect((await handedOver(redis, request))!.data.answer).toMatchObject({ text: 'a cat' });
    }
    const cliAnswer = { ...ask(cli), imageKey: blob };
    await on.run(cliAnswer);
    expect(await redis.ttl(`${prefix}:${deliveryQueueName(cli)}:${cliAnswer.id}`)).toBeGreaterThan(config.blobs.ttlSeconds - 60);
  });

  it('fails the attempt when a write inside the MULTI fails, so BullMQ retries it', async () => {
    const request = imagine(cli);
    const counter = `${prefix}:${deliveryQueueName(cli)}:id`;
    const saved = await redis.get(counter);
    await redis.set(counter, 'not a number'); // the add script's first command, INCR, fails inside EXEC: nothing added
    try {
      const failure = await on.run(request).then(() => undefined, (e: unknown) => e as Error);
      expect(failure?.message).toMatch(/not an integer/);
      expect(failure).not.toBeInstanceOf(UnrecoverableError);
      expect(on.trace.sent.filter((c) => c === 'set')).toEqual(['set']); // not sent again the sequential way (NOSCRIPT's)
      expect(await handedOver(redis, request)).toBeUndefined(); // the PNG's SET ran (no rollback) and expires unread
    } finally {
      await (saved === null ? redis.del(counter) : redis.set(counter, saved));
    }
    expect(await on.run(request, 1)).toMatchObject({ status: 'succeeded' });
    expect((await handedOver(redis, request))!.data.jobId).toBe(request.id);
  });
});

describe('a CLI run’s delivery queue', () => {
  // Each CLI run has a delivery queue of its own (delivery-cli-<clientId>). Before 2026-12-07 the worker kept every one
  // it had handed over to, with BullMQ's listeners on its shared connection, for as long as it ran: a worker serving
  // scripted CLI runs grew by a Queue and three listeners per run.
  it('is closed once the run’s job is over: nothing of it stays on the worker’s connection', async () => {
    const redis = createRedis(url);
    const on = processorOn(redis);
    try {
      await on.run(imagine(discord)); // the platform's queue is kept: it serves every job of the platform
      const before = ['error', 'close', 'ready'].map((e) => redis.listenerCount(e));
      for (let i = 0; i < 3; i++) {
        const run = { ...cli, clientId: `c${randomUUID().slice(0, 8)}` };
        expect(await on.run(imagine(run))).toMatchObject({ status: 'succeeded' });
      }
      // and a job BullMQ failed for good (its worker died too often): its failure handed over by onFinallyFailed
      await on.processor.onFinallyFailed(job(imagine({ ...cli, clientId: `c${randomUUID().slice(0, 8)}` })), new Error('job stalled more than allowable limit'));
      expect(['error', 'close', 'ready'].map((e) => redis.listenerCount(e))).toEqual(before);
    } finally {
      await on.processor.close();
      await closeRedis(redis);
    }
  });

  // The CLI deletes its queue as it exits (a cancelled run, SIGINT); the worker may look at the job after that (its
  // onFinallyFailed: was it handed over?). Each Queue the worker opened on a CLI's queue wrote BullMQ's meta hash, and
  // one opened after the CLI's exit wrote it anew with no TTL: a key left for good (CI's cli-signals test, 2026-12-07).
  // The meta hash is the CLI's to write; the worker only hands over, and everything it writes there expires.
  it('a CLI that showed its result and deleted its queue gets no key of it back without a TTL from the worker’s last look', async () => {
    const redis = createRedis(url);
    const on = processorOn(redis, 100); // the after-hand-over step takes a moment, as the worker's does (the flight's close, usage)
    try {
      const run = { ...cli, clientId: `c${randomUUID().slice(0, 8)}` };
      const request = imagine(run);
      const keys = () => redis.keys(`${prefix}:${deliveryQueueName(run)}:*`);
      expect(await on.run(request)).toMatchObject({ status: 'succeeded' });
      expect(await new DeliveryLedger(redis, config).markDelivered(request.id)).toBe(true); // the CLI showed it …
      await redis.del(...(await keys())); // … and deleted its queue as it exited
      await on.processor.onFinallyFailed(job(request), new Error('cancelled'));
      await new Promise((r) => setTimeout(r, 100));
      for (const key of await keys()) expect(await redis.ttl(key), key).toBeGreaterThan(0);
    } finally {
      await on.processor.close();
      await closeRedis(redis);
    }
  });
});

describe('a CLI run’s jobs overlapping on one worker', () => {
  // The jobs of one run share its queue here: the first to end must not close it under the others (a hand-over on a
  // closed Queue fails the job).
  it('the queue stays open while any job of the run runs here, and is closed after the last', async () => {
    const redis = createRedis(url);
    const gates: (() => void)[] = []; // the model's runs, in the order they started
    const host = {
      generate: () => new Promise((resolve) => gates.push(() => resolve({ png: PNG, width: 1, height: 1 }))),
      understand: async () => ({ text: 'a cat', tokenIds: [1] }),
      check: async () => ({ answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } }),
    };
    const processor = createProcessor({ config, redis, blobs: createBlobStore(config, redis), host: host as never, log });
    const listeners = () => ['error', 'close', 'ready'].map((e) => redis.listenerCount(e));
    try {
      const before = listeners();
      const run = { ...cli, clientId: `c${randomUUID().slice(0, 8)}` };
      const [a, b] = [imagine(run), imagine(run)];
      const running = [a, b].map((r) => processor.process(job(r), 'token', new AbortController().signal));
      await until(() => gates.length === 2);
      gates[0]!();
      const first = await Promise.race(running);
      expect(first).toMatchObject({ status: 'succeeded' });
      expect(listeners()).not.toEqual(before); // the other job's queue is open still
      gates[1]!();
      expect(await Promise.all(running)).toMatchObject([{ status: 'succeeded' }, { status: 'succeeded' }]);
      expect(await handedOver(redis, a)).toBeDefined();
      expect(await handedOver(redis, b)).toBeDefined();
      expect(listeners()).toEqual(before);
    } finally {
      await processor.close();
      await closeRedis(redis);
    }
  });
});

describe('the hand-over on a server of its own', () => {
  let server: RedisProcess;
  let admin: Redis;
  beforeAll(async () => {
    server = await startRedisServer();
    admin = createRedis(`redis://127.0.0.1:${server.port}`);
  }, 30_000);
  afterAll(async () => {
    await closeRedis(admin);
    await server.kill();
  });

  it('a blob SET that Redis refuses leaves no delivery job: the attempt fails, is retried, and the re-run hands over', async () => {
    // A worker allowed to write its delivery queues only: the blob's SET is refused (NOPERM) when queued.
    await admin.call('ACL', 'SETUSER', 'worker', 'on', '>pw', 'resetkeys', '%R~*', `~${prefix}:delivery-*`, 'resetchannels', '&*', '+@all');
    const limited = createRedis(`redis://worker:pw@127.0.0.1:${server.port}`);
    const denied = processorOn(limited);
    const whole = processorOn(admin);
    try {
      const request = imagine(cli);
      const failure = await denied.run(request).then(() => undefined, (e: unknown) => e as Error);
      expect(failure).toBeInstanceOf(Error);
      expect(failure).not.toBeInstanceOf(UnrecoverableError); // transient: BullMQ retries the job
      expect(failure!.message).toMatch(/EXECABORT|NOPERM/);
      expect(await handedOver(admin, request)).toBeUndefined(); // no delivery that names a missing image …
      expect(await admin.keys(`${prefix}:blob:*`)).toEqual([]);
      const ledger = new DeliveryLedger(admin, config);
      expect(await ledger.isHandedOver(request.id, `${prefix}:${deliveryQueueName(cli)}:${request.id}`)).toBe(false); // … so the retry runs it
      expect(await whole.run(request, 1)).toMatchObject({ status: 'succeeded' });
      expect(await whole.run(request, 2)).toMatchObject({ status: 'succeeded', alreadyHandedOver: true });
      const delivery = (await handedOver(admin, request))!;
      expect(await admin.getBuffer(delivery.data.image!.blobKey)).toEqual(Buffer.from(PNG));
    } finally {
      await denied.processor.close();
      await whole.processor.close();
      await closeRedis(limited);
      await admin.call('ACL', 'DELUSER', 'worker');
    }
  });

  it('hands over after SCRIPT FLUSH (NOSCRIPT inside the MULTI), then in one round trip again', async () => {
    const { processor, trace, run } = processorOn(admin);
    try {
      await run(imagine(cli)); // the scripts are loaded on the connection
      await admin.script('FLUSH');
      const request = imagine(cli);
      expect(await run(request)).toMatchObject({ status: 'succeeded' });
      const delivery = (await handedOver(admin, request))!;
      expect(await admin.getBuffer(delivery.data.image!.blobKey)).toEqual(Buffer.from(PNG));
      expect(await admin.ttl(`${prefix}:${deliveryQueueName(cli)}:${request.id}`)).toBeGreaterThan(config.blobs.ttlSeconds - 60);
      await run(imagine(cli));
      expect(trace.count, trace.sent.join(' ')).toBe(1);
    } finally {
      await processor.close();
    }
  });
});
