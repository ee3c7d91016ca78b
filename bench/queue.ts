// npm run bench -- queue [replicas] [sequentialJobs=50] [burstJobs=200] [concurrency=4] [rounds=3]
//   (replicas: ours waits for one replica at acceptance, as with Sentinel; REDIS_URL must be a primary with a replica)
// npm run bench -- queue multi [slack] [limits] [jobs=3000] [bots=3] [workers=3] [concurrency=16] [channels=64] [window=100] [rounds=2]
//   (separate bot and worker processes against as many bare BullMQ ones, one hop and two: see multi() below)
// npm run bench -- queue progress [jobs=32] [stepMs=20] [concurrency=8] [rounds=2]
//   (jobs that report every step, as real ones do: progress written coalesced against every report; see progress())
// npm run bench -- queue memory [jobs=100] [pngKiB=1536]
//   (Redis memory that delivered images and answered uploads hold: kept as before, against released; see memory())
// node --expose-gc --import tsx bench/main.ts queue soak [jobs=3000] [rounds=3] [concurrency=8]
//   (this process's heap, collected, before and after each round of jobs through our path; see soak())
// (REDIS_URL may be any form src/redis.ts takes: one server, Sentinel or Cluster)
// BENCH_SCRIPT_TIME=1: Redis's time inside each script per job in the bursts, timed in the script (see SCRIPT_TIME)
// Per-job overhead of our path (core.handle → jobs queue → worker processor + model thread with a no-op
// pipeline → blob store → delivery queue → ledger → PlatformPort.deliver) against a bare BullMQ
// add → process → completed round trip, and against two bare hops (a worker that hands each job to a second queue and
// worker: the floor of any design whose results go back to another process through Redis), all measured here, in one
// run, on the same Redis.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { Queue, Worker, type Job } from 'bullmq';
import { createCore } from '../bots/core/submit.ts';
import type { Invocation, PlatformPort } from '../bots/core/port.ts';
import { createBlobStore } from '../src/blobs/index.ts';
import { loadConfig, loadSecrets } from '../src/config/load.ts';
import { QueueNames, type CliDestination, type Destination, type JobRequest, type JobResult } from '../src/jobs/contract.ts';
import { createJobsQueue, createQueueWorker, jobIdFor } from '../src/jobs/queue.ts';
import { createFairScheduler, startOrHold } from '../src/scheduling/fair.ts';
import { createLogger } from '../src/log.ts';
import { Redis as IORedis } from 'ioredis';
import sharp from 'sharp';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../src/redis.ts';
import { createAfterJob } from '../worker/after-job.ts';
import { createProcessor, type ProcessOutcome } from '../worker/processor.ts';
import { ThreadHost } from '../worker/thread-host.ts';
import type { Delivered, Done, Go } from './_queue-procs.ts';

async function cleanup(redis: Redis, prefix: string): Promise<void> {
  await deleteKeys(redis, `${prefix}:*`);
}

