// Helpers for end-to-end tests over real Redis: a per-test config file, real worker processes
// (`node --import tsx worker/main.ts`, killable with SIGKILL), and a PlatformPort that records deliveries.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig, repoRoot, type DeepPartial } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import type { Destination, JobProgress, JobResult } from '../../src/jobs/contract.ts';
import type { PlatformPort } from '../../bots/core/port.ts';
import { deleteKeys, type Redis } from '../../src/redis.ts';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface Harness {
  prefix: string;
  dir: string;
  configFile: string;
  config: Readonly<Config>;
  runLog: string;
}

const NO_LIMIT = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };

/** A unique queue prefix and a config file (BLIP3O_CONFIG) pointing the worker at the test double. */
export function makeHarness(overrides: DeepPartial<Config> & { worker?: { pipelineExtra?: Record<string, unknown> } }): Harness {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), 'spine-'));
  const runLog = join(dir, 'runs.jsonl');
  const tree = {
    logLevel: 'warn',
    // No health servers, so several worker processes can run side by side.
    http: { botPort: 0 },
    ...overrides,
    queue: { prefix, ...overrides.queue },
    // limits off unless a test sets them (the spine tests submit many jobs as one user; issue 8 tests its limits)
    limits: { channel: NO_LIMIT, user: NO_LIMIT, workspace: NO_LIMIT, ...overrides.limits },
    // result cache and single flight off unless a test turns them on: spine tests repeat identical requests on purpose
    cache: { enabled: false, singleFlight: false, ...overrides.cache },
    worker: {
      pipelineModule: 'test/doubles/pipeline.ts',
      healthPort: 0,
      ...overrides.worker,
      pipelineExtra: { runLogFile: runLog, ...overrides.worker?.pipelineExtra },
    },
  };
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, stringify(tree));
  const config = loadConfig({ env: { BLIP3O_CONFIG: configFile } });
  return { prefix, dir, configFile, config, runLog };
}

export interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves when the process prints `line` (a substring) on stdout/stderr. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The process's exit code (the signal's name if one ended it), or 'still running' after `ms`. */
export const exitWithin = (p: Proc, ms: number): Promise<number | string | null> =>
  Promise.race([
    new Promise<number | string | null>((resolve) => {
      if (p.child.exitCode !== null || p.child.signalCode !== null) resolve(p.child.exitCode ?? p.child.signalCode);
      else p.child.once('exit', (code, signal) => resolve(code ?? signal));
    }),
    new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), ms)),
  ]);

/** Spawn `node --import tsx <script> …args` with BLIP3O_CONFIG set. */
export function spawnTs(script: string, h: Harness, args: string[] = [], env: Record<string, string> = {}): Proc {
  return spawnWithConfig(script, h.configFile, args, env);
}

/** A real worker process (test double or tiny pipeline, per the config file), resolved once it takes jobs. */
export async function startWorkerProcess(configFile: string, env: Record<string, string> = {}): Promise<Proc> {
  const p = spawnWithConfig('worker/main.ts', configFile, [], env);
  await p.waitFor('worker ready', 120_000); // tsx compiles the worker and each model thread: slow on a loaded CI box
  return p;
}

/** SIGTERM (the worker finishes its jobs), then SIGKILL after 10 s. */
export async function stopProcess(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await p.kill('SIGTERM');
  clearTimeout(timer);
}

/** Spawn `node --import tsx <script> …args` with BLIP3O_CONFIG=configFile. */
export function spawnWithConfig(script: string, configFile: string, args: string[] = [], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: repoRoot,
    env: { ...process.env, BLIP3O_CONFIG: configFile, REDIS_URL, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const watchers: { text: string; resolve: () => void }[] = [];
  const onData = (b: Buffer) => {
    out += b.toString();
    for (const w of [...watchers]) if (out.includes(w.text)) {
      watchers.splice(watchers.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return {
    child,
    output: () => out,
    waitFor(text: string, timeoutMs = 45_000) {
      if (out.includes(text)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for "${text}" from ${script}; output:\n${out.slice(-3000)}`)), timeoutMs);
        watchers.push({ text, resolve: () => (clearTimeout(timer), resolve()) });
        child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before "${text}"; output:\n${out.slice(-3000)}`)));
      });
    },
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill(signal);
      });
    },
  };
}

export const startWorker = (h: Harness, env: Record<string, string> = {}): Promise<Proc> => startWorkerProcess(h.configFile, env);

/** Runs recorded by the test double (one line per generate/understand call, with the worker's pid). */
export function runs(h: Harness): { kind: string; prompt?: string; question?: string; pid: number }[] {
  if (!existsSync(h.runLog)) return [];
  return readFileSync(h.runLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** A PlatformPort that records every deliver call (the count a real platform would show as posts). */
export class RecordingPort implements PlatformPort {
  readonly deliveries: { result: JobResult; image?: Uint8Array }[] = [];
  readonly progress: JobProgress[] = [];
  private readonly waiters = new Map<string, (r: JobResult) => void>();
  constructor(readonly platform: 'cli' | 'discord' | 'slack' = 'cli') {}
  async showProgress(_d: Destination, p: JobProgress) {
    this.progress.push(p);
  }
  async deliver(result: JobResult, image: Uint8Array | undefined) {
    this.deliveries.push({ result, image });
    this.waiters.get(result.jobId)?.(result);
  }
  count(jobId: string): number {
    return this.deliveries.filter((d) => d.result.jobId === jobId).length;
  }
  waitFor(jobId: string, timeoutMs = 30_000): Promise<JobResult> {
    const done = this.deliveries.find((d) => d.result.jobId === jobId);
    if (done) return Promise.resolve(done.result);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no delivery for ${jobId} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.set(jobId, (r) => (clearTimeout(timer), resolve(r)));
    });
  }
}

/** Delete every key under the prefix (SCAN, not KEYS; every primary of a Cluster). */
export async function cleanup(redis: Redis, prefix: string): Promise<void> {
  await deleteKeys(redis, `${prefix}:*`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
