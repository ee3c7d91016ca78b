// Everything an end-to-end Discord test needs, real except Discord itself: the fake Discord on loopback, the
// real adapter (real discord.js) and core on real Redis under a unique queue prefix, and a real worker process
// (`worker/main.ts`) running the test double pipeline. stop() closes every handle and deletes the keys.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createDiscordAdapter, type DiscordAdapter } from '../../../bots/discord/adapter.ts';
import { createCore, type Core } from '../../../bots/core/submit.ts';
import { deepMerge, loadConfig, repoRoot, type Config, type DeepPartial } from '../../../src/config/load.ts';
import { createLogger } from '../../../src/log.ts';
import { closeRedis, createRedis } from '../../../src/redis.ts';
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
  const base: DeepPartial<Config> = {
    logLevel: 'warn',
    queue: { prefix, backoffMs: 200, deliveryBackoffMs: 200 },
    discord: {
      enabled: true,
      apiBaseUrl: fake.apiBase,
      downloadHosts: [new URL(fake.origin).host],
      progressEditIntervalMs: 50,
      restRetries: 1,
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
  const log = createLogger('test-discord', 'warn');
  const adapter = await createDiscordAdapter({ config, secrets, log });
  const core = createCore({ config, secrets, ports: [adapter.port], log });
  await core.start();
  await adapter.start(core);

  const dir = mkdtempSync(join(tmpdir(), 'discord-harness-'));
  const configFile = join(dir, 'worker.yaml');
  writeFileSync(configFile, stringify(overrides));
  let worker: ChildProcess | undefined;
  let output = '';

  async function startWorker(): Promise<void> {
    // The tsx CLI (not `node --import tsx`: worker/thread-host.ts then cannot load its thread's TypeScript).
    const child = spawn(join(repoRoot, 'node_modules/.bin/tsx'), ['worker/main.ts'], {
      cwd: repoRoot,
      env: { ...process.env, BLIP3O_CONFIG: configFile, REDIS_URL, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    worker = child;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker did not start in 30 s:\n${output}`)), 30_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.length > 200_000) output = output.slice(-100_000);
        if (output.includes('worker ready')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`worker exited with ${code}:\n${output}`));
      });
    });
    child.removeAllListeners('exit');
  }

  async function stopWorker(): Promise<void> {
    const child = worker;
    worker = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  if (options.worker !== false) await startWorker();

  return {
    fake,
    adapter,
    core,
    config,
    prefix,
    workerOutput: () => output,
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
