// Issue 8's must-shows over real Redis: two bot processes share a channel limit exactly; a busy channel does not
// hold up another (through the real core and a real worker process running the test double pipeline);
// cancelling queued and running jobs frees their slots and moves positions up.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation, PlatformPort, Reply } from '../../bots/core/port.ts';
import { loadConfig, loadSecrets, repoRoot } from '../../src/config/load.ts';
import { QueueNames, type Destination, type JobProgress, type JobResult } from '../../src/jobs/contract.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const OFF = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let redis: Redis;
const dirs: string[] = [];
const prefixes: string[] = [];
const children: ChildProcess[] = [];

/** A config file (BLIP3O_CONFIG) with a unique queue prefix and the test double pipeline. */
function testConfig(tree: Record<string, unknown>) {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), 'limits-'));
  const runLog = join(dir, 'runs.jsonl');
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    stringify({
      logLevel: 'warn',
      queue: { prefix, lockDurationMs: 5000, stalledIntervalMs: 5000 },
      discord: { progressEditIntervalMs: 20 },
      worker: { pipelineModule: 'test/doubles/pipeline.ts', pipelineExtra: { runLogFile: runLog, stepDelayMs: 0, maxSteps: 4, slowStepMs: 400, failures: { slow: 'slow' } } },
      ...tree,
    }),
  );
  dirs.push(dir);
  prefixes.push(prefix);
  const config = loadConfig({ env: { BLIP3O_CONFIG: file } });
  return { file, config, runLog };
}

function spawnNode(script: string, configFile: string, args: string[] = [], logLevel = 'warn') {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: repoRoot,
    env: { ...process.env, BLIP3O_CONFIG: configFile, REDIS_URL, LOG_LEVEL: logLevel },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = async (text: string, timeoutMs = 60_000) => {
    for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(50)) if (out.includes(text)) return;
    throw new Error(`no "${text}" from ${script} within ${timeoutMs} ms:\n${out}`);
  };
  return { child, exited, output: () => out, waitFor };
}

/** Records progress and deliveries, like an adapter would show them. */
class Port implements PlatformPort {
  readonly platform = 'discord' as const;
  readonly results = new Map<string, JobResult>();
  readonly progress: JobProgress[] = [];
  async showProgress(_d: Destination, p: JobProgress) {
    this.progress.push(p);
  }
  async deliver(result: JobResult) {
    this.results.set(result.jobId, result);
  }
  async result(jobId: string, timeoutMs = 30_000): Promise<JobResult> {
    for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(20)) {
      const r = this.results.get(jobId);
      if (r) return r;
    }
    throw new Error(`no delivery for ${jobId}`);
  }
}

const dest = (channelId: string, userId: string): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const imagine = (channelId: string, userId: string, prompt: string): Invocation => ({
  input: { command: 'imagine', prompt }, destination: dest(channelId, userId), dedupeKey: randomUUID(), isAdmin: false,
});
const jobIdOf = (r: Reply) => {
  if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
  return r.jobId;
};
/** Runs the test double logged, in start order: each with its prompt and start time (ms, this machine's clock). */
const startedRuns = (runLog: string): { prompt?: string; at: number }[] =>
  existsSync(runLog) ? readFileSync(runLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { prompt?: string; at: number }) : [];
const runs = (runLog: string): string[] => startedRuns(runLog).map((r) => r.prompt ?? '');

