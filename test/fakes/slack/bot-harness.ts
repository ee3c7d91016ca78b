// Everything an end-to-end Slack test needs, real except Slack itself: the fake Slack on loopback, the real
// adapter (real @slack/bolt) and core on real Redis under a unique queue prefix, and a real worker process
// (`worker/main.ts`) running the test double pipeline. stop() closes every handle and deletes the keys.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createSlackAdapter, type SlackAdapter } from '../../../bots/slack/adapter.ts';
import { createCore, type Core } from '../../../bots/core/submit.ts';
import { deepMerge, loadConfig, type Config, type DeepPartial } from '../../../src/config/load.ts';
import { createLogger, type Logger } from '../../../src/log.ts';
import { closeRedis, createRedis } from '../../../src/redis.ts';
import { freePort } from '../../doubles/free-port.ts';
import { startWorkerProcess, stopProcess, type Proc } from '../../doubles/spine-harness.ts';
import { FakeSlack, type FakeSlackOptions } from './server.ts';

export const SIGNING_SECRET = 'fake-signing-secret';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface HarnessOptions {
  mode: 'socket' | 'http';
  /** Test double knobs (test/doubles/pipeline.ts). @defaultValue { stepDelayMs: 40, maxSteps: 4 } */
  pipelineExtra?: Record<string, unknown>;
  ackWindowMs?: number;
  /** Start the worker process. @defaultValue true */
  worker?: boolean;
  /** More config, layered over the harness's own (e.g. limits). */
  config?: DeepPartial<Config>;
  /** The bot's logger (adapter and core). @defaultValue a logger at `warn` */
  log?: Logger;
  /** The fake workspace (e.g. `enterpriseId`: one on Enterprise Grid); ackWindowMs above wins. */
  fake?: FakeSlackOptions;
}

export interface SlackHarness {
  fake: FakeSlack;
  adapter: SlackAdapter;
  core: Core;
  config: Readonly<Config>;
  prefix: string;
  /** Start (or restart) the worker process. */
  startWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  /** SIGKILL the worker process (a crash: its running job is left to the stall check). */
  killWorker(): Promise<void>;
  /** Everything the worker processes started so far printed (stdout and stderr). */
  workerOutput(): string;
  stop(): Promise<void>;
}

export async function startSlackHarness(options: HarnessOptions): Promise<SlackHarness> {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  const fake = new FakeSlack({ ...options.fake, ackWindowMs: options.ackWindowMs });
  await fake.start();
  const overrides: DeepPartial<Config> = {
    logLevel: 'warn',
    queue: { prefix, backoffMs: 200, deliveryBackoffMs: 200 },
    slack: { enabled: true, mode: options.mode, apiUrl: fake.apiUrl, httpPort: await freePort(), downloadHosts: [fake.host], progressUpdateIntervalMs: 50 },
    http: { botPort: 0, host: '127.0.0.1' },
    worker: { pipelineModule: 'test/doubles/pipeline.ts', pipelineExtra: options.pipelineExtra ?? { stepDelayMs: 40, maxSteps: 4 }, healthPort: 0 },
  };
  if (options.config) Object.assign(overrides, deepMerge(overrides as Record<string, unknown>, options.config as Record<string, unknown>));
  const config = loadConfig({ overrides, env: {} });
  const secrets = { REDIS_URL, SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken, SLACK_SIGNING_SECRET: SIGNING_SECRET };
  const log = options.log ?? createLogger('test-slack', 'warn');
  const adapter = await createSlackAdapter(
    { config, secrets, log },
    { clientPingTimeoutMs: 300, retryConfig: { retries: 3, factor: 1, minTimeout: 20, maxTimeout: 20 } },
  );
  const core = createCore({ config, secrets, ports: [adapter.port], log, ...adapter.coreOptions });
  await core.start();
  await adapter.start(core);

  const dir = mkdtempSync(join(tmpdir(), 'slack-harness-'));
  const configFile = join(dir, 'worker.yaml');
  writeFileSync(configFile, stringify(overrides));
  let worker: Proc | undefined;
  const outputs: Proc[] = [];

  async function startWorker(): Promise<void> {
    worker = await startWorkerProcess(configFile);
    outputs.push(worker);
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
    startWorker,
    stopWorker,
    async killWorker() {
      const w = worker;
      worker = undefined;
      await w?.kill('SIGKILL');
    },
    workerOutput: () => outputs.map((p) => p.output()).join('\n'),
    async stop() {
      await stopWorker();
      await adapter.stop();
      await core.stop();
      await fake.stop();
      rmSync(dir, { recursive: true, force: true });
      const redis = createRedis(REDIS_URL, 'test-cleanup');
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      await closeRedis(redis);
    },
  };
}
