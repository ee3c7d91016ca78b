// Edges of core.handle() over real Redis that the other submit tests leave open: cache entries that cannot serve a
// request (no PNG, or an image under a question's address) count as misses; a served image is stored as an output
// blob; a leader's flight outlives the admission grace once its job is queued; releaseFollowers says how many it
// told; the replica warning names the job and the settings; a cancel frees the job's slot, and a cancel whose
// removal fails (a worker holds the job's lock) leaves the job to the worker.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Invocation, PlatformPort } from '../../../../bots/core/port.ts';
import { CACHED_TEXT, createCore, type Core, type CoreOptions } from '../../../../bots/core/submit.ts';
import { digestOf } from '../../../../src/cache/fanout.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import { CONTRACT_VERSION, QueueNames, type Destination, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, jobIdFor } from '../../../../src/jobs/queue.ts';
import { createLogger, type Logger } from '../../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
const silent = createLogger('test', 'silent');
let redis: Redis;
const prefixes: string[] = [];
const cores: Core[] = [];
let png: Uint8Array;

const dest = (userId = 'u1', channelId = 'c1'): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId, applicationId: 'app' });
const inv = (input: Invocation['input'], extra: Partial<Invocation> = {}): Invocation => ({
  input, destination: dest(), dedupeKey: randomUUID(), isAdmin: false, ...extra,
});
const quietPort = (): PlatformPort & { delivered: JobResult[] } => {
  const delivered: JobResult[] = [];
  return { platform: 'discord', delivered, showProgress: async () => undefined, deliver: async (r) => void delivered.push(r) };
};
function core(opts: Partial<CoreOptions> = {}, overrides: Record<string, unknown> = {}): Core {
  const prefix = `t-edges-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const { limits, ...rest } = overrides as { limits?: Record<string, unknown> };
  const config = loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, user: open, workspace: open, ...limits }, ...rest } });
  const c = createCore({ config, secrets: { REDIS_URL: url }, ports: [quietPort()], redis, log: silent, ...opts });
  cores.push(c);
  return c;
}
const jobId = (reply: unknown) => (reply as { jobId: string }).jobId;
const data = async (c: Core, id: string) => (await c.queue.getJob(id))?.data as JobRequest | undefined;
function logged(): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  return { lines, log: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }) };
}
async function handedOver(c: Core, id: string): Promise<JobResult | undefined> {
  const q = createDeliveryQueue(c.config, redis, QueueNames.delivery('discord'));
  try {
    return (await q.getJob(id))?.data;
  } finally {
    await q.close();
  }
}

beforeAll(async () => {
  redis = createRedis(url);
  png = new Uint8Array(await sharp({ create: { width: 32, height: 32, channels: 3, background: '#5a0' } }).png().toBuffer());
});
afterAll(async () => {
  for (const c of cores) await c.stop();
  for (const p of prefixes) {
    const keys = await redis.keys(`${p}:*`);
    if (keys.length) await redis.del(...keys);
  }
  await closeRedis(redis);
});

describe('cache entries', () => {
  it('serves an image entry as a new output blob, and logs it as served from the cache', async () => {
    const { log, lines } = logged();
    const c = core({ log });
    await c.cache.publishModel('m', 'w');
    const first = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a vole', seed: 1 }))));
    await c.cache.put('m', (await digestOf(c.blobs, first!))!, { kind: 'image', width: 32, height: 32 }, png);
    const again = inv({ command: 'imagine', prompt: 'a vole', seed: 1 });
    expect(await c.handle(again)).toMatchObject({ text: CACHED_TEXT });
    const id = jobIdFor('discord', again.dedupeKey);
    expect((await handedOver(c, id))!.image!.blobKey).toMatch(new RegExp(`^${c.config.queue.prefix}:blob:output:`));
    expect(lines.find((l) => l.msg === 'served without a job')).toMatchObject({ jobId: id, served: 'cache' });
  });

  it('counts an image entry without its PNG, or an image under a question\'s address, as a miss', async () => {
    const c = core({}, { cache: { singleFlight: false } });
    await c.cache.publishModel('m', 'w');
    const first = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a mole', seed: 2 }))));
    await c.cache.put('m', (await digestOf(c.blobs, first!))!, { kind: 'image', width: 32, height: 32 }); // no PNG
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a mole', seed: 2 }))).toMatchObject({ kind: 'queued', position: 2 });
    const ask = () => inv({ command: 'ask', question: 'what?', image: { bytes: png } });
    const q = await data(c, jobId(await c.handle(ask())));
    await c.cache.put('m', (await digestOf(c.blobs, q!))!, { kind: 'image', width: 32, height: 32 }, png);
    expect(await c.handle(ask())).toMatchObject({ kind: 'queued', position: 4 });
  });
});

describe('single flight', () => {
  it('keeps a queued leader\'s flight past the admission grace, and releaseFollowers says how many it told', async () => {
    const c = core({}, { limits: { admitGraceMs: 5_000 } });
    const leader = await data(c, jobId(await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }))));
    const digest = (await digestOf(c.blobs, leader!))!;
    expect(await redis.pttl(`${c.config.queue.prefix}:{cache}:f:${digest}`)).toBeGreaterThan(60_000);
    await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }, { destination: dest('u2') }));
    await c.handle(inv({ command: 'imagine', prompt: 'a finch', seed: 5 }, { destination: dest('u3') }));
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: leader!.id, kind: 'imagine', destination: leader!.destination, status: 'failed',
      error: { code: 'internal', message: 'x', userFacing: true }, timingsMs: {}, finishedAt: Date.now(),
    };
    expect(await c.releaseFollowers(leader!, result)).toBe(2);
    const kept = { ...leader!, destination: { ...dest(), retentionSeconds: 60 } } as JobRequest; // not cacheable
    expect(await c.releaseFollowers(kept, result)).toBe(0);
  });
});

describe('acceptReplicas', () => {
  it('names the job and the replica settings in its warning', async () => {
    const r = createRedis(url);
    r.wait = (async () => 0) as typeof r.wait;
    const { log, lines } = logged();
    try {
      const c = core({ redis: r, log }, { redis: { acceptReplicas: 1, acceptReplicaWaitMs: 70 } });
      const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'x' })));
      expect(lines.find((l) => l.level === 40)).toMatchObject({ jobId: id, acceptReplicas: 1, acceptReplicaWaitMs: 70 });
      await c.stop();
    } finally {
      await closeRedis(r);
    }
  });
});

describe('cancel', () => {
  it('frees the cancelled job\'s slot', async () => {
    const c = core({}, { limits: { user: { ...open, maxConcurrent: 1 } } });
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'a' })));
    expect(await c.handle(inv({ command: 'imagine', prompt: 'b' }))).toMatchObject({ kind: 'error' });
    await c.handle(inv({ command: 'cancel', jobId: id }));
    expect(await c.handle(inv({ command: 'imagine', prompt: 'c' }))).toMatchObject({ kind: 'queued' });
  });

  it('leaves a job it cannot remove (a worker holds its lock) to the worker: no "cancelled" result', async () => {
    const c = core();
    const id = jobId(await c.handle(inv({ command: 'imagine', prompt: 'locked' })));
    await redis.set(`${c.config.queue.prefix}:jobs:${id}:lock`, 'a-worker-token', 'PX', 30_000);
    expect(await c.handle(inv({ command: 'cancel', jobId: id }))).toEqual({ kind: 'text', text: 'Cancelling…', private: true });
    expect(await c.queue.getJob(id)).toBeDefined();
    expect(await handedOver(c, id)).toBeUndefined();
  });
});

describe('duplicates', () => {
  it('answers a repeated interaction without a second admission: it takes no rate-limit token', async () => {
    const c = core({}, { limits: { user: { ...open, requestsPerWindow: 1, burst: 1 } } });
    const first = inv({ command: 'imagine', prompt: 'once' });
    const a = await c.handle(first);
    expect(a).toMatchObject({ kind: 'queued', position: 1 });
    expect(await c.handle({ ...first })).toEqual(a);
  });
});

