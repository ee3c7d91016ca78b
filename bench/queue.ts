// npm run bench -- queue [sequentialJobs=50] [burstJobs=200] [concurrency=4] [rounds=3]
// (REDIS_URL may be any form src/redis.ts takes: one server, Sentinel or Cluster)
// Per-job overhead of our path (core.handle → jobs queue → worker processor + model thread with a no-op
// pipeline → blob store → delivery queue → ledger → PlatformPort.deliver) against a bare BullMQ
// add → process → completed round trip, both measured here, in one run, on the same Redis.
import { createHash, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import { createCore } from '../bots/core/submit.ts';
import type { PlatformPort } from '../bots/core/port.ts';
import { createBlobStore } from '../src/blobs/index.ts';
import { loadConfig, loadSecrets } from '../src/config/load.ts';
import { QueueNames, type CliDestination, type JobRequest, type JobResult } from '../src/jobs/contract.ts';
import { createJobsQueue, createQueueWorker } from '../src/jobs/queue.ts';
import { createFairScheduler, startOrHold } from '../src/scheduling/fair.ts';
import { createLogger } from '../src/log.ts';
import { Redis as IORedis } from 'ioredis';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../src/redis.ts';
import { createProcessor, type ProcessOutcome } from '../worker/processor.ts';
import { ThreadHost } from '../worker/thread-host.ts';

async function cleanup(redis: Redis, prefix: string): Promise<void> {
  await deleteKeys(redis, `${prefix}:*`);
}

interface Path {
  /** Start one job; resolves when it has been delivered/completed. */
  one(i: number): Promise<void>;
  close(): Promise<void>;
}

async function barePath(redis: Redis, prefix: string, concurrency: number): Promise<Path> {
  const queue = new Queue('bare', { connection: redis, prefix });
  const waiters = new Map<string, () => void>();
  const worker = new Worker('bare', async (job) => ({ echoed: job.data.n }), { connection: redis, prefix, concurrency });
  worker.on('completed', (job) => waiters.get(job.id!)?.());
  await worker.waitUntilReady();
  return {
    async one(i: number) {
      const id = `b${i}-${randomUUID().slice(0, 8)}`;
      const done = new Promise<void>((r) => waiters.set(id, r));
      await queue.add('bare', { n: i, prompt: 'a red fox in snow' }, { jobId: id, removeOnComplete: true });
      await done;
      waiters.delete(id);
    },
    async close() {
      await worker.close();
      await queue.close();
    },
  };
}

async function ourPath(redis: Redis, prefix: string, concurrency: number): Promise<Path> {
  const off = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 }; // rate limits off: this measures the path
  const config = loadConfig({ overrides: { logLevel: 'error', queue: { prefix }, worker: { concurrency }, limits: { channel: off, user: off, workspace: off } } });
  const secrets = loadSecrets();
  const log = createLogger('bench', 'error');
  const host = await ThreadHost.start({
    size: concurrency,
    pipelineModule: fileURLToPath(new URL('./_noop-pipeline.ts', import.meta.url)),
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding: { minPixels: 1, maxPixels: 1, maxInputPixels: 1, maxAspectRatio: 1 } },
    abortGraceMs: 1000,
    log,
  });
  const processor = createProcessor({ config, redis, blobs: createBlobStore(config, redis), host, log });
  // Wired as worker/main.ts wires it: the fair scheduler's start hook, then our processor.
  const schedulerQueue = createJobsQueue(config, redis);
  const scheduler = createFairScheduler(redis, config, schedulerQueue);
  const worker = createQueueWorker<JobRequest, ProcessOutcome>(config, redis, QueueNames.jobs, async (job, token, signal) => {
    await startOrHold(scheduler, job, token);
    return processor.process(job, token, signal);
  }, { concurrency });
  const waiters = new Map<string, () => void>();
  const port: PlatformPort = {
    platform: 'cli',
    async showProgress() {},
    async deliver(result: JobResult) {
      waiters.get(result.jobId)?.();
    },
  };
  const clientId = randomUUID();
  const core = createCore({ config, secrets, ports: [port], cliClientId: clientId, redis, log, deliveryConcurrency: concurrency });
  await core.start();
  await worker.waitUntilReady();
  return {
    async one(i: number) {
      // One channel per job: fair scheduling releases one job per channel at a time, and this measures the path.
      const destination: CliDestination = { platform: 'cli', clientId, channelId: `bench-${i}`, userId: `bench-${i}` };
      const reply = await core.handle({ input: { command: 'imagine', prompt: 'a red fox in snow', seed: i }, destination, dedupeKey: `${clientId}-${i}`, isAdmin: false });
      if (reply.kind !== 'queued') throw new Error(`not queued: ${reply.text}`);
      await new Promise<void>((r) => waiters.set(reply.jobId, r));
      waiters.delete(reply.jobId);
    },
    async close() {
      await core.stop();
      await worker.close();
      await processor.close();
      await schedulerQueue.close();
      await host.close();
    },
  };
}

