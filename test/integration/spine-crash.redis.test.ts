// Crash points of the spine, with real processes killed by SIGKILL (docs/architecture.md, "Exactly once").
// Short lock/stall timings so recovery takes seconds: lockDurationMs 1500, stalledIntervalMs 500.
import { randomUUID } from 'node:crypto';
import { QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import { QueueNames, type CliDestination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue, deliveryQueueName, type JobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, duplicateRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, sleep, spawnTs, startWorker, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({
  queue: { attempts: 2, backoffMs: 100, jobTimeoutMs: 30_000, lockDurationMs: 1_500, stalledIntervalMs: 500, maxStalledCount: 2 },
  worker: { concurrency: 1, pipelineExtra: { stepDelayMs: 300, slowStepMs: 700, failures: { '[long]': 'slow' } } },
});
const secrets = loadSecrets({ REDIS_URL });

let redis: Redis;
let queue: JobsQueue;
let events: QueueEvents;
const stalled: string[] = [];
const procs: Proc[] = [];
const cores: Core[] = [];

const cliDest = (clientId: string): CliDestination => ({ platform: 'cli', clientId, channelId: 'local', userId: 'tester' });
const imagine = (clientId: string, prompt: string): Invocation => ({
  input: { command: 'imagine', prompt, seed: 3, ditSteps: 4, decoderSteps: 4 }, destination: cliDest(clientId), dedupeKey: randomUUID(), isAdmin: false,
});

async function core(port?: RecordingPort, clientId?: string): Promise<Core> {
  const c = createCore({ config: h.config, secrets, ports: port ? [port] : [], cliClientId: clientId });
  await c.start();
  cores.push(c);
  return c;
}

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
  events = new QueueEvents(QueueNames.jobs, { connection: duplicateRedis(redis), prefix: h.prefix });
  events.on('stalled', ({ jobId }) => stalled.push(jobId));
  await events.waitUntilReady();
  procs.push(...(await Promise.all([startWorker(h), startWorker(h)])));
});

afterAll(async () => {
  for (const p of procs) await p.kill('SIGKILL');
  for (const c of cores) await c.stop();
  await events?.close();
  await queue?.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('spine crash points', () => {
  it('a job whose worker is SIGKILLed mid-job completes on another worker and is delivered once', async () => {
    const clientId = randomUUID();
    const port = new RecordingPort('cli');
    const c = await core(port, clientId);
    const reply = await c.handle(imagine(clientId, 'kill the worker fox'));
    const jobId = (reply as { jobId: string }).jobId;
    const first = await until(() => runs(h).find((r) => r.prompt === 'kill the worker fox'), 30_000, 'job started');
    await sleep(400); // mid-job: a step or two in
    const victim = procs.find((p) => p.child.pid === first.pid)!;
    expect(victim).toBeDefined();
    await victim.kill('SIGKILL');
    const result = await port.waitFor(jobId, 30_000);
    expect(result.status).toBe('succeeded');
    await sleep(1_500);
    expect(port.count(jobId)).toBe(1);
    const attempts = runs(h).filter((r) => r.prompt === 'kill the worker fox');
    expect(attempts.length).toBe(2);
    expect(attempts[1]!.pid).not.toBe(first.pid);
    expect(stalled).toContain(jobId);
    procs.splice(procs.indexOf(victim), 1); // the survivor serves the remaining tests
  });

  it('a job running far longer than the lock is neither reported stalled nor run twice', async () => {
    const clientId = randomUUID();
    const port = new RecordingPort('cli');
    const c = await core(port, clientId);
    const started = Date.now();
    const reply = await c.handle(imagine(clientId, 'a [long] fox'));
    const jobId = (reply as { jobId: string }).jobId;
    const result = await port.waitFor(jobId, 40_000);
    expect(result.status).toBe('succeeded');
    expect(Date.now() - started).toBeGreaterThan(3 * h.config.queue.lockDurationMs); // 9 steps × 700 ms
    await sleep(1_000);
    expect(stalled).not.toContain(jobId);
    expect(runs(h).filter((r) => r.prompt === 'a [long] fox').length).toBe(1);
    expect(port.count(jobId)).toBe(1);
  });

  it('a bot SIGKILLed between result and delivery, or down when the result is ready, delivers once after restart', async () => {
    const clientId = randomUUID();
    const posts = `${h.prefix}:test:posts`;
    const submitter = await core(); // submits only; this process serves no platform
    const bot1 = spawnTs('test/doubles/recording-bot.ts', h, [clientId, '--hang-first']);
    procs.push(bot1);
    await bot1.waitFor('bot ready');
    const a = (await submitter.handle(imagine(clientId, 'bot dies mid-delivery'))) as { jobId: string };
    await bot1.waitFor(`delivering ${a.jobId}`, 30_000);
    await bot1.kill('SIGKILL');

    // While no bot runs, a second result is produced and waits in the delivery queue.
    const b = (await submitter.handle(imagine(clientId, 'bot is down'))) as { jobId: string };
    const dq = createDeliveryQueue(h.config, redis, deliveryQueueName(cliDest(clientId)));
    await until(async () => (await dq.getJob(b.jobId)) !== undefined, 30_000, 'result handed over');

    const bot2 = spawnTs('test/doubles/recording-bot.ts', h, [clientId]);
    procs.push(bot2);
    await bot2.waitFor(`posted ${a.jobId}`, 30_000);
    await bot2.waitFor(`posted ${b.jobId}`, 30_000);
    await sleep(1_500);
    expect((await redis.lrange(posts, 0, -1)).sort()).toEqual([a.jobId, b.jobId].sort());
    await dq.close();
  });
});
