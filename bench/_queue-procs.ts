// The child processes of `npm run bench -- queue multi` (bench/queue.ts), one role each (argv[2]):
//   bot          a bot process: createCore with a CLI port; submits its share of jobs through core.handle (admission,
//                fair scheduling) and times each until its result is delivered through its own delivery queue.
//                argv[5] = 'slack': a Slack port instead, for Slack channels, as a Slack bot instance runs: every bot
//                takes results from the one shared delivery queue, so the one that delivers a job tells the parent,
//                which tells every bot ('delivered'), and the submitter's timer stops
//   bare-add     bare BullMQ's counterpart: Queue.add, timed until QueueEvents reports the job completed
//   bare-worker  a bare BullMQ Worker whose processor answers at once
//   bare2-add    two bare hops, the floor of our shape: Queue.add, timed until this process's own Worker on its own
//                second queue (as our CLI bots' delivery queues) takes the job the worker handed to it
//   bare2-worker a bare BullMQ Worker whose processor adds each job to the second queue its data names
// Our worker processes are the real worker/main.ts with bench/_noop-pipeline.ts as the model.
// Talks to the parent over the IPC channel: 'ready' once started; on {go} it runs and answers {done}.
// (Files starting with '_' are not benchmarks; bench/main.ts skips them.)
import { randomInt, randomUUID } from 'node:crypto';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { createCore } from '../bots/core/submit.ts';
import type { PlatformPort } from '../bots/core/port.ts';
import { loadConfig, loadSecrets } from '../src/config/load.ts';
import type { CliDestination, Destination, JobResult, SlackDestination } from '../src/jobs/contract.ts';
import { jobIdFor } from '../src/jobs/queue.ts';
import { createLogger } from '../src/log.ts';
import { closeRedis, createRedis, duplicateRedis } from '../src/redis.ts';

export interface Go {
  type: 'go';
  /** Jobs this process submits. */
  jobs: number;
  /** Jobs in flight at once (a new one is submitted as one is delivered). */
  window: number;
  /** Jobs go to `channels` channels in turn (fair scheduling releases one job per channel at a time). */
  channels: number;
  /** Distinguishes this process's jobs and channels' users. */
  tag: string;
}

export interface Done {
  type: 'done';
  /** Submission to delivery, per job, in milliseconds. */
  latenciesMs: number[];
  /** Epoch ms of the first submission and of the last delivery. */
  firstAt: number;
  lastAt: number;
  refused: number;
}

interface Runner {
  /** Submit one job; resolves once its result is delivered (false: refused). */
  one(i: number, go: Go): Promise<boolean>;
  close(): Promise<void>;
}

const send = (m: unknown) => process.send!(m);

/**
 * Jobs numbered across every `go` of this process: a number used twice would be a duplicate interaction (same job
 * id, no new job) or an identical request (served from the result cache), and measure neither path.
 */
let counter = 0;

/** Keeps `go.window` jobs in flight until `go.jobs` have been delivered. */
async function drive(runner: Runner, go: Go): Promise<Done> {
  const latenciesMs: number[] = [];
  let started = 0;
  let refused = 0;
  const firstAt = Date.now();
  const lane = async () => {
    while (started < go.jobs) {
      started++;
      const i = counter++;
      const t = performance.now();
      if (await runner.one(i, go)) latenciesMs.push(performance.now() - t);
      else refused++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(go.window, go.jobs) }, lane));
  return { type: 'done', latenciesMs, firstAt, lastAt: Date.now(), refused };
}

/** Results this process delivered for other processes' jobs, and theirs for its own (platform 'slack'). */
export interface Delivered {
  type: 'delivered';
  jobId: string;
}

async function bot(prefix: string, deliveryConcurrency: number, platform: 'cli' | 'slack', limitsOn: boolean): Promise<Runner> {
  // Limits off: this measures the path. On (argv[6] = 'limits'): the rate limits and caps do all their work, as with
  // the default config, but never refuse.
  const off = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
  const never = { requestsPerWindow: 1_000_000, windowSeconds: 60, burst: 1_000_000, maxConcurrent: 100_000 };
  const limit = limitsOn ? never : off;
  const config = loadConfig({ overrides: { logLevel: 'warn', queue: { prefix }, limits: { channel: limit, user: limit, workspace: limit } } });
  const waiters = new Map<string, () => void>();
  const port: PlatformPort = {
    platform,
    async showProgress() {},
    async deliver(result: JobResult) {
      if (platform === 'slack') send({ type: 'delivered', jobId: result.jobId } satisfies Delivered);
      waiters.get(result.jobId)?.();
    },
  };
  if (platform === 'slack') process.on('message', (m: Delivered | { type: string }) => void (m.type === 'delivered' && waiters.get((m as Delivered).jobId)?.()));
  const clientId = randomUUID();
  const seedBase = randomInt(2 ** 31); // distinct prompts across processes: no result-cache hits
  const core = createCore({ config, secrets: loadSecrets(), ports: [port], ...(platform === 'cli' ? { cliClientId: clientId } : {}), log: createLogger('bench-bot', 'warn'), deliveryConcurrency });
  await core.start();
  return {
    async one(i, go) {
      const channelId = `bench-${i % go.channels}`;
      const destination: Destination =
        platform === 'cli'
          ? ({ platform, clientId, channelId, userId: `${go.tag}-${i % 7}` } satisfies CliDestination)
          : ({ platform, teamId: 'T-bench', channelId, userId: `${go.tag}-${i % 7}` } satisfies SlackDestination);
      let delivered!: () => void;
      const done = new Promise<void>((r) => (delivered = r));
      const dedupeKey = `${clientId}-${i}`;
      // Registered before handle(): on a fast path the result can be delivered before handle() returns.
      const jobId = jobIdFor(platform, dedupeKey);
      waiters.set(jobId, delivered);
      const reply = await core.handle({ input: { command: 'imagine', prompt: 'a red fox in snow', seed: seedBase + i }, destination, dedupeKey, isAdmin: false });
      if (reply.kind !== 'queued') {
        waiters.delete(jobId);
        return false;
      }
      await done;
      waiters.delete(jobId);
      return true;
    },
    close: () => core.stop(),
  };
}