beforeAll(() => {
  redis = new Redis(REDIS_URL);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const prefix of prefixes) {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  }
  await redis.quit();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('limits and fair scheduling, end to end', () => {
  it('two bot processes share a channel limit of 5 per minute: 20 requests admit exactly 5', async () => {
    const t = testConfig({ limits: { channel: { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 0 }, user: OFF, workspace: OFF } });
    const bots = [spawnNode('test/integration/limits-bot.ts', t.file, ['bot-a', '10']), spawnNode('test/integration/limits-bot.ts', t.file, ['bot-b', '10'])];
    expect(await Promise.all(bots.map((b) => b.exited))).toEqual([0, 0]);
    const outputs = bots.map((b) => JSON.parse(b.output().trim().split('\n').at(-1)!) as { pid: number; replies: Reply[] });
    expect(outputs[0]!.pid).not.toBe(outputs[1]!.pid);
    const replies = outputs.flatMap((o) => o.replies);
    expect(replies).toHaveLength(20);
    expect(replies.filter((r) => r.kind === 'queued')).toHaveLength(5);
    const denials = replies.filter((r) => r.kind === 'error');
    expect(denials).toHaveLength(15);
    for (const d of denials) {
      expect(d).toMatchObject({ private: true });
      expect(d.text).toMatch(/^This channel allows 5 requests per minute; try again in \d+ s\.$/);
    }
    // nothing was enqueued for the denied ones
    const queue = new Queue(QueueNames.jobs, { connection: redis, prefix: t.config.queue.prefix });
    const c = await queue.getJobCounts('wait', 'prioritized', 'delayed', 'active', 'completed', 'failed');
    expect(Object.values(c).reduce((a, b) => a + b, 0)).toBe(5);
    await queue.close();
  });

  describe('with one worker process (concurrency 1)', () => {
    let core: Core;
    let port: Port;
    let t: ReturnType<typeof testConfig>;

    beforeAll(async () => {
      t = testConfig({ limits: { channel: OFF, user: { ...OFF, maxConcurrent: 4 }, workspace: OFF } });
      const worker = spawnNode('worker/main.ts', t.file, [], 'info');
      port = new Port();
      core = createCore({ config: t.config, secrets: loadSecrets({ REDIS_URL }), ports: [port] });
      await core.start();
      await worker.waitFor('worker ready');
    });
    afterAll(async () => {
      await core.stop();
    });

    it('channel A enqueues 50 jobs, then channel B one: B starts before A’s 3rd remaining job', async () => {
      const a: string[] = [];
      for (let i = 0; i < 50; i++) a.push(jobIdOf(await core.handle(imagine('A', `a-user-${i}`, `a ${i}`))));
      const b = await core.handle(imagine('B', 'b-user', 'b 0'));
      expect(b.kind === 'queued' && b.position).toBeLessThanOrEqual(2); // shown to the user: at most A's next one ahead
      await port.result(jobIdOf(b));
      // Counted from when B's job was added (BullMQ's timestamp), by the runs' own start times: the worker keeps taking
      // A's jobs while B's submission is admitted (the submit path's time, not the scheduler's), and a run's log line
      // can land after a later reading on a loaded machine. With concurrency 1, A's head released before B may start
      // first, and A's next one if its release races B's; a third would mean B waits behind A's line.
      const queuedAt = (await core.queue.getJob(jobIdOf(b)))!.timestamp;
      const all = startedRuns(t.runLog);
      const bStart = all.find((r) => r.prompt === 'b 0')!.at;
      const aBetween = all.filter((r) => r.prompt?.startsWith('a ') && r.at >= queuedAt && r.at <= bStart);
      expect(aBetween.length, `A's runs started after B was queued and before B: ${aBetween.map((r) => r.prompt)}`).toBeLessThan(3);
      await Promise.all(a.map((id) => port.result(id, 60_000)));
    });

    it('cancelling a queued job removes it and frees its slot; positions move up; a running job stops within a step', async () => {
      const slow = jobIdOf(await core.handle(imagine('C', 'carol', 'a slow fox')));
      for (let i = 0; i < 100 && !runs(t.runLog).includes('a slow fox'); i++) await sleep(50);
      const queued = [];
      for (let i = 0; i < 3; i++) queued.push(jobIdOf(await core.handle(imagine('C', 'carol', `waiting ${i}`))));
      expect(await Promise.all(queued.map((id) => core.position(id)))).toEqual([1, 2, 3]);
      // the user's cap (4 queued or running) is full
      expect(await core.handle(imagine('C', 'carol', 'one more'))).toMatchObject({ kind: 'error', text: expect.stringMatching(/^You already have 4 jobs queued or running/) });

      const cancel = (jobId: string) => core.handle({ input: { command: 'cancel', jobId }, destination: dest('C', 'carol'), dedupeKey: randomUUID(), isAdmin: false });
      expect(await cancel(queued[0]!)).toMatchObject({ kind: 'text' });
      expect((await port.result(queued[0]!)).status).toBe('cancelled');
      expect(await core.queue.getJob(queued[0]!)).toBeUndefined();
      expect(await Promise.all(queued.slice(1).map((id) => core.position(id)))).toEqual([1, 2]);
      // and the users see it: the progress relay pushes the new positions
      const shown = (id: string) => port.progress.filter((p) => p.jobId === id && p.stage === 'queued').at(-1)?.queuePosition;
      for (let i = 0; i < 40 && (shown(queued[1]!) !== 1 || shown(queued[2]!) !== 2); i++) await sleep(50);
      expect([shown(queued[1]!), shown(queued[2]!)]).toEqual([1, 2]);
      const again = await core.handle(imagine('C', 'carol', 'one more'));
      expect(again.kind).toBe('queued'); // the cancelled job's slot was freed

      // the running job (400 ms per model step) has made progress; cancel it: at most one more step is reported
      const steps = () => port.progress.filter((p) => p.jobId === slow && p.stage !== 'queued').length;
      for (let i = 0; i < 100 && steps() === 0; i++) await sleep(50);
      const before = steps();
      expect(before).toBeGreaterThan(0);
      await cancel(slow);
      expect((await port.result(slow)).status).toBe('cancelled');
      await sleep(500);
      expect(steps() - before).toBeLessThanOrEqual(1);
      // its slot is free again once BullMQ failed it (QueueEvents 'failed' → settle)
      let reply: Reply = { kind: 'text', text: '', private: true };
      for (let i = 0; i < 50 && reply.kind !== 'queued'; i++, await sleep(50)) reply = await core.handle(imagine('C', 'carol', `after cancel ${i}`));
      expect(reply.kind).toBe('queued');
      for (const id of [...queued.slice(1), jobIdOf(again), jobIdOf(reply)]) expect((await port.result(id)).status).toBe('succeeded');
    });
  });
});