/**
 * Every command this process sends to Redis, by name (Lua scripts by the name they were defined with), counted in
 * ioredis itself: the bench's clients are all in this process, so the count is exactly the path's round trips
 * (a pipelined batch counts each command), whatever else uses the same Redis and however loaded the machine is.
 */
const sent = new Map<string, number>();
const scriptNames = new Map<string, string>();
{
  type Cmd = { name: string; args: unknown[] };
  const proto = IORedis.prototype as unknown as {
    sendCommand(command: Cmd, stream?: unknown): unknown;
    defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void;
  };
  const sendCommand = proto.sendCommand;
  proto.sendCommand = function (this: unknown, command: Cmd, stream?: unknown) {
    const name = command.name === 'evalsha' || command.name === 'eval' ? `lua:${scriptNames.get(String(command.args[0])) ?? 'inline'}` : command.name;
    sent.set(name, (sent.get(name) ?? 0) + 1);
    return sendCommand.call(this, command, stream);
  };
  // defineCommand lives on the Commander base that Redis and Cluster share: patched there, both report script names.
  const commander = Object.getPrototypeOf(IORedis.prototype) as typeof proto;
  const defineCommand = commander.defineCommand;
  commander.defineCommand = function (this: unknown, name: string, definition: { lua: string; numberOfKeys?: number }) {
    scriptNames.set(createHash('sha1').update(definition.lua).digest('hex'), name);
    return defineCommand.call(this, name, definition);
  };
}

/** Commands per job of `jobs` sequential round trips, by command, most first. */
async function profile(path: Path, jobs: number, base: number): Promise<[string, number][]> {
  const before = new Map(sent);
  for (let i = 0; i < jobs; i++) await path.one(base + i);
  await new Promise((r) => setTimeout(r, 300)); // let the last acknowledgements land
  const perJob: [string, number][] = [...sent].map(([c, n]) => [c, (n - (before.get(c) ?? 0)) / jobs]);
  return perJob.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
}

async function measure(path: Path, sequential: number, burst: number, base: number) {
  for (let i = 0; i < 5; i++) await path.one(base + i); // warm up
  let t = performance.now();
  for (let i = 0; i < sequential; i++) await path.one(base + 10 + i);
  const msPerJob = (performance.now() - t) / sequential;
  t = performance.now();
  await Promise.all(Array.from({ length: burst }, (_, i) => path.one(base + 10_000 + i)));
  const jobsPerSecond = burst / ((performance.now() - t) / 1000);
  return { msPerJob, jobsPerSecond };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(args: string[]): Promise<void> {
  const [sequential = 50, burst = 200, concurrency = 4, rounds = 3] = args.map(Number);
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-queue');
  const prefix = `{bench-${randomUUID().slice(0, 8)}}`; // a hash tag, so REDIS_URL may name a Redis Cluster too
  try {
    // Both paths stay up and are measured alternately, `rounds` times, so load on a shared machine hits both alike.
    const bare = await barePath(redis, prefix, concurrency);
    const ours = await ourPath(redis, prefix, concurrency);
    const b: { msPerJob: number; jobsPerSecond: number }[] = [];
    const o: { msPerJob: number; jobsPerSecond: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      b.push(await measure(bare, sequential, burst, r * 1_000_000));
      o.push(await measure(ours, sequential, burst, r * 1_000_000 + 500_000));
    }
    // Where the time goes: Redis commands per job on each path (blocking reads and timers make these a little noisy).
    const profiles = { bare: await profile(bare, 50, 9_000_000), ours: await profile(ours, 50, 9_500_000) };
    await ours.close();
    await bare.close();
    const f = (n: number) => n.toFixed(2);
    const bm = median(b.map((x) => x.msPerJob));
    const om = median(o.map((x) => x.msPerJob));
    const bt = median(b.map((x) => x.jobsPerSecond));
    const ot = median(o.map((x) => x.jobsPerSecond));
    console.log(`queue bench: ${sequential} sequential round trips, then ${burst} at once, concurrency ${concurrency}; median of ${rounds} alternating rounds`);
    console.log(`  bare BullMQ add → process → completed:   ${f(bm)} ms/job   ${f(bt)} jobs/s`);
    console.log(`  our submit → worker (no-op) → delivery:  ${f(om)} ms/job   ${f(ot)} jobs/s`);
    console.log(`  per-job overhead: +${f(om - bm)} ms; latency ratio ${f(om / bm)}×; throughput ratio ${f(ot / bt)}×`);
    console.log(`  per-round latency ratios: ${o.map((x, i) => f(x.msPerJob / b[i]!.msPerJob)).join(', ')}`);
    const total = (p: [string, number][]) => p.reduce((a, [, n]) => a + n, 0);
    console.log(`  Redis commands sent per job: bare ${f(total(profiles.bare))}, ours ${f(total(profiles.ours))}`);
    console.log(`    ours: ${profiles.ours.map(([c, n]) => `${c} ${f(n)}`).join(', ')}`);
    console.log(`    bare: ${profiles.bare.map(([c, n]) => `${c} ${f(n)}`).join(', ')}`);
  } finally {
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
}
