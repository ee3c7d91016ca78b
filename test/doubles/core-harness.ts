// The set-up the core's submit tests (test/unit/bots/core/submit*.redis.test.ts) share: one Redis connection and
// one small PNG per file, cores built on a unique queue prefix with every limit open unless a test sets one, and an
// afterAll that stops those cores and deletes every key under their prefixes.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { logOptions } from '../../src/log.ts';
import sharp from 'sharp';
import { afterAll, beforeAll } from 'vitest';
import type { Invocation, PlatformPort } from '../../bots/core/port.ts';
import { createCore, type Core, type CoreOptions } from '../../bots/core/submit.ts';
import { loadConfig, type DeepPartial } from '../../src/config/load.ts';
import type { Config, LimitSpec } from '../../src/config/schema.ts';
import { QueueNames, type Destination, type JobRequest, type JobResult } from '../../src/jobs/contract.ts';
import { createDeliveryQueue } from '../../src/jobs/queue.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../src/redis.ts';
import { REDIS_URL } from './spine-harness.ts';

export { REDIS_URL };

/** No rate, burst or concurrency limit (0 turns each off). */
export const OPEN_LIMIT: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };

export const SILENT_LOG: Logger = createLogger('test', 'silent');

export const coreDest = (userId = 'u1', channelId = 'c1'): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId, applicationId: 'app' });

/** A fresh interaction (its own dedupe key) from `coreDest()` unless `extra` says otherwise. */
export const invocation = (input: Invocation['input'], extra: Partial<Invocation> = {}): Invocation => ({
  input, destination: coreDest(), dedupeKey: randomUUID(), isAdmin: false, ...extra,
});

/** A port that shows no progress and keeps what it is handed to deliver. */
export function recordingPort(platform: PlatformPort['platform'] = 'discord'): PlatformPort & { delivered: JobResult[] } {
  const delivered: JobResult[] = [];
  return { platform, delivered, showProgress: async () => undefined, deliver: async (r) => void delivered.push(r) };
}

export type LogLine = { level: number; msg: string; [k: string]: unknown };

/** A logger at `level` whose lines are parsed into `lines`. */
export function capturedLog(level = 'info'): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  // the processes' own options (redaction, error serializers): a test reads what production would write
  return { lines, log: pino(logOptions('test', level), { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) }) };
}

export interface CoreHarness {
  /** The file's shared connection; read it inside a test or hook (beforeAll opens it). */
  readonly redis: Redis;
  /** A 32×32 PNG; read it inside a test or hook (beforeAll makes it). */
  readonly png: Uint8Array;
  /** A config on a fresh queue prefix, cleaned up after the file; `overrides.limits` is merged over open limits. */
  config(overrides?: DeepPartial<Config>): Readonly<Config>;
  /** A core on `config(overrides)` with the shared connection, a silent log and one recording Discord port. */
  core(opts?: Partial<CoreOptions>, overrides?: DeepPartial<Config>): Core;
  /** The request queued under `jobId`, if any. */
  data(c: Core, jobId: string): Promise<JobRequest | undefined>;
  /** The result handed to a job's Discord delivery queue (nobody consumes it in these tests). */
  handedOver(c: Core, jobId: string): Promise<JobResult | undefined>;
}

/** Registers the file's beforeAll/afterAll; prefixes are `<prefixTag>-<8 hex>`. */
export function coreHarness(prefixTag: string): CoreHarness {
  let redis: Redis | undefined;
  let png: Uint8Array | undefined;
  const prefixes: string[] = [];
  const cores: Core[] = [];

  beforeAll(async () => {
    redis = createRedis(REDIS_URL);
    png = new Uint8Array(await sharp({ create: { width: 32, height: 32, channels: 3, background: '#08f' } }).png().toBuffer());
  });
  afterAll(async () => {
    for (const c of cores) await c.stop();
    if (!redis) return;
    for (const p of prefixes) await deleteKeys(redis, `${p}:*`);
    await closeRedis(redis);
  });

  const h: CoreHarness = {
    get redis() {
      if (!redis) throw new Error('coreHarness: redis is opened in beforeAll; read it inside a test or hook');
      return redis;
    },
    get png() {
      if (!png) throw new Error('coreHarness: the PNG is made in beforeAll; read it inside a test or hook');
      return png;
    },
    config(overrides = {}) {
      const prefix = `${prefixTag}-${randomUUID().slice(0, 8)}`;
      prefixes.push(prefix);
      const { limits, queue, ...rest } = overrides;
      return loadConfig({
        env: {},
        overrides: { ...rest, queue: { ...queue, prefix }, limits: { channel: OPEN_LIMIT, user: OPEN_LIMIT, workspace: OPEN_LIMIT, ...limits } },
      });
    },
    core(opts = {}, overrides = {}) {
      const c = createCore({ config: h.config(overrides), secrets: { REDIS_URL }, ports: [recordingPort()], redis: h.redis, log: SILENT_LOG, ...opts });
      cores.push(c);
      return c;
    },
    data: async (c, jobId) => (await c.queue.getJob(jobId))?.data as JobRequest | undefined,
    async handedOver(c, jobId) {
      const q = createDeliveryQueue(c.config, h.redis, QueueNames.delivery('discord'));
      try {
        return (await q.getJob(jobId))?.data;
      } finally {
        await q.close();
      }
    },
  };
  return h;
}
