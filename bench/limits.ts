// npm run bench -- limits [--requests N] [--inflight K]
// What limits and fair scheduling cost a submission, measured side by side in one run against the same Redis:
//   add          queue.add of the job (what a submission costs without a limiter)
//   admit+add    the limiter's atomic check over channel/user/workspace, then queue.add
//   gate         admit + parked add + the fair scheduler's enqueue (+ releasing the channel's head): issue 8's path
//   budget+gate  the GPU-second budget check (estimate + reservation, src/accounting/usage.ts) before the gate
//   cache+budget+gate  the result-cache / single-flight lookup (a miss), then budget+gate, then the flight's
//                claim and confirm: today's whole submission path (src/cache/results.ts); its median minus
//                budget+gate's is what the cache adds to a request that is not cached
// The three are interleaved in chunks so drift (other load on the machine) hits them alike. Then admission
// decisions per second with K requests in flight, next to queue.add per second under the same concurrency.
// Requests are spread over 1000 users, 100 channels and 10 workspaces. Rates are set high enough that every
// request is admitted (so admit+add really adds); the default caps stay on (their self-healing scan runs) and
// each job's slot is released right away, as if it finished. Denials are timed separately: a channel whose
// bucket is empty, so the script reads every scope and writes nothing.
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig, loadSecrets } from '../src/config/load.ts';
import { QueueNames, type Destination } from '../src/jobs/contract.ts';
import { createLimiter } from '../src/limits/limiter.ts';
import { createFairScheduler } from '../src/scheduling/fair.ts';
import { requestDigest } from '../src/cache/key.ts';
import { ResultCache } from '../src/cache/results.ts';
import { Usage } from '../src/accounting/usage.ts';
import type { ImagineRequest } from '../src/jobs/contract.ts';

const flag = (args: string[], name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : fallback;
};