interface Path {
  /** Start one job; resolves when it has been delivered/completed. */
  one(i: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Bare BullMQ: add → Worker → completed. With `hops: 2`, the first worker adds each job to a second queue under the
 * same id before it completes, and a second worker takes it from there: the least any design pays that, like ours,
 * runs a job in one process and hands its result to another (the submitting bot) through Redis.
 */
async function barePath(redis: Redis, prefix: string, concurrency: number, hops: 1 | 2 = 1): Promise<Path> {
  const name = hops === 1 ? 'bare' : 'bare2';
  const queue = new Queue(name, { connection: redis, prefix });
  const waiters = new Map<string, () => void>();
  const second = hops === 2 ? new Queue(`${name}-out`, { connection: redis, prefix }) : undefined;
  const worker = new Worker(name, async (job) => {
    if (second) await second.add('out', { echoed: job.data.n }, { jobId: job.id!, removeOnComplete: true });
    return { echoed: job.data.n };
  }, { connection: redis, prefix, concurrency });
  const last = second ? new Worker(second.name, async (job) => job.data, { connection: redis, prefix, concurrency }) : worker;
  last.on('completed', (job) => waiters.get(job.id!)?.());
  await worker.waitUntilReady();
  await last.waitUntilReady();
  return {
    async one(i: number) {
      const id = `b${i}-${randomUUID().slice(0, 8)}`;
      const done = new Promise<void>((r) => waiters.set(id, r));
      await queue.add(name, { n: i, prompt: 'a red fox in snow' }, { jobId: id, removeOnComplete: true });
      await done;
      waiters.delete(id);
    },
    async close() {
      await worker.close();
      if (last !== worker) await last.close();
      await queue.close();
      await second?.close();
    },
  };
}

/**
 * Our path's knobs: for progress(), the no-op pipeline's step time (it then reports every step) and the worker's
 * progress write interval; for memory(), the size of its image and how long a PNG stays once delivered.
 */
interface OurPathOptions {
  stepMs?: number;
  progressWriteMs?: (destination: Destination) => number;
  pngBytes?: number;
  keepDeliveredSeconds?: number;
  /** redis.acceptReplicas: "Queued" waits for this many replicas (REDIS_URL must then be a primary with replicas). */
  acceptReplicas?: number;
}

async function ourPath(redis: Redis, prefix: string, concurrency: number, opts: OurPathOptions = {}): Promise<Path & { edits: () => number; ask(i: number, image: Uint8Array): Promise<void> }> {
  const off = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 }; // rate limits off: this measures the path
  const memoryRun = opts.keepDeliveredSeconds !== undefined ? { blobs: { keepDeliveredSeconds: opts.keepDeliveredSeconds }, cache: { enabled: false } } : {}; // only the blobs' bytes
  const replicas = opts.acceptReplicas ? { redis: { acceptReplicas: opts.acceptReplicas, acceptReplicaWaitMs: 1_000 } } : {};
  const config = loadConfig({ overrides: { logLevel: 'error', queue: { prefix }, worker: { concurrency }, limits: { channel: off, user: off, workspace: off }, ...memoryRun, ...replicas } });
  const secrets = loadSecrets();
  const log = createLogger('bench', 'error');
  const host = await ThreadHost.start({
    size: concurrency,
    pipelineModule: fileURLToPath(new URL('./_noop-pipeline.ts', import.meta.url)),
    pipelineOptions: { modelDir: '', dtype: 'fp32', executionProvider: 'cpu', intraOpThreads: 1, understanding: { minPixels: 1, maxPixels: 1, maxInputPixels: 1, maxAspectRatio: 1 }, ...(opts.stepMs !== undefined || opts.pngBytes !== undefined ? { extra: { stepMs: opts.stepMs, pngBytes: opts.pngBytes } } : {}) },
    abortGraceMs: 1000,
    log,
  });
  // Wired as worker/main.ts wires it: our processor, which runs the fair scheduler's start hook first.
  const schedulerQueue = createJobsQueue(config, redis);
  const scheduler = createFairScheduler(redis, config, schedulerQueue);
  const start = async (job: Job<JobRequest>, token: string | undefined) => {
    await startOrHold(scheduler, job, token);
    marks.get(job.id!)?.push(performance.now());
  };
  // …and its completion (usage settle, cache put, flight close: worker/after-job.ts), so Redis work per job is the real
  // path's. Added 2026-12-05 (issue 19, fourth pass); earlier runs of this bench did not count it.
  const blobs = createBlobStore(config, redis);
  const afterJob = createAfterJob({ config, redis, blobs, log, manifestHash: 'bench' });
  const processor = createProcessor({ config, redis, blobs, host, log, start, afterHandOver: afterJob.afterHandOver, ...(opts.progressWriteMs ? { progressWriteMs: opts.progressWriteMs } : {}) });
  const worker = createQueueWorker<JobRequest, ProcessOutcome>(config, redis, QueueNames.jobs, async (job, token, signal) => {
    marks.get(job.id!)?.push(performance.now());
    const out = await processor.process(job, token, signal);
    marks.get(job.id!)?.push(performance.now());
    return out;
  }, { concurrency });
  const waiters = new Map<string, () => void>();
  let edits = 0;
  const port: PlatformPort = {
    platform: 'cli',
    async showProgress() {
      edits++;
    },
    async deliver(result: JobResult) {
      marks.get(result.jobId)?.push(performance.now());
      waiters.get(result.jobId)?.();
    },
  };
  const clientId = randomUUID();
  const core = createCore({ config, secrets, ports: [port], cliClientId: clientId, redis, log, deliveryConcurrency: concurrency });
  await core.start();
  await worker.waitUntilReady();
  /** One job, timed through its stages; resolves once delivered. */
  const submit = async (i: number, input: Invocation['input']) => {
    // One channel per job: fair scheduling releases one job per channel at a time, and this measures the path.
    const destination: CliDestination = { platform: 'cli', clientId, channelId: `bench-${i}`, userId: `bench-${i}` };
    const id = jobIdFor('cli', `${clientId}-${input.command}-${i}`);
    const m = [performance.now()];
    marks.set(id, m);
    const reply = await core.handle({ input, destination, dedupeKey: `${clientId}-${input.command}-${i}`, isAdmin: false });
    if (reply.kind !== 'queued') throw new Error(`not queued: ${reply.text}`);
    m.splice(1, 0, performance.now());
    await new Promise<void>((r) => waiters.set(reply.jobId, r));
    waiters.delete(reply.jobId);
  };
  return {
    edits: () => edits,
    async one(i: number) {
      await submit(i, { command: 'imagine', prompt: 'a red fox in snow', seed: i });
    },
    /** An /ask about `image` (memory(): its upload's bytes in Redis). */
    async ask(i: number, image: Uint8Array) {
      await submit(i, { command: 'ask', question: `what is in picture ${i}?`, image: { bytes: image } });
    },
    async close() {
      await core.stop();
      await worker.close();
      await processor.close();
      await afterJob.close(); // its delivery queues for followers
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
    if (command.name === 'eval') inlineNames.set(String(command.args[0]).slice(0, 128), inlineName(String(command.args[0])));
    const name = command.name === 'evalsha' || command.name === 'eval' ? `lua:${scriptNames.get(String(command.args[0])) ?? 'inline'}` : command.name;
    sent.set(name, (sent.get(name) ?? 0) + 1);
    return sendCommand.call(this, command, stream);
  };
  // defineCommand lives on the Commander base that Redis and Cluster share: patched there, both report script names.
  const commander = Object.getPrototypeOf(IORedis.prototype) as typeof proto;
  const defineCommand = commander.defineCommand;
  commander.defineCommand = function (this: unknown, name: string, definition: { lua: string; numberOfKeys?: number }) {
    if (SCRIPT_TIME) definition = { ...definition, lua: timed(name, definition.lua) };
    scriptNames.set(createHash('sha1').update(definition.lua).digest('hex'), name);
    return defineCommand.call(this, name, definition);
  };
}

/**
 * BENCH_SCRIPT_TIME=1: every script defined on a connection (ours and BullMQ's) is run inside a wrapper that adds the
 * Redis time it took (TIME before and after, µs) to SCRIPT_TIME_KEY, and the bursts print it per job by script. Unlike
 * SLOWLOG at threshold 0, which logs every command a script runs as well and so inflates the scripts that run many,
 * this costs each call the same two TIMEs and one HINCRBY (≈ 2–3 µs). Single server or Sentinel only (one key).
 */
const SCRIPT_TIME = process.env.BENCH_SCRIPT_TIME === '1';
const SCRIPT_TIME_KEY = 'bench:script-time';
const timed = (name: string, lua: string) =>
  `local t0 = redis.call('TIME') local function body() ${lua}\nend local reply = body() local t1 = redis.call('TIME') ` +
  `redis.call('HINCRBY', '${SCRIPT_TIME_KEY}', '${name}', (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])) return reply`;

/** Inline EVALs by the start of their script (SLOWLOG keeps an argument's first 128 bytes). */
const inlineNames = new Map<string, string>();
const inlineName = (body: string) => `inline "${body.replace(/\s+/g, ' ').trim().slice(0, 40)}…"`;

/**
 * Commands per job of `jobs` round trips (sequential, or all at once with `together`: a burst, as at throughput), by
 * command, most first; and, where CONFIG is allowed (not on a managed Redis or a Cluster's router), Redis's own time
 * per job in µs by command (SLOWLOG with every command logged).
 */
async function profile(redis: Redis, path: Path, jobs: number, base: number, together = false): Promise<{ sent: [string, number][]; redisUs: [string, number][] }> {
  const r = redis as IORedis;
  const saved = await r.config('GET', 'slowlog-*').catch(() => undefined) as string[] | undefined;
  if (saved) await r.config('SET', 'slowlog-log-slower-than', '0', 'slowlog-max-len', '1000000').then(() => r.slowlog('RESET'));
  const before = new Map(sent);
  if (together) await Promise.all(Array.from({ length: jobs }, (_, i) => path.one(base + i)));
  else for (let i = 0; i < jobs; i++) await path.one(base + i);
  await new Promise((r) => setTimeout(r, 300)); // let the last acknowledgements land
  const perJob: [string, number][] = [...sent].map(([c, n]) => [c, (n - (before.get(c) ?? 0)) / jobs]);
  const redisUs = new Map<string, number>();
  if (saved) {
    const log = (await r.slowlog('GET', -1)) as [number, number, number, string[]][];
    await r.config('SET', ...saved);
    for (const [, , us, args] of log) {
      const [cmd = '', first = ''] = args;
      const c = cmd.toLowerCase();
      if (c === 'slowlog' || c === 'config') continue;
      const name = c === 'evalsha' ? `lua:${scriptNames.get(first) ?? first.slice(0, 8)}` : c === 'eval' ? `lua:${inlineNames.get(first) ?? inlineName(first)}` : c;
      redisUs.set(name, (redisUs.get(name) ?? 0) + us / jobs);
    }
  }
  const most = (xs: [string, number][]) => xs.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  // SLOWLOG also lists the commands scripts run, whose time is inside the script's: only what was sent counts.
  const sentNames = new Set(perJob.filter(([, n]) => n > 0).map(([c]) => (c === 'lua:inline' ? 'eval' : c)));
  return { sent: most(perJob), redisUs: most([...redisUs].filter(([c]) => sentNames.has(c.startsWith('lua:inline') ? 'eval' : c))) };
}

let benchRedis: Redis;
async function measure(path: Path, sequential: number, burst: number, base: number) {
  for (let i = 0; i < 5; i++) await path.one(base + i); // warm up
  let t = performance.now();
  marks.clear();
  for (let i = 0; i < sequential; i++) await path.one(base + 10 + i);
  const msPerJob = (performance.now() - t) / sequential;
  const sequentialSegments = breakdown();
  t = performance.now();
  const cpu0 = process.cpuUsage();
  const r0 = await redisCpu();
  const n0 = await redisNet();
  if (SCRIPT_TIME) await benchRedis.del(SCRIPT_TIME_KEY);
  await Promise.all(Array.from({ length: burst }, (_, i) => path.one(base + 10_000 + i)));
  const wall = (performance.now() - t) / 1000;
  const scriptUs = SCRIPT_TIME ? Object.entries(await benchRedis.hgetall(SCRIPT_TIME_KEY)).map(([k, v]) => [k, Number(v) / burst] as [string, number]) : [];
  const cpu = process.cpuUsage(cpu0);
  const r1 = await redisCpu();
  const n1 = await redisNet();
  const jobsPerSecond = burst / wall;
  const cpuMsPerJob = { node: (cpu.user + cpu.system) / 1000 / burst, redis: (1000 * (r1 - r0)) / burst };
  const kbPerJob = { toRedis: (n1.in - n0.in) / 1024 / burst, fromRedis: (n1.out - n0.out) / 1024 / burst };
  return { msPerJob, jobsPerSecond, cpuMsPerJob, kbPerJob, sequentialSegments, segments: breakdown(), scriptUs };
}

/** CPU seconds Redis has used (INFO cpu: its main thread and background threads). */
async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await (redis as IORedis).info('cpu');
  return Number(/used_cpu_user:([\d.]+)/.exec(info)![1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)![1]);
}
let redisCpu: () => Promise<number> = async () => 0;
/** Bytes Redis has read from and written to its clients (INFO stats). */
async function redisNetBytes(redis: Redis): Promise<{ in: number; out: number }> {
  const info = await (redis as IORedis).info('stats');
  return { in: Number(/total_net_input_bytes:(\d+)/.exec(info)![1]), out: Number(/total_net_output_bytes:(\d+)/.exec(info)![1]) };
}
let redisNet: () => Promise<{ in: number; out: number }> = async () => ({ in: 0, out: 0 });
/** Per job of our path, in this order: submitted, handle() answered, the worker took it, started() done, processed, delivered. */
const marks = new Map<string, number[]>();
/** Where our path's jobs of the last burst spent their time (empty for the bare path). */
function breakdown(): string {
  const segs = ['handle', 'to worker', 'started', 'process', 'to deliver'];
  const rows = [...marks.values()].filter((m) => m.length === 6);
  marks.clear();
  if (rows.length === 0) return '';
  return segs.map((name, i) => {
    const xs = rows.map((m) => m[i + 1]! - m[i]!).sort((a, b) => a - b);
    return `${name} p50 ${xs[Math.floor(xs.length / 2)]?.toFixed(1)} p90 ${xs[Math.floor(xs.length * 0.9)]?.toFixed(1)}`;
  }).join(' | ');
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(args: string[]): Promise<void> {
  if (args[0] === 'multi') {
    const isWord = (a: string) => a === 'slack' || a === 'limits';
    const rest = args.slice(1);
    return multi(rest.filter((a) => !isWord(a)).map(Number), rest.includes('slack') ? 'slack' : 'cli', rest.includes('limits'));
  }
  if (args[0] === 'progress') return progress(args.slice(1).map(Number));
  if (args[0] === 'memory') return memory(args.slice(1).map(Number));
  if (args[0] === 'soak') return soak(args.slice(1).map(Number));
  // `replicas`: acceptance waits for one replica (redis.acceptReplicas: 1), as a Sentinel deployment runs
  const acceptReplicas = args.includes('replicas') ? 1 : 0;
  const [sequential = 50, burst = 200, concurrency = 4, rounds = 3] = args.filter((a) => a !== 'replicas').map(Number);
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-queue');
  benchRedis = redis;
  const prefix = `{bench-${randomUUID().slice(0, 8)}}`; // a hash tag, so REDIS_URL may name a Redis Cluster too
  redisCpu = () => redisCpuSeconds(redis);
  redisNet = () => redisNetBytes(redis);
  try {
    // Both paths stay up and are measured alternately, `rounds` times, so load on a shared machine hits both alike.
    const bare = await barePath(redis, prefix, concurrency);
    const bare2 = await barePath(redis, prefix, concurrency, 2);
    const ours = await ourPath(redis, prefix, concurrency, { acceptReplicas });
    type Measured = Awaited<ReturnType<typeof measure>>;
    const b: Measured[] = [];
    const b2: Measured[] = [];
    const o: Measured[] = [];
    for (let r = 0; r < rounds; r++) {
      b.push(await measure(bare, sequential, burst, r * 1_000_000));
      b2.push(await measure(bare2, sequential, burst, r * 1_000_000 + 250_000));
      o.push(await measure(ours, sequential, burst, r * 1_000_000 + 500_000));
    }
    // Where the time goes: Redis commands per job on each path (blocking reads and timers make these a little noisy).
    const profiles = { bare: await profile(redis, bare, 50, 9_000_000), bare2: await profile(redis, bare2, 50, 9_300_000), ours: await profile(redis, ours, 50, 9_500_000) };
    const bursts = { bare: await profile(redis, bare, burst, 9_100_000, true), ours: await profile(redis, ours, burst, 9_600_000, true) };
    await ours.close();
    await bare.close();
    await bare2.close();
    const f = (n: number) => n.toFixed(2);
    const bm = median(b.map((x) => x.msPerJob));
    const om = median(o.map((x) => x.msPerJob));
    const bt = median(b.map((x) => x.jobsPerSecond));
    const ot = median(o.map((x) => x.jobsPerSecond));
    const b2m = median(b2.map((x) => x.msPerJob));
    const b2t = median(b2.map((x) => x.jobsPerSecond));
    console.log(`queue bench: ${sequential} sequential round trips, then ${burst} at once, concurrency ${concurrency}; median of ${rounds} alternating rounds${acceptReplicas ? '; ours waits for 1 replica at acceptance' : ''}`);
    console.log(`  bare BullMQ add → process → completed:   ${f(bm)} ms/job   ${f(bt)} jobs/s`);
    console.log(`  our submit → worker (no-op) → delivery:  ${f(om)} ms/job   ${f(ot)} jobs/s`);
    console.log(`  per-job overhead: +${f(om - bm)} ms; latency ratio ${f(om / bm)}×; throughput ratio ${f(ot / bt)}×`);
    console.log(`  per-round latency ratios: ${o.map((x, i) => f(x.msPerJob / b[i]!.msPerJob)).join(', ')}`);
    // The floor of any design whose worker hands results to another process through Redis: two bare hops.
    console.log(`  bare BullMQ, two hops (add → worker adds to a 2nd queue → 2nd worker → completed): ${f(b2m)} ms/job   ${f(b2t)} jobs/s`);
    console.log(`  ours against two bare hops: latency ratio ${f(om / b2m)}× (per round ${o.map((x, i) => f(x.msPerJob / b2[i]!.msPerJob)).join(', ')}); throughput ratio ${f(ot / b2t)}×; two bare hops against one: ${f(b2m / bm)}×`);
    const cpu = (xs: Measured[]) => `this process ${f(median(xs.map((x) => x.cpuMsPerJob.node)))}, Redis ${f(median(xs.map((x) => x.cpuMsPerJob.redis)))}`;
    console.log(`  CPU ms per job in the bursts: bare: ${cpu(b)}; two bare hops: ${cpu(b2)}; ours: ${cpu(o)}   (load average ${loadavg().map((x) => x.toFixed(1)).join(' ')})`);
    const kb = (xs: Measured[]) => `${f(median(xs.map((x) => x.kbPerJob.toRedis)))} in, ${f(median(xs.map((x) => x.kbPerJob.fromRedis)))} out`;
    console.log(`  KiB per job to and from Redis in the bursts: bare ${kb(b)}; two bare hops ${kb(b2)}; ours ${kb(o)}`);
    console.log(`  our last sequential jobs, ms per job: ${o.at(-1)!.sequentialSegments}`);
    console.log(`  our last burst, ms per job: ${o.at(-1)!.segments}`);
    const total = (p: [string, number][]) => p.reduce((a, [, n]) => a + n, 0);
    if (SCRIPT_TIME) {
      const scripts = (xs: Measured[]) => xs.at(-1)!.scriptUs;
      const byScript = (p: [string, number][]) => [...p].sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ');
      console.log(`  Redis µs per job inside each script, last bursts (BENCH_SCRIPT_TIME): bare ${total(scripts(b)).toFixed(0)}, two bare hops ${total(scripts(b2)).toFixed(0)}, ours ${total(scripts(o)).toFixed(0)}`);
      console.log(`    ours: ${byScript(scripts(o))}`);
      console.log(`    two bare hops: ${byScript(scripts(b2))}`);
    }
    console.log(`  Redis commands sent per job: bare ${f(total(profiles.bare.sent))}, two bare hops ${f(total(profiles.bare2.sent))}, ours ${f(total(profiles.ours.sent))}`);
    console.log(`    ours: ${profiles.ours.sent.map(([c, n]) => `${c} ${f(n)}`).join(', ')}`);
    console.log(`    bare: ${profiles.bare.sent.map(([c, n]) => `${c} ${f(n)}`).join(', ')}`);
    // SLOWLOG's time is Redis's own work per command (a script's includes the commands it runs): sequential jobs pay
    // the workers' fetches that find nothing; a burst is the cost at throughput.
    const us = (p: [string, number][]) => p.map(([c, n]) => `${c} ${n.toFixed(0)}`).join(', ');
    for (const [what, p] of [['the sequential jobs', profiles], [`a burst of ${burst}`, bursts]] as const) {
      if (p.ours.redisUs.length === 0) continue;
      console.log(`  Redis µs per job (SLOWLOG, ${what}): bare ${total(p.bare.redisUs).toFixed(0)}, ours ${total(p.ours.redisUs).toFixed(0)}`);
      console.log(`    ours: ${us(p.ours.redisUs)}`);
      console.log(`    bare: ${us(p.bare.redisUs)}`);
    }
  } finally {
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
}

// ---- multi: separate bot and worker processes ------------------------------------------------------------

/** CPU seconds a process (all its threads) has used, from /proc (Linux). */
function cpuSecondsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (USER_HZ = 100)
}

interface Proc {
  child: ChildProcess;
  ready: Promise<void>;
  next(): Promise<Done>;
}

/** Every bot process of the Slack variant, each told of every delivery (any bot may deliver any job). */
const slackBots: ChildProcess[] = [];

function forkRole(role: string, prefix: string, concurrency: number, platform: 'cli' | 'slack' = 'cli', limits = false): Proc {
  const child = fork(fileURLToPath(new URL('./_queue-procs.ts', import.meta.url)), [role, prefix, String(concurrency), platform, limits ? 'limits' : 'off'], { execArgv: ['--import', 'tsx'] });
  if (role === 'bot' && platform === 'slack') {
    slackBots.push(child);
    child.on('message', (m: Delivered | { type: string }) => {
      if (m.type === 'delivered') for (const other of slackBots) if (other !== child && other.connected) other.send(m);
    });
  }
  const inbox: Done[] = [];
  let wake: (() => void) | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${role} exited (${code}) before it was ready`)));
    child.on('message', (m: { type: string }) => {
      if (m.type === 'ready') resolve();
      if (m.type === 'done') {
        inbox.push(m as Done);
        wake?.();
      }
    });
  });
  return {
    child,
    ready,
    async next() {
      while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
      return inbox.shift()!;
    },
  };
}

interface Phase {
  jobsPerSecond: number;
  latenciesMs: number[];
  refused: number;
  /** CPU milliseconds per delivered job: the submitting processes, the worker processes, Redis. */
  cpuMsPerJob: { submit: number; work: number; redis: number };
  /** Commands Redis ran per delivered job, by command, most first (INFO commandstats, so every process's count; a script's own commands included). */
  redisCallsPerJob: [string, number][];
  load: number;
}

/** Calls per command so far (INFO commandstats; Lua scripts' own commands are counted under their names too). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const info = await (redis as IORedis).info('commandstats');
  return new Map([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

async function phase(submitters: Proc[], workerPids: number[], redis: Redis, go: Omit<Go, 'type' | 'tag'>): Promise<Phase> {
  const redisCpu = () => redisCpuSeconds(redis);
  const pids = submitters.map((p) => p.child.pid!);
  const cpu = () => [pids, workerPids].map((ps) => ps.reduce((a, pid) => a + cpuSecondsOf(pid), 0));
  const [s0, w0] = cpu();
  const r0 = await redisCpu();
  const calls0 = await commandCalls(redis);
  for (const [i, p] of submitters.entries()) p.child.send({ ...go, type: 'go', tag: `p${i}` } satisfies Go);
  const done = await Promise.all(submitters.map((p) => p.next()));
  const [s1, w1] = cpu();
  const r1 = await redisCpu();
  const calls1 = await commandCalls(redis);
  const latenciesMs = done.flatMap((d) => d.latenciesMs).sort((a, b) => a - b);
  const seconds = (Math.max(...done.map((d) => d.lastAt)) - Math.min(...done.map((d) => d.firstAt))) / 1000;
  const per = (s: number) => (1000 * s) / Math.max(1, latenciesMs.length);
  return {
    jobsPerSecond: latenciesMs.length / seconds,
    latenciesMs,
    refused: done.reduce((a, d) => a + d.refused, 0),
    cpuMsPerJob: { submit: per(s1! - s0!), work: per(w1! - w0!), redis: per(r1 - r0) },
    redisCallsPerJob: [...calls1].map(([c, n]): [string, number] => [c, (n - (calls0.get(c) ?? 0)) / Math.max(1, latenciesMs.length)]).filter(([c, n]) => n >= 0.05 && c !== 'info').sort((a, b) => b[1] - a[1]),
    load: loadavg()[0]!,
  };
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;

/**
 * `npm run bench -- queue multi [slack] [limits] [jobs=3000] [bots=3] [workers=3] [concurrency=16] [channels=64] [window=100] [rounds=2]`
 * `limits`: our rate limits and concurrency caps on, as with the default config, but never refusing (off otherwise).
 * `slack`: our bots are Slack bot instances (a Slack port, Slack channels, one delivery queue that every bot takes
 * from, as a Slack or Discord deployment runs), not CLI clients (a delivery queue each, its keys given a TTL on every
 * hand-over).
 * Ours: `bots` bot processes (bench/_queue-procs.ts: createCore, CLI or Slack port) and `workers` real worker processes
 * (worker/main.ts, model = bench/_noop-pipeline.ts, 2 threads × concurrency/2 runs each). Bare: as many
 * Queue.add processes and BullMQ Worker processes (concurrency each). One Redis; the two alternate `rounds` times.
 * Each submitting process keeps `window` jobs in flight; ours go to `channels` channels in turn.
 */
async function multi(args: number[], platform: 'cli' | 'slack', limits: boolean): Promise<void> {
  const [jobs = 3000, bots = 3, workers = 3, concurrency = 16, channels = 64, window = 100, rounds = 2] = args;
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-queue');
  const prefix = `{bench-${randomUUID().slice(0, 8)}}`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-queue-'));
  const configFile = join(dir, 'config.yaml');
  const threads = 2;
  writeFileSync(configFile, stringify({
    logLevel: 'warn',
    queue: { prefix },
    worker: { concurrency: threads, maxBatch: { decode: Math.ceil(concurrency / threads), diffusion: Math.ceil(concurrency / threads) }, pipelineModule: 'bench/_noop-pipeline.ts', healthPort: 0 },
  }));
  const ourWorkers: ChildProcess[] = [];
  const procs: Proc[] = [];
  try {
    for (let i = 0; i < workers; i++)
      ourWorkers.push(spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], { cwd: fileURLToPath(new URL('..', import.meta.url)), env: { ...process.env, BLIP3O_CONFIG: configFile }, stdio: ['ignore', 'inherit', 'inherit'] }));
    const bareWorkers = Array.from({ length: workers }, () => forkRole('bare-worker', prefix, concurrency));
    const bareAdds = Array.from({ length: bots }, () => forkRole('bare-add', prefix, concurrency));
    const bare2Workers = Array.from({ length: workers }, () => forkRole('bare2-worker', prefix, concurrency));
    const bare2Adds = Array.from({ length: bots }, () => forkRole('bare2-add', prefix, concurrency));
    const ourBots = Array.from({ length: bots }, () => forkRole('bot', prefix, concurrency, platform, limits));
    procs.push(...bareWorkers, ...bareAdds, ...bare2Workers, ...bare2Adds, ...ourBots);
    await Promise.all(procs.map((p) => p.ready));
    const jobsQueue = new Queue(QueueNames.jobs, { connection: redis, prefix });
    while ((await jobsQueue.getWorkersCount()) < workers) await new Promise((r) => setTimeout(r, 500)); // worker/main.ts started
    await jobsQueue.close();
    const perProcess = Math.ceil(jobs / bots);
    const go = { jobs: perProcess, window, channels };
    // warm-up: JIT, script loading, connections
    await phase(bareAdds, [], redis, { ...go, jobs: 50 });
    await phase(bare2Adds, [], redis, { ...go, jobs: 50 });
    await phase(ourBots, [], redis, { ...go, jobs: 50 });
    const bare: Phase[] = [];
    const bare2: Phase[] = [];
    const ours: Phase[] = [];
    for (let r = 0; r < rounds; r++) {
      bare.push(await phase(bareAdds, bareWorkers.map((p) => p.child.pid!), redis, go));
      bare2.push(await phase(bare2Adds, bare2Workers.map((p) => p.child.pid!), redis, go));
      ours.push(await phase(ourBots, ourWorkers.map((c) => c.pid!), redis, go));
    }
    const f = (n: number, d = 1) => n.toFixed(d);
    const line = (name: string, p: Phase) =>
      `  ${name} ${f(p.jobsPerSecond, 0).padStart(5)} jobs/s   latency p50 ${f(pct(p.latenciesMs, 0.5))} p90 ${f(pct(p.latenciesMs, 0.9))} p99 ${f(pct(p.latenciesMs, 0.99))} ms` +
      `   CPU ms/job: submit ${f(p.cpuMsPerJob.submit, 2)} work ${f(p.cpuMsPerJob.work, 2)} Redis ${f(p.cpuMsPerJob.redis, 2)}   load ${f(p.load)}${p.refused ? `   refused ${p.refused}` : ''}`;
    console.log(`queue bench, multi-process: ${bots} submitting + ${workers} worker processes per path, ${perProcess * bots} jobs per round, ${window} in flight per submitter, concurrency ${concurrency} per worker, ${channels} ${platform === 'slack' ? 'Slack channels, one delivery queue for all bots' : 'CLI channels, a delivery queue per bot'}, rate limits and caps ${limits ? 'on (never refusing)' : 'off'} (ours); one Redis`);
    for (let r = 0; r < rounds; r++) {
      console.log(`round ${r + 1}:`);
      console.log(line('bare BullMQ add → process → completed: ', bare[r]!));
      console.log(line('two bare hops (→ worker → 2nd queue):  ', bare2[r]!));
      console.log(line('ours core.handle → worker → delivered:  ', ours[r]!));
    }
    const bt = median(bare.map((p) => p.jobsPerSecond));
    const ot = median(ours.map((p) => p.jobsPerSecond));
    const bl = median(bare.map((p) => pct(p.latenciesMs, 0.5)));
    const ol = median(ours.map((p) => pct(p.latenciesMs, 0.5)));
    const calls = (p: Phase) => `${f(p.redisCallsPerJob.reduce((a, [, n]) => a + n, 0))}: ${p.redisCallsPerJob.map(([c, n]) => `${c} ${f(n, 2)}`).join(', ')}`;
    console.log(`  Redis calls per job, last round (scripts' own commands included): bare ${calls(bare.at(-1)!)}`);
    console.log(`    ours ${calls(ours.at(-1)!)}`);
    console.log(`  median: bare ${f(bt, 0)} jobs/s, ours ${f(ot, 0)} jobs/s (throughput ratio ${f(ot / bt, 2)}×); p50 latency bare ${f(bl)} ms, ours ${f(ol)} ms (${f(ol / bl, 2)}×)`);
    const b2t = median(bare2.map((p) => p.jobsPerSecond));
    const b2l = median(bare2.map((p) => pct(p.latenciesMs, 0.5)));
    console.log(`  against two bare hops (the floor of a worker handing results to another process): ${f(b2t, 0)} jobs/s, p50 ${f(b2l)} ms; ours ${f(ot / b2t, 2)}× the throughput, ${f(ol / b2l, 2)}× the p50 latency`);
  } finally {
    for (const p of procs) if (p.child.connected) p.child.send({ type: 'stop' });
    for (const c of ourWorkers) c.kill('SIGTERM');
    await Promise.all([...procs.map((p) => p.child), ...ourWorkers].map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    await cleanup(redis, prefix);
    await closeRedis(redis);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- progress: jobs that report every step ----------------------------------------------------------------

/**
 * `npm run bench -- queue progress [jobs=32] [stepMs=20] [concurrency=8] [rounds=2]`
 * Real jobs report every DiT and decoder step (an /imagine with the defaults: 30 + 51 steps, plus conditioning), and
 * each report the worker writes is BullMQ's updateProgress (the job's hash and an event every bot instance reads).
 * Two of our paths on one Redis, alternating `rounds` times: the worker writing every report, and writing them
 * coalesced (src/jobs/progress.ts: at most twice per edit interval of the destination; a CLI's is 100 ms, Discord's
 * and Slack's 1,500 ms by default). The no-op pipeline sleeps `stepMs` per step. Per job: progress writes, Redis
 * commands sent, Redis and this process's CPU, and the progress edits the user saw (the relay's showProgress calls).
 */
async function progress(args: number[]): Promise<void> {
  const [jobs = 32, stepMs = 20, concurrency = 8, rounds = 2] = args;
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-queue');
  const prefix = `{bench-${randomUUID().slice(0, 8)}}`;
  try {
    const every = await ourPath(redis, `${prefix}e`, concurrency, { stepMs, progressWriteMs: () => 0 });
    const coalesced = await ourPath(redis, `${prefix}c`, concurrency, { stepMs });
    // As a Discord or Slack destination is written (half their default 1,500 ms edit interval); the CLI port here
    // still edits every 100 ms, so its "edits shown" are then the writes that reached it.
    const chat = await ourPath(redis, `${prefix}d`, concurrency, { stepMs, progressWriteMs: () => 750 });
    type Row = { wallMs: number; writes: number; commands: number; redisMs: number; netRedisMs: number; nodeMs: number; edits: number };
    // Redis's CPU while the three paths sit idle (their workers' blocking reads, timers): a job of 81 steps takes long
    // enough that this is a share of each job's Redis CPU; taken off for the net figure.
    const idleSeconds = 3;
    const i0 = await redisCpuSeconds(redis);
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const idlePerSecond = ((await redisCpuSeconds(redis)) - i0) / idleSeconds;
    const measureOne = async (path: typeof every, base: number): Promise<Row> => {
      const before = new Map(sent);
      const edits0 = path.edits();
      const r0 = await redisCpuSeconds(redis);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let k = 0; k < jobs; k += concurrency) await Promise.all(Array.from({ length: Math.min(concurrency, jobs - k) }, (_, i) => path.one(base + k + i)));
      const wallMs = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 300)); // the last acknowledgements
      const c = process.cpuUsage(c0);
      const r1 = await redisCpuSeconds(redis);
      const span = (performance.now() - t0) / 1000; // the jobs and the wait for their last acknowledgements
      const delta = (name?: string) => [...sent].filter(([n]) => !name || n === name).reduce((a, [n, v]) => a + v - (before.get(n) ?? 0), 0) / jobs;
      return { wallMs: wallMs / jobs, writes: delta('lua:updateProgress:6.7.0'), commands: delta(), redisMs: (1000 * (r1 - r0)) / jobs, netRedisMs: (1000 * (r1 - r0 - idlePerSecond * span)) / jobs, nodeMs: (c.user + c.system) / 1000 / jobs, edits: (path.edits() - edits0) / jobs };
    };
    await measureOne(every, 0); // warm-up
    await measureOne(coalesced, 0);
    await measureOne(chat, 0);
    const e: Row[] = [];
    const c: Row[] = [];
    const d: Row[] = [];
    for (let r = 0; r < rounds; r++) {
      e.push(await measureOne(every, (r + 1) * 100_000));
      c.push(await measureOne(coalesced, (r + 1) * 100_000 + 30_000));
      d.push(await measureOne(chat, (r + 1) * 100_000 + 60_000));
    }
    await chat.close();
    await coalesced.close();
    await every.close();
    const m = (rows: Row[], k: keyof Row) => median(rows.map((x) => x[k]));
    const f = (n: number, d = 2) => n.toFixed(d);
    console.log(`queue bench, progress: ${jobs} imagine jobs per round (30 DiT + 51 decoder steps, ${stepMs} ms each), ${concurrency} at once, CLI destination (edits every 100 ms); median of ${rounds} alternating rounds   (load average ${loadavg().map((x) => x.toFixed(1)).join(' ')})`);
    const line = (name: string, rows: Row[]) =>
      `  ${name} progress writes ${f(m(rows, 'writes'), 1).padStart(5)}/job   Redis commands ${f(m(rows, 'commands'), 1).padStart(6)}/job   Redis CPU ${f(m(rows, 'redisMs'))} ms/job (${f(m(rows, 'netRedisMs'))} net of idle)   this process ${f(m(rows, 'nodeMs'))} ms/job   edits shown ${f(m(rows, 'edits'), 1)}/job   wall ${f(m(rows, 'wallMs'), 0)} ms/job`;
    console.log(line('every report written:  ', e));
    console.log(line('coalesced (CLI, 50 ms):', c));
    console.log(line('as chat (750 ms):     ', d));
    const ratio = (x: Row[]) => `progress writes ${f(m(x, 'writes') / m(e, 'writes'))}×, Redis commands ${f(m(x, 'commands') / m(e, 'commands'))}×, Redis CPU ${f(m(x, 'redisMs') / m(e, 'redisMs'))}× (net of idle ${f(m(x, 'netRedisMs') / m(e, 'netRedisMs'))}×), this process's CPU ${f(m(x, 'nodeMs') / m(e, 'nodeMs'))}×`;
    console.log(`  coalesced ÷ every: ${ratio(c)}`);
    console.log(`  as chat ÷ every:   ${ratio(d)}`);
  } finally {
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
}

// ---- memory: what delivered images leave in Redis ----------------------------------------------------------

/**
 * `jobs` /imagines with a `pngKiB` image (a real 1024² PNG is 1–2 MiB) and `jobs` /asks about a 1024² upload (a noise
 * PNG, ≈ 3 MiB: a phone photo's size) through our path twice, side by side: once with every blob kept as before the
 * release existed (keepDeliveredSeconds = blobs.ttlSeconds: a release never shortens a TTL), once released as
 * delivered or answered (keepDeliveredSeconds 1 s here; its default otherwise). Then, once the grace has passed, the
 * bytes still in Redis (MEMORY USAGE of every blob key) per job, and what each holds at a steady one job of each kind
 * per second with the shipped defaults. The result cache is off in both: it holds its own copies, bounded by
 * cache.maxBytes.
 */
async function memory([jobs = 100, pngKiB = 1536]: number[]): Promise<void> {
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-memory');
  const { ttlSeconds, keepDeliveredSeconds: keepDelivered } = loadConfig({ overrides: {} }).blobs;
  const tag = randomUUID().slice(0, 8);
  const variants = [
    { name: 'kept blobs.ttlSeconds (before)', prefix: `{bench-${tag}-kept}`, keep: ttlSeconds, lives: ttlSeconds },
    { name: 'released (now)', prefix: `{bench-${tag}-released}`, keep: 1, lives: keepDelivered },
  ];
  const upload = new Uint8Array(await sharp(randomBytes(1024 * 1024 * 3), { raw: { width: 1024, height: 1024, channels: 3 } }).png().toBuffer());
  const held = async (pattern: string) => {
    let keys = 0;
    let bytes = 0;
    for await (const batch of (redis as IORedis).scanStream({ match: pattern, count: 500 })) {
      for (const key of batch as string[]) {
        keys++;
        bytes += Number(await (redis as IORedis).memory('USAGE', key)) || 0;
      }
    }
    return { keys, bytes };
  };
  try {
    const paths = await Promise.all(variants.map((v) => ourPath(redis, v.prefix, 4, { pngBytes: pngKiB * 1024, keepDeliveredSeconds: v.keep })));
    for (let i = 0; i < jobs; i += 10) { // alternating batches, so load hits both alike
      for (const p of paths) {
        const batch = Array.from({ length: Math.min(10, jobs - i) }, (_, k) => i + k);
        await Promise.all(batch.flatMap((n) => [p.one(n), p.ask(n, upload)]));
      }
    }
    await new Promise((r) => setTimeout(r, 2_500)); // past the 1 s grace
    const rows = await Promise.all(variants.map(async (v) => ({ out: await held(`${v.prefix}:blob:output:*`), up: await held(`${v.prefix}:blob:input:*`) })));
    for (const p of paths) await p.close();
    const mib = (n: number) => (n / 2 ** 20).toFixed(1);
    const kib = (n: number) => (n / 1024).toFixed(0);
    const [kept, released] = [rows[0]!, rows[1]!];
    // Redis's own size of one blob of each kind (allocator rounding included), from the variant that kept them all
    const perPng = kept.out.bytes / Math.max(1, kept.out.keys);
    const perUpload = kept.up.bytes / Math.max(1, kept.up.keys);
    console.log(`queue bench, memory: ${jobs} /imagines (a ${pngKiB} KiB image each) and ${jobs} /asks (a ${kib(upload.byteLength)} KiB upload each) per variant; blob bytes left in Redis 2.5 s after the last was delivered`);
    for (const [i, v] of variants.entries()) {
      const r = rows[i]!;
      console.log(`  ${v.name.padEnd(30)} PNGs ${String(r.out.keys).padStart(4)} keys ${mib(r.out.bytes).padStart(7)} MiB, uploads ${String(r.up.keys).padStart(4)} keys ${mib(r.up.bytes).padStart(7)} MiB (${kib((r.out.bytes + r.up.bytes) / jobs)} KiB per imagine + ask); at one of each per second, with the defaults, Redis holds ${mib((perPng + perUpload) * v.lives)} MiB of them (each ${v.lives} s)`);
    }
    const total = (r: (typeof rows)[number]) => r.out.bytes + r.up.bytes;
    console.log(`  ratio released/kept: bytes left after the grace ${(total(released) / Math.max(1, total(kept))).toFixed(3)}×; at a steady rate ${(keepDelivered / ttlSeconds).toFixed(4)}× (${keepDelivered} s against ${ttlSeconds} s)`);
  } finally {
    for (const v of variants) await cleanup(redis, v.prefix);
    await closeRedis(redis);
  }
}

// ---- soak: what a bot and a worker keep in memory per job -----------------------------------------------------

/**
 * Our path (core, progress relay, delivery consumer, limits gate, fair scheduler, worker processor, model thread with
 * the no-op pipeline: one bot and one worker in this process), `rounds` rounds of `jobs` tiny jobs, each from its own
 * channel and user; the heap after a full collection once warm and after each round. A structure kept per job, user or
 * channel shows as a heap that climbs round after round; a bounded one levels off. A measurement, not a limit.
 */
async function soak([jobs = 3000, rounds = 3, concurrency = 8]: number[]): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (see the top of this file)');
  const secrets = loadSecrets();
  const redis = createRedis(secrets.REDIS_URL, 'bench-soak');
  const prefix = `{bench-${randomUUID().slice(0, 8)}}`;
  const heapMiB = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return process.memoryUsage().heapUsed / 2 ** 20;
  };
  let next = 0;
  const runJobs = async (count: number) => {
    for (let done = 0; done < count; done += concurrency * 4) {
      await Promise.all(Array.from({ length: Math.min(concurrency * 4, count - done) }, () => ours.one(next++)));
      marks.clear(); // the bench's own timings, not the path's
    }
  };
  const ours = await ourPath(redis, prefix, concurrency);
  try {
    await runJobs(Math.min(500, jobs)); // warm: JIT, pools, scripts loaded
    const warm = await heapMiB();
    console.log(`queue bench, soak: ${rounds} rounds of ${jobs} jobs (one channel and user each), concurrency ${concurrency}; heap used after a full collection`);
    console.log(`  warm (after ${next} jobs): ${warm.toFixed(1)} MiB`);
    let last = warm;
    for (let r = 1; r <= rounds; r++) {
      await runJobs(jobs);
      const now = await heapMiB();
      console.log(`  after round ${r} (${next} jobs): ${now.toFixed(1)} MiB (${now - last >= 0 ? '+' : ''}${(now - last).toFixed(2)} MiB, ${(((now - last) * 2 ** 20) / jobs).toFixed(0)} bytes per job)`);
      last = now;
    }
    console.log(`  whole run: ${(last - warm >= 0 ? '+' : '') + (last - warm).toFixed(2)} MiB over ${next - Math.min(500, jobs)} jobs`);
  } finally {
    await ours.close();
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
}