/**
 * Bare BullMQ's submitter: Queue.add, timed until the job is done. One hop: QueueEvents reports it completed. Two
 * hops: the worker hands it to this process's own second queue (named in the job), whose Worker here takes it.
 */
async function bareAdd(prefix: string, concurrency: number, hops: 1 | 2): Promise<Runner> {
  const name = hops === 1 ? 'bare' : 'bare2';
  const redis = createRedis(loadSecrets().REDIS_URL, `bench-${name}-add`);
  const queue = new Queue(name, { connection: redis, prefix });
  const tag = randomUUID().slice(0, 8);
  const out = `bare2-out-${tag}`;
  const waiters = new Map<string, () => void>();
  let done: QueueEvents | Worker;
  if (hops === 1) {
    done = new QueueEvents(name, { connection: duplicateRedis(redis), prefix });
    done.on('completed', ({ jobId }) => waiters.get(jobId)?.());
  } else {
    done = new Worker(out, async (job) => job.data, { connection: redis, prefix, concurrency });
    done.on('completed', (job) => waiters.get(job.id!)?.());
  }
  await done.waitUntilReady();
  return {
    async one(i) {
      const id = `b${tag}-${i}`;
      const delivered = new Promise<void>((r) => waiters.set(id, r));
      await queue.add(name, { n: i, out, prompt: 'a red fox in snow' }, { jobId: id, removeOnComplete: true });
      await delivered;
      waiters.delete(id);
      return true;
    },
    async close() {
      await done.close();
      await queue.close();
      await closeRedis(redis);
    },
  };
}

async function bareWorker(prefix: string, concurrency: number): Promise<Runner> {
  const redis = createRedis(loadSecrets().REDIS_URL, 'bench-bare-worker');
  const worker = new Worker('bare', async (job) => ({ echoed: job.data.n }), { connection: redis, prefix, concurrency });
  await worker.waitUntilReady();
  return {
    one: async () => true,
    async close() {
      await worker.close();
      await closeRedis(redis);
    },
  };
}

async function bare2Worker(prefix: string, concurrency: number): Promise<Runner> {
  const redis = createRedis(loadSecrets().REDIS_URL, 'bench-bare2-worker');
  const outs = new Map<string, Queue>();
  const worker = new Worker('bare2', async (job) => {
    const name = String(job.data.out);
    let q = outs.get(name);
    if (!q) outs.set(name, (q = new Queue(name, { connection: redis, prefix })));
    await q.add('out', { echoed: job.data.n }, { jobId: job.id!, removeOnComplete: true });
    return { echoed: job.data.n };
  }, { connection: redis, prefix, concurrency });
  await worker.waitUntilReady();
  return {
    one: async () => true,
    async close() {
      await worker.close();
      for (const q of outs.values()) await q.close();
      await closeRedis(redis);
    },
  };
}

async function main(): Promise<void> {
  const [role, prefix, concurrency, platform] = [process.argv[2], process.argv[3]!, Number(process.argv[4] ?? 16), process.argv[5] === 'slack' ? 'slack' : 'cli'] as const;
  const runners: Record<string, () => Promise<Runner>> = {
    bot: () => bot(prefix, concurrency, platform, process.argv[6] === 'limits'),
    'bare-add': () => bareAdd(prefix, concurrency, 1),
    'bare-worker': () => bareWorker(prefix, concurrency),
    'bare2-add': () => bareAdd(prefix, concurrency, 2),
    'bare2-worker': () => bare2Worker(prefix, concurrency),
  };
  const runner = role && role in runners ? await runners[role]!() : undefined;
  if (!runner) throw new Error(`unknown role ${role}`);
  process.on('message', (m: Go | { type: 'stop' } | Delivered) => {
    if (m.type === 'go') void drive(runner, m).then(send);
    else if (m.type === 'stop') void runner.close().then(() => process.exit(0));
  });
  send({ type: 'ready' });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
