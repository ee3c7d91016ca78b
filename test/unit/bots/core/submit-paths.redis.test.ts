// The rest of core.handle()'s paths over real Redis: /describe, the image size limit's edge, channel settings that
// travel with the job (retention, no-log; never onto a CLI destination), BullMQ options from jobOptions, the place
// in line when the scheduler has none, cancelling a held or a plain waiting job, how errors are answered and logged,
// the admin command routing, the delivery consumers start() opens, and whose Redis stop() closes.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Invocation, PlatformPort } from '../../../../bots/core/port.ts';
import { DESCRIBE_QUESTION } from '../../../../bots/core/requests.ts';
import { CACHED_TEXT, createCore, type Core, type CoreOptions } from '../../../../bots/core/submit.ts';
import { digestOf } from '../../../../src/cache/fanout.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import { UserError } from '../../../../src/errors.ts';
import { QueueNames, type Destination, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
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
const cliDest = (clientId = 'cli-1'): Destination => ({ platform: 'cli', clientId, channelId: 'local', userId: 'me' });
const inv = (input: Invocation['input'], extra: Partial<Invocation> = {}): Invocation => ({
  input, destination: dest(), dedupeKey: randomUUID(), isAdmin: false, ...extra,
});
const imagine = (prompt = 'a fox'): Invocation['input'] => ({ command: 'imagine', prompt });
const quietPort = (platform: PlatformPort['platform'] = 'discord'): PlatformPort & { delivered: JobResult[] } => {
  const delivered: JobResult[] = [];
  return { platform, delivered, showProgress: async () => undefined, deliver: async (r) => void delivered.push(r) };
};

function configFor(overrides: Record<string, unknown> = {}) {
  const prefix = `t-paths-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  return loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, user: open, workspace: open }, ...overrides } });
}
function core(opts: Partial<CoreOptions> = {}, overrides: Record<string, unknown> = {}): Core {
  const c = createCore({ config: configFor(overrides), secrets: { REDIS_URL: url }, ports: [quietPort()], redis, log: silent, ...opts });
  cores.push(c);
  return c;
}
const data = async (c: Core, jobId: string) => (await c.queue.getJob(jobId))?.data as JobRequest | undefined;
const queuedId = (reply: unknown) => (reply as { jobId: string }).jobId;
function logged(level = 'info'): { log: Logger; lines: { level: number; msg: string; [k: string]: unknown }[] } {
  const lines: { level: number; msg: string }[] = [];
  return { lines, log: pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }) };
}

beforeAll(async () => {
  redis = createRedis(url);
  png = new Uint8Array(await sharp({ create: { width: 32, height: 32, channels: 3, background: '#a50' } }).png().toBuffer());
});
afterAll(async () => {
  for (const c of cores) await c.stop();
  for (const p of prefixes) {
    const keys = await redis.keys(`${p}:*`);
    if (keys.length) await redis.del(...keys);
  }
  await closeRedis(redis);
});

describe('core.handle: requests', () => {
  it('queues /describe as a describe-mode question about the stored image', async () => {
    const c = core();
    const d = await data(c, queuedId(await c.handle(inv({ command: 'describe', image: { bytes: png } }))));
    expect(d).toMatchObject({ kind: 'ask', mode: 'describe', question: DESCRIBE_QUESTION });
    expect(await c.blobs.get((d as Extract<JobRequest, { kind: 'ask' }>).imageKey)).toEqual(png);
    for (const command of ['describe', 'ask'] as const) {
      const bad = await c.handle(inv({ command, question: 'q', image: { bytes: Uint8Array.from([1, 2, 3]) } } as Invocation['input']));
      expect(bad).toMatchObject({ kind: 'error', private: true }); // not an image: checked before anything is stored
    }
  });

  it('accepts an image of exactly the size limit', async () => {
    const c = core({}, { understanding: { maxInputImageBytes: png.byteLength } });
    expect(await c.handle(inv({ command: 'ask', question: 'q', image: { bytes: png, sizeBytes: png.byteLength } }))).toMatchObject({ kind: 'queued' });
    expect(await c.handle(inv({ command: 'ask', question: 'q', image: { bytes: png, sizeBytes: png.byteLength + 1 } }))).toMatchObject({ kind: 'error' });
  });

  it('carries the channel\'s retention and no-log settings in the job, and keeps the image no longer than the retention', async () => {
    const c = core();
    await c.settings.set('channel', dest(), { retentionSeconds: 3600, noLog: true });
    const a = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: png } }))));
    expect(a!.destination).toEqual({ ...dest(), retentionSeconds: 3600, noLog: true });
    const ttl = await redis.ttl((a as Extract<JobRequest, { kind: 'vary' }>).imageKey);
    expect(ttl).toBeGreaterThan(3000);
    expect(ttl).toBeLessThanOrEqual(3600);
    await c.settings.set('channel', dest(), { retentionSeconds: 3600 });
    expect((await data(c, queuedId(await c.handle(inv(imagine())))))!.destination).toEqual({ ...dest(), retentionSeconds: 3600 });
    expect(await redis.zcard(`${c.config.queue.prefix}:retention`)).toBe(2); // both scheduled for purging
    await c.settings.set('channel', dest('u1', 'c2'), {});
    expect((await data(c, queuedId(await c.handle(inv(imagine(), { destination: dest('u1', 'c2') })))))!.destination).toEqual(dest('u1', 'c2'));
    expect(await redis.zcard(`${c.config.queue.prefix}:retention`)).toBe(2);
  });

  it('never puts channel settings onto a CLI destination', async () => {
    const c = core({ ports: [quietPort('cli')], cliClientId: 'cli-1' });
    await c.settings.set('channel', cliDest(), { retentionSeconds: 3600, noLog: true });
    const reply = await c.handle(inv(imagine(), { destination: cliDest() }));
    expect(reply).toMatchObject({ kind: 'queued' });
    expect((await data(c, queuedId(reply)))!.destination).toEqual(cliDest());
  });

  it('adds the job with the options jobOptions gives', async () => {
    const c = core({ jobOptions: async () => ({ lifo: true }) });
    const job = await c.queue.getJob(queuedId(await c.handle(inv(imagine()))));
    expect(job!.opts.lifo).toBe(true);
  });

  it('asks BullMQ for the place when the scheduler has none (a worker took the job already), and says "Started." at 0', async () => {
    const c = core();
    c.gate.enqueued = async () => ({ state: 'none' }); // the scheduler does not line it up; BullMQ keeps it parked
    const reply = await c.handle(inv(imagine()));
    expect(reply).toEqual({ kind: 'queued', jobId: queuedId(reply), position: 0, text: 'Started.' });
  });

  it('treats a cache entry of the other kind as a miss, and gives a cached variation without prompt its own alt text', async () => {
    const c = core({}, { cache: { singleFlight: false } });
    await c.cache.publishModel('model-b', 'worker-1');
    const first = await data(c, queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a moth', seed: 3 }))));
    await c.cache.put('model-b', (await digestOf(c.blobs, first!))!, { kind: 'answer', text: 'not an image', tokenCount: 1 });
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a moth', seed: 3 }))).toMatchObject({ kind: 'queued', position: 2 });

    const vary = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: png }, seed: 4 }))));
    await c.cache.put('model-b', (await digestOf(c.blobs, vary!))!, { kind: 'image', width: 32, height: 32 }, png);
    const again = inv({ command: 'vary', image: { bytes: png }, seed: 4 });
    expect(await c.handle(again)).toMatchObject({ text: CACHED_TEXT });
    const q = createDeliveryQueue(c.config, redis, QueueNames.delivery('discord'));
    const served = (await q.getJob(jobIdFor('discord', again.dedupeKey)))?.data;
    await q.close();
    expect(served?.image).toMatchObject({ altText: 'A variation of your image', prompt: '' });
  });
});

describe('core.handle: cancel', () => {
  const waitFor = async (what: () => boolean) => {
    for (let i = 0; i < 300 && !what(); i++) await new Promise((r) => setTimeout(r, 20));
  };

  it('removes a job held in a paused channel, and one waiting without a priority', async () => {
    const port = quietPort();
    const c = core({ ports: [port] });
    await c.start();
    await c.gate.scheduler.pause('discord:g:c1');
    const held = queuedId(await c.handle(inv(imagine('held'))));
    expect(await c.queue.getJobState(held)).toBe('delayed');
    await c.handle(inv({ command: 'cancel', jobId: held }));
    expect(await c.queue.getJob(held)).toBeUndefined();
    // A job added without the scheduler's parking (as an older bot would): BullMQ's plain wait list.
    const template = (await data(c, queuedId(await c.handle(inv(imagine('template'), { destination: dest('u1', 'c9') })))))!;
    const plain = await c.queue.add('imagine', { ...template, id: 'jplain1', destination: dest() }, { jobId: 'jplain1' });
    expect(await plain.getState()).toBe('waiting');
    await c.handle(inv({ command: 'cancel', jobId: 'jplain1' }));
    expect(await c.queue.getJob('jplain1')).toBeUndefined();
    await waitFor(() => port.delivered.length >= 2);
    expect(port.delivered.map((r) => [r.jobId, r.status]).sort()).toEqual([[held, 'cancelled'], ['jplain1', 'cancelled']].sort());
  });
});

describe('core.handle: errors and routing', () => {
  it('answers a lost Redis connection with a retry hint, a UserError without control characters, anything else with a logged ref', async () => {
    const { log, lines } = logged('warn');
    let fault: Error = new Error('x');
    const c = core({ admit: async () => Promise.reject(fault), log });
    fault = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    expect(await c.handle(inv(imagine()))).toEqual({
      kind: 'error', private: true,
      text: 'I lost my connection to the job queue for a moment (it may be failing over). Nothing was queued; please try again in a few seconds.',
    });
    expect(lines.at(-1)).toMatchObject({ level: 40, msg: 'command refused: Redis connection lost', err: 'connect ECONNREFUSED 127.0.0.1:6379' });
    fault = new UserError('forbidden', 'No\u0007 bells\u001b[31m here.');
    expect(await c.handle(inv(imagine()))).toEqual({ kind: 'error', text: 'No bells[31m here.', private: true });
    fault = new Error('boom');
    const reply = (await c.handle(inv(imagine()))) as { text: string };
    const ref = /^Something went wrong \(ref ([0-9a-f]{8})\)\.$/.exec(reply.text)?.[1];
    expect(ref).toBeDefined();
    expect(lines.at(-1)).toMatchObject({ level: 50, msg: 'command failed', ref, err: 'boom' });
  });

  it('logs each queued job and each request served without a job', async () => {
    const { log, lines } = logged();
    const c = core({ log });
    const a = queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a newt', seed: 9 })));
    expect(lines.find((l) => l.msg === 'queued')).toMatchObject({ jobId: a, kind: 'imagine', channel: 'c1', position: 1 });
    const b = queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a newt', seed: 9 })));
    expect(lines.find((l) => l.msg === 'served without a job')).toMatchObject({ jobId: b, kind: 'imagine', channel: 'c1', served: 'joined' });
  });

  it('routes /settings, /budget and /usage to the built-in commands', async () => {
    const c = core();
    expect(await c.handle(inv({ command: 'settings', scope: 'user', action: 'show' }))).toMatchObject({ kind: 'text' });
    expect(await c.handle(inv({ command: 'budget', action: 'show' } as Invocation['input'], { isAdmin: true }))).toMatchObject({ kind: 'text', text: expect.stringMatching(/budget/i) });
    const usage = await c.handle(inv({ command: 'usage' } as Invocation['input'], { isAdmin: true }));
    expect(usage.kind).not.toBe('error');
  });
});

describe('core lifecycle', () => {
  it('a CLI core consumes only its own delivery queue, with the concurrency asked for', async () => {
    const c = core({ ports: [quietPort('cli')], cliClientId: 'abc', deliveryConcurrency: 2 });
    await c.start();
    expect(c.deliveryWorkers.map((w) => [w.name, w.opts.concurrency])).toEqual([['delivery-cli-abc', 2]]);
    await c.stop();
    const d = core();
    await d.start();
    expect(d.deliveryWorkers.map((w) => [w.name, w.opts.concurrency])).toEqual([['delivery-discord', 4]]);
    await d.stop();
  });

  it('closes the Redis connection it opened itself, and leaves a shared one open', async () => {
    const own = createCore({ config: configFor(), secrets: { REDIS_URL: url }, ports: [quietPort()], log: silent });
    await own.redis.ping();
    const ended = new Promise<void>((r) => own.redis.once('end', () => r()));
    await own.stop();
    await Promise.race([ended, new Promise((r) => setTimeout(r, 2_000))]); // QUIT answered and the connection closed
    expect(own.redis.status).toBe('end');
    const shared = core();
    await shared.stop();
    expect(await redis.ping()).toBe('PONG');
  });
});
