// Everything an end-to-end Discord test needs, real except Discord itself: the fake Discord on loopback, the
// real adapter (real discord.js) and core on real Redis under a unique queue prefix, and a real worker process
// (`worker/main.ts`) running the test double pipeline. stop() closes every handle and deletes the keys.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createDiscordAdapter, type DiscordAdapter } from '../../../bots/discord/adapter.ts';
import { createCore, type Core } from '../../../bots/core/submit.ts';
import { deepMerge, loadConfig, type Config, type DeepPartial } from '../../../src/config/load.ts';
import { createLogger, type Logger } from '../../../src/log.ts';
import { closeRedis, createRedis } from '../../../src/redis.ts';
import { startWorkerProcess, stopProcess, type Proc } from '../../doubles/spine-harness.ts';
import { FakeDiscord, type FakeDiscordOptions } from './server.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const OFF = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };

export interface DiscordHarnessOptions {
  fake?: FakeDiscordOptions;
  /** Test double knobs (test/doubles/pipeline.ts). @defaultValue { stepDelayMs: 40, maxSteps: 4 } */
  pipelineExtra?: Record<string, unknown>;
  /** Extra config for the bot (and worker); a function gets the started fake (for its ids). */
  config?: DeepPartial<Config> | ((fake: FakeDiscord) => DeepPartial<Config>);
  /** Start the worker process. @defaultValue true */
  worker?: boolean;
  /** The bot's logger (adapter and core). @defaultValue a logger at `warn` */
  log?: Logger;
  /** The adapter's `onFatal` (bots/main.ts exits on it). */
  onFatal?: (error: Error) => void;
  /** discord.identifyWindowMs, for tests that log in again several times in a row. @defaultValue Discord's 5 s */
  identifyWindowMs?: number;
  /** Runs on the started fake before the bot logs in (servers the bot is already in: `addGuild`). */
  beforeLogin?: (fake: FakeDiscord) => void;
}

export interface DiscordHarness {
  fake: FakeDiscord;
  adapter: DiscordAdapter;
  core: Core;
  config: Readonly<Config>;
  prefix: string;
  /** Log lines of the worker process (for diagnosing a failure). */
  workerOutput(): string;
  startWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  /** Jobs ever added to the jobs queue under this harness's prefix. */
  jobCount(): Promise<number>;
  stop(): Promise<void>;
}

export async function startDiscordHarness(options: DiscordHarnessOptions = {}): Promise<DiscordHarness> {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  const fake = await FakeDiscord.start({ heartbeatIntervalMs: 5_000, ...options.fake });
  options.beforeLogin?.(fake);
  const base: DeepPartial<Config> = {
    logLevel: 'warn',
    queue: { prefix, backoffMs: 200, deliveryBackoffMs: 200 },
    discord: {
      enabled: true,
      apiBaseUrl: fake.apiBase,
      downloadHosts: [new URL(fake.origin).host],
      progressEditIntervalMs: 50,
      restRetries: 1,
      ...(options.identifyWindowMs !== undefined ? { identifyWindowMs: options.identifyWindowMs } : {}),
    },
    // Rate limits off (0 = off) unless a test sets them: tests fire many commands as one user within a minute.
    limits: { channel: OFF, user: OFF, workspace: OFF },
    http: { botPort: 0 },
    worker: { pipelineModule: 'test/doubles/pipeline.ts', pipelineExtra: options.pipelineExtra ?? { stepDelayMs: 40, maxSteps: 4 }, healthPort: 0 },
  };
  const overrides = deepMerge(
    base as Record<string, unknown>,
    (typeof options.config === 'function' ? options.config(fake) : (options.config ?? {})) as Record<string, unknown>,
  ) as DeepPartial<Config>;
  const config = loadConfig({ overrides, env: {} });
  const secrets = { REDIS_URL, DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId };
  const log = options.log ?? createLogger('test-discord', 'warn');
  const adapter = await createDiscordAdapter({ config, secrets, log, onFatal: options.onFatal });
  const core = createCore({ config, secrets, ports: [adapter.port], log });
  await core.start();
  await adapter.start(core);

  const dir = mkdtempSync(join(tmpdir(), 'discord-harness-'));
  const configFile = join(dir, 'worker.yaml');
  writeFileSync(configFile, stringify(overrides));
  let worker: Proc | undefined;
  let lastWorker: Proc | undefined;

  async function startWorker(): Promise<void> {
    worker = lastWorker = await startWorkerProcess(configFile);
  }

  async function stopWorker(): Promise<void> {
    const w = worker;
    worker = undefined;
    await stopProcess(w);
  }

  if (options.worker !== false) await startWorker();

  return {
    fake,
    adapter,
    core,
    config,
    prefix,
    workerOutput: () => lastWorker?.output() ?? '',
    startWorker,
    stopWorker,
    async jobCount() {
      const counts = await core.queue.getJobCounts();
      return Object.values(counts).reduce((a, b) => a + b, 0);
    },
    async stop() {
      await stopWorker();
      await adapter.stop();
      await core.stop();
      await fake.close();
      rmSync(dir, { recursive: true, force: true });
      const redis = createRedis(REDIS_URL, 'test-cleanup');
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      await closeRedis(redis);
    },
  };
}