const destination = (i: number): Destination => ({
  platform: 'discord', guildId: `g${i % 10}`, channelId: `c${i % 100}`, userId: `u${i % 1000}`, applicationId: 'bench',
});

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export async function run(args: string[]): Promise<void> {
  const n = flag(args, '--requests', 3000);
  const inflight = flag(args, '--inflight', 64);
  const prefix = `bench-limits-${randomUUID().slice(0, 8)}`;
  const url = loadSecrets().REDIS_URL;
  const defaults = loadConfig({ overrides: { queue: { prefix } } }).limits;
  const open = (l: typeof defaults.channel) => ({ ...l, requestsPerWindow: 1_000_000, burst: 1_000_000 });
  const config = loadConfig({
    overrides: {
      logLevel: 'warn',
      queue: { prefix },
      limits: { channel: open(defaults.channel), user: open(defaults.user), workspace: open(defaults.workspace), channelOverrides: { 'discord:gx:full': { requestsPerWindow: 1, windowSeconds: 3600, burst: 1, maxConcurrent: 0 } } },
    },
  });
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  const queue = new Queue(QueueNames.jobs, { connection: redis, prefix });
  const limiter = createLimiter(redis, config);
  const scheduler = createFairScheduler(redis, config, queue);
  const usage = new Usage(redis, config);
  const cache = new ResultCache(redis, config);
  await cache.publishModel('bench-model', 'bench-worker'); // one model: lookups really read the cache
  let seq = 0;
  const later: (() => Promise<unknown>)[] = [];
  const runLater = async () => {
    for (const f of later.splice(0)) await f();
  };
  const request = (id: string, d: Destination): ImagineRequest => ({
    v: 1, id, destination: d, submittedAt: Date.now(), kind: 'imagine', prompt: `bench prompt ${id}`,
    options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' },
  });
  const job = (i: number) => ({ id: `j${++seq}x`, d: destination(i) });
  /** Budget admission, the limiter, then a parked add and fair-scheduling enqueue weighted by the estimate. */
  const budgetAndGate = async (id: string, d: Destination, r: ImagineRequest) => {
    const b = await usage.admit(id, d, r);
    const a = await limiter.admit(id, d);
    if (b.admitted && a.admitted) {
      await queue.add('imagine', { destination: d }, { jobId: id, ...scheduler.parkedOptions() });
      await scheduler.enqueue(id, d, usage.costUnits(b.estimate));
    }
    later.push(() => Promise.all([limiter.release(id), usage.release(id)]));
  };

  const paths = {
    add: async (i: number) => {
      const { id, d } = job(i);
      await queue.add('imagine', { destination: d }, { jobId: id });
    },
    'admit+add': async (i: number) => {
      const { id, d } = job(i);
      const a = await limiter.admit(id, d);
      if (a.admitted) await queue.add('imagine', { destination: d }, { jobId: id });
      await limiter.release(id);
    },
    gate: async (i: number) => {
      const { id, d } = job(i);
      const a = await limiter.admit(id, d);
      if (a.admitted) {
        await queue.add('imagine', { destination: d }, { jobId: id, ...scheduler.parkedOptions() });
        await scheduler.enqueue(id, d);
      }
      await limiter.release(id);
    },
    // The next three hand their clean-up (releasing the reservation, ending the flight: a worker's or a later
    // step's work, not the submission's) to `later`, which runs untimed.
    'budget+gate': async (i: number) => {
      const { id, d } = job(i);
      await budgetAndGate(id, d, request(id, d));
    },
    'lookup+budget+gate': async (i: number) => {
      const { id, d } = job(i);
      const r = request(id, d);
      const found = await cache.lookup(requestDigest(r)!, id, JSON.stringify(r));
      if (found.kind !== 'miss') throw new Error(`bench requests are unique; got ${found.kind}`);
      await budgetAndGate(id, d, r);
    },
    'cache+flight+budget+gate': async (i: number) => {
      const { id, d } = job(i);
      const r = request(id, d);
      const digest = requestDigest(r)!;
      const json = JSON.stringify(r);
      const found = await cache.lookup(digest, id, json);
      if (found.kind !== 'miss') throw new Error(`bench requests are unique; got ${found.kind}`);
      const b = await usage.admit(id, d, r);
      const a = await limiter.admit(id, d);
      if (b.admitted && a.admitted && (await cache.claim(digest, id, json)).leads) {
        await queue.add('imagine', { destination: d }, { jobId: id, ...scheduler.parkedOptions() });
        await scheduler.enqueue(id, d, usage.costUnits(b.estimate));
        await cache.confirm(digest, id);
      }
      later.push(() => Promise.all([limiter.release(id), usage.release(id), cache.close(digest, id)]));
    },
  };
  type Path = keyof typeof paths;
  const latencies: Record<Path, number[]> = { add: [], 'admit+add': [], gate: [], 'budget+gate': [], 'lookup+budget+gate': [], 'cache+flight+budget+gate': [] };

  try {
    // warm up: scripts loaded, connections open
    for (let i = 0; i < 50; i++) for (const p of Object.values(paths)) await p(i);
    await runLater();
    const chunk = 100;
    for (let start = 0; start < n; start += chunk) {
      for (const name of Object.keys(paths) as Path[]) {
        for (let i = start; i < Math.min(n, start + chunk); i++) {
          const t0 = process.hrtime.bigint();
          await paths[name](i);
          latencies[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        await runLater();
      }
    }

    // throughput with K in flight: admission decisions alone vs queue.add alone
    const throughput = async (fn: (i: number) => Promise<unknown>): Promise<number> => {
      let next = 0;
      const t0 = process.hrtime.bigint();
      await Promise.all(Array.from({ length: inflight }, async () => {
        while (next < n) await fn(next++);
      }));
      return n / (Number(process.hrtime.bigint() - t0) / 1e9);
    };
    let admitted = 0;
    const decide = async (i: number) => {
      const { id, d } = job(i);
      const a = await limiter.admit(id, d);
      if (a.admitted) admitted++;
      await limiter.release(id);
    };
    const full: Destination = { platform: 'discord', guildId: 'gx', channelId: 'full', userId: 'ux', applicationId: 'bench' };
    await limiter.admit('fill', full);
    let denied = 0;
    const deny = async () => {
      const a = await limiter.admit(`d${++seq}x`, full);
      if (!a.admitted) denied++;
    };
    const decisionsPerS = await throughput(decide);
    const denialsPerS = await throughput(deny);
    const addsPerS = await throughput(paths.add);

    const base = median(latencies.add);
    console.log(`limits bench: ${n} requests per path, interleaved in chunks of ${chunk}; ${inflight} in flight for throughput; Redis ${url}`);
    console.log('path                      median ms   mean ms   added vs add (median)   ratio');
    for (const name of Object.keys(paths) as Path[]) {
      const m = median(latencies[name]);
      console.log(
        `${name.padEnd(24)}  ${m.toFixed(3).padStart(9)}  ${mean(latencies[name]).toFixed(3).padStart(8)}   ${(m - base).toFixed(3).padStart(12)} ms   ${(m / base).toFixed(2).padStart(8)}×`,
      );
    }
    const m = (p: Path) => median(latencies[p]);
    console.log(`at the median: the GPU-second budget check adds ${(m('budget+gate') - m('gate')).toFixed(3)} ms; the result-cache lookup adds ${(m('lookup+budget+gate') - m('budget+gate')).toFixed(3)} ms (target ≤ 0.5 ms); single flight's claim + confirm add ${(m('cache+flight+budget+gate') - m('lookup+budget+gate')).toFixed(3)} ms more`);
    console.log(`admission decisions/s (admit + release): ${decisionsPerS.toFixed(0)}  (${admitted} of ${n} admitted)`);
    console.log(`admission decisions/s (denials):         ${denialsPerS.toFixed(0)}  (${denied} of ${n} denied)`);
    console.log(`queue.add/s, same concurrency:           ${addsPerS.toFixed(0)}  → admissions per add: ${(decisionsPerS / addsPerS).toFixed(2)}×, denials per add: ${(denialsPerS / addsPerS).toFixed(2)}×`);
  } finally {
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    for (let cursor = '0'; ; ) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
    await redis.quit();
  }
}
