// A newcomer's first hour (issue 15), each through the real entry points as spawned processes: --help everywhere,
// no Redis (one JSON line per state change, a CLI that gives up), and a refused Slack or Discord token (a sentence
// naming the variable, a clean exit, no stack).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { freePort } from '../doubles/free-port.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { repoRoot } from '../../src/config/load.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';
import { FakeSlack } from '../fakes/slack/server.ts';

const dir = mkdtempSync(join(tmpdir(), 'newcomer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const STACK = /\n\s+at .+\(.+:\d+:\d+\)/;

function config(name: string, tree: Record<string, unknown>): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify({ logLevel: 'info', http: { botPort: 0 }, worker: { pipelineModule: 'test/doubles/pipeline.ts', healthPort: 0 }, ...tree }));
  return file;
}

interface Run {
  code: number | null;
  out: string;
  kill(): void;
  exited: Promise<void>;
  waitFor(text: string, timeoutMs: number): Promise<void>;
}

function start(args: string[], env: Record<string, string> = {}): Run {
  const { LOG_LEVEL: _, ...inherited } = process.env; // each process's own default level
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: repoRoot, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const run: Run = {
    code: null,
    out: '',
    kill: () => void child.kill('SIGKILL'),
    exited: new Promise((resolve) => child.on('exit', (code) => ((run.code = code), resolve()))),
    async waitFor(text, timeoutMs) {
      const until = Date.now() + timeoutMs;
      while (!run.out.includes(text)) {
        if (Date.now() > until || run.code !== null) throw new Error(`no "${text}" in:\n${run.out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  child.stdout.on('data', (b: Buffer) => (run.out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (run.out += b.toString()));
  return run;
}

async function finish(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Run> {
  const run = start(args, env);
  const timer = setTimeout(run.kill, timeoutMs);
  await run.exited;
  clearTimeout(timer);
  return run;
}

describe('--help everywhere', () => {
  it('worker, bots, imagine, ask, model and each model subcommand print usage and exit 0 (nothing starts)', async () => {
    const cases: [string[], RegExp][] = [
      [['worker/main.ts', '--help'], /usage: npm run worker/],
      [['bots/main.ts', '--help'], /usage: npm run bots/],
      [['bots/cli/main.ts', 'imagine', '--help'], /--seed N[\s\S]*alias --ar/],
      [['bots/cli/main.ts', 'ask', '-h'], /npm run ask -- <image file>/],
      [['worker/builder/cli.ts', '--help'], /usage: npm run model -- <subcommand>/],
      [['worker/builder/cli.ts', 'fetch', '--help'], /usage: npm run model -- fetch/],
      [['worker/builder/cli.ts', 'convert', '--help'], /usage: npm run model -- convert/],
    ];
    const runs = await Promise.all(cases.map(([args]) => finish(args, { REDIS_URL: 'redis://127.0.0.1:1' })));
    runs.forEach((r, i) => {
      expect(r.out, cases[i]![0].join(' ')).toMatch(cases[i]![1]);
      expect(r.code, cases[i]![0].join(' ')).toBe(0);
    });
  }, 240_000);

  it('a mistyped argument is refused with the usage (exit 2), not ignored', async () => {
    const [worker, imagine] = await Promise.all([
      finish(['worker/main.ts', '--bogus'], { REDIS_URL: 'redis://127.0.0.1:1' }),
      finish(['bots/cli/main.ts', 'imagine', 'a fox', '--seed', '0x10'], { REDIS_URL: 'redis://127.0.0.1:1' }),
    ]);
    expect(worker.code).toBe(2);
    expect(worker.out).toMatch(/Unknown argument "--bogus"[\s\S]*usage: npm run worker/);
    expect(imagine.code).toBe(2);
    expect(imagine.out).toMatch(/--seed needs a whole number/);
    expect(imagine.out).not.toMatch(STACK);
  }, 240_000);
});

describe('no Redis', () => {
  it('the CLI says it cannot reach Redis (one JSON line), gives up after queue.cliRedisWaitMs with what to do, no stacks', async () => {
    const port = await freePort();
    const file = config('cli-no-redis', { queue: { cliRedisWaitMs: 2000 } });
    const run = await finish(['bots/cli/main.ts', 'imagine', 'a fox'], { BLIP3O_CONFIG: file, REDIS_URL: `redis://:secret@127.0.0.1:${port}` });
    expect(run.code).toBe(3);
    const lines = run.out.trim().split('\n');
    const json = lines.filter((l) => l.startsWith('{'));
    expect(json).toHaveLength(1);
    expect(JSON.parse(json[0]!)).toMatchObject({ msg: `cannot reach Redis at 127.0.0.1:${port}, retrying` });
    expect(run.out).toMatch(new RegExp(`Cannot reach Redis at 127.0.0.1:${port} after 2 s\\. Start it`));
    expect(run.out).not.toMatch(STACK);
    expect(run.out).not.toContain('secret');
  }, 180_000);

  it('the worker logs one line when Redis is unreachable and one when it is back, as JSON, no stacks', async () => {
    const port = await freePort();
    const file = config('worker-no-redis', {});
    const worker = start(['worker/main.ts'], { BLIP3O_CONFIG: file, REDIS_URL: `redis://127.0.0.1:${port}` });
    let redis: ReturnType<typeof spawn> | undefined;
    try {
      await worker.waitFor('cannot reach Redis', 120_000);
      // several reconnect attempts (ioredis backs off 50, 100, 150… ms: about eight in 2 s), each a connection error
      await new Promise((r) => setTimeout(r, 2000));
      redis = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      await worker.waitFor('reachable again', 60_000);
      // then its start goes on to take jobs: every connection it opens is up, none left to log a second line
      await worker.waitFor('worker ready', 60_000);
    } finally {
      worker.kill();
      redis?.kill('SIGKILL');
      await worker.exited;
    }
    const lines = worker.out.trim().split('\n');
    expect(lines.filter((l) => l.includes('cannot reach Redis'))).toHaveLength(1);
    expect(lines.filter((l) => l.includes('reachable again'))).toHaveLength(1);
    for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
    expect(worker.out).not.toMatch(STACK);
  }, 240_000);
});

describe('a refused platform token', () => {
  it('Slack: a sentence naming SLACK_BOT_TOKEN and a clean exit, no uncaught invalid_auth stack', async () => {
    const fake = new FakeSlack();
    await fake.start();
    try {
      const file = config('slack-bad-token', { queue: { prefix: `t-newcomer-${process.pid}` }, discord: { enabled: false }, slack: { enabled: true, mode: 'http', httpPort: await freePort(), apiUrl: fake.apiUrl } });
      const run = await finish(['bots/main.ts'], { BLIP3O_CONFIG: file, SLACK_BOT_TOKEN: 'xoxb-wrong', SLACK_SIGNING_SECRET: 's', DISCORD_TOKEN: '' });
      expect(run.out).toMatch(/Slack refused SLACK_BOT_TOKEN \(invalid_auth\)\. Set SLACK_BOT_TOKEN to/);
      expect(run.code).toBe(1);
      expect(run.out).not.toMatch(STACK);
    } finally {
      await fake.stop();
    }
  }, 180_000);

  it('Discord: a sentence naming DISCORD_TOKEN and a clean exit', async () => {
    const fake = await FakeDiscord.start({});
    try {
      const file = config('discord-bad-token', { queue: { prefix: `t-newcomer-${process.pid}` }, slack: { enabled: false }, discord: { enabled: true, apiBaseUrl: fake.apiBase, restRetries: 0 } });
      const run = await finish(['bots/main.ts'], { BLIP3O_CONFIG: file, DISCORD_TOKEN: 'wrong', DISCORD_APPLICATION_ID: fake.appId, SLACK_BOT_TOKEN: '' });
      expect(run.out).toMatch(/Discord refused DISCORD_TOKEN/);
      expect(run.code).toBe(1);
      expect(run.out).not.toMatch(STACK);
    } finally {
      await fake.close();
    }
  }, 180_000);
});
