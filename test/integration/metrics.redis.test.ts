// /metrics after a few jobs, over real Redis: the worker's processor (worker/processor.ts) on a BullMQ Worker
// running the test-double pipeline in-process, the bots' delivery consumer (bots/core/delivery.ts) posting to a
// recording port, each side with its own registry served by startHealthServer, scraped over loopback HTTP.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue, type Worker } from 'bullmq';
import { startDeliveryWorker } from '../../bots/core/delivery.ts';
import { createBlobStore } from '../../src/blobs/index.ts';
import { loadConfig } from '../../src/config/load.ts';
import { CONTRACT_VERSION, QueueNames, type JobRequest } from '../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import { createJobsQueue, createQueueWorker, jobOptions } from '../../src/jobs/queue.ts';
import { createLogger } from '../../src/log.ts';
import { observeDeliveryWorker, observeJobWorker, trackQueue } from '../../src/observability/hooks.ts';
import { startHealthServer, type HealthServer } from '../../src/observability/http.ts';
import { createMetrics, reportExecutionProvider } from '../../src/observability/metrics.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { createProcessor, type ProcessOutcome } from '../../worker/processor.ts';
import { createPipeline } from '../doubles/pipeline.ts';
import { cleanup, makeHarness, REDIS_URL, RecordingPort, spawnTs, startWorker } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';
import { freePort } from '../doubles/free-port.ts';
import { startRedisServer } from '../doubles/redis-processes.ts';

const prefix = `t-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { logLevel: 'warn', queue: { prefix, attempts: 2, backoffMs: 50, deliveryAttempts: 3, deliveryBackoffMs: 50 } } });
const log = createLogger('metrics-test', 'warn');
const redis = createRedis(REDIS_URL, 'metrics-test');

const workerMetrics = createMetrics('worker');
const botMetrics = createMetrics('bot');
let workerHttp: HealthServer;
let botHttp: HealthServer;
let jobsWorker: Worker;
let deliveryWorker: Worker;
let jobsQueue: Queue;
let deliveryQueue: Queue;
let processorClose: () => Promise<void>;
const port = new RecordingPort('discord');
let failDeliveriesLeft = 1; // the first post fails once (a platform hiccup), then succeeds on retry

function imagine(id: string, prompt: string, channelId: string): JobRequest {
  return {
    v: CONTRACT_VERSION,
    id,
    kind: 'imagine',
    submittedAt: Date.now(),
    destination: { platform: 'discord', guildId: 'g1', channelId, userId: 'u1', applicationId: 'a1' },
    prompt,
    options: { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' },
  };
}

beforeAll(async () => {
  const pipeline = await createPipeline({
    modelDir: '',
    dtype: 'fp32',
    executionProvider: 'cpu',
    intraOpThreads: 0,
    understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
    extra: { stepDelayMs: 5, failures: { 'refuse me': 'user', 'always breaks': 'transient' } },
  });
  const blobs = createBlobStore(config, redis);
  const processor = createProcessor({
    config,
    redis,
    blobs,
    log,
    host: { generate: (r, run) => pipeline.generate(r, run), understand: (r, run) => pipeline.understand(r, run), check: (r, run) => pipeline.check(r, run) },
  });
  processorClose = async () => {
    await processor.close();
    await pipeline.close();
  };
  jobsWorker = createQueueWorker<JobRequest, ProcessOutcome>(config, redis, QueueNames.jobs, processor.process, { concurrency: 1 });
  observeJobWorker(workerMetrics, jobsWorker, () => 'cpu');
  reportExecutionProvider(workerMetrics, 'cpu', 'auto');
  jobsQueue = createJobsQueue(config, redis);
  trackQueue(workerMetrics, jobsQueue);

  const flakyPort = Object.assign(Object.create(port) as RecordingPort, {
    deliver: async (...args: Parameters<RecordingPort['deliver']>) => {
      if (failDeliveriesLeft-- > 0) throw new Error('discord answered 502');
      return port.deliver(...args);
    },
  });
  deliveryWorker = startDeliveryWorker({ config, redis, blobs, ledger: new DeliveryLedger(redis, config), port: flakyPort, log }, QueueNames.delivery('discord'), 1);
  observeDeliveryWorker(botMetrics, deliveryWorker);
  deliveryQueue = new Queue(QueueNames.delivery('discord'), { connection: redis, prefix });
  trackQueue(botMetrics, deliveryQueue);

  workerHttp = await startHealthServer({ host: '127.0.0.1', port: 0, registry: workerMetrics.registry, readiness: { redis: async () => (await redis.ping()) === 'PONG' || 'no PONG' } });
  botHttp = await startHealthServer({ host: '127.0.0.1', port: 0, registry: botMetrics.registry });
  await Promise.all([jobsWorker.waitUntilReady(), deliveryWorker.waitUntilReady()]);
});

afterAll(async () => {
  await Promise.all([jobsWorker?.close(), deliveryWorker?.close()]);
  await processorClose?.();
  await Promise.all([jobsQueue?.close(), deliveryQueue?.close(), workerHttp?.close(), botHttp?.close()]);
  await cleanup(redis, prefix);
  await closeRedis(redis);
});

const scrape = async (s: HealthServer): Promise<string> => {
  const res = await fetch(`${s.url}/metrics`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
};
/** The value of one sample line, e.g. value(text, 'blip3o_deliveries_total', {platform: 'discord', outcome: 'delivered'}). */
function value(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const got = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('/metrics after a few jobs', () => {
  it('exposes queue depth and wait, stage latency, GPU-seconds per platform, deliveries and failures by reason', async () => {
    await jobsWorker.pause(); // let a backlog build so queue depth is visible
    const add = (r: JobRequest) => jobsQueue.add(r.kind, r, { ...jobOptions(config), jobId: r.id });
    await add(imagine('ja1', 'a red fox', 'c-busy'));
    await add(imagine('ja2', 'a blue fox', 'c-busy'));
    await add(imagine('jb1', 'a lighthouse', 'c-quiet'));
    await add(imagine('jr1', 'please refuse me', 'c-quiet'));
    await add(imagine('jt1', 'this always breaks', 'c-quiet'));
    const backlog = await scrape(workerHttp);
    expect(value(backlog, 'blip3o_queue_depth', { queue: 'jobs', state: 'waiting' })).toBe(5);

    jobsWorker.resume();
    await until(async () => port.deliveries.length === 5, 'five deliveries (three images, two failures)');
    await until(async () => (await jobsQueue.getJobCounts('failed', 'completed')).failed === 2, 'two failed jobs');

    const w = await scrape(workerHttp);
    // queue wait: one observation per finished job
    expect(value(w, 'blip3o_queue_wait_seconds_count', { queue: 'jobs', kind: 'imagine' })).toBe(5);
    // stage latency for each stage the pipeline walked
    for (const stage of ['conditioning', 'features', 'decoding']) {
      expect(value(w, 'blip3o_job_stage_seconds_count', { kind: 'imagine', stage }), stage).toBe(3);
    }
    expect(value(w, 'blip3o_job_seconds_count', { kind: 'imagine', outcome: 'succeeded' })).toBe(3);
    expect(value(w, 'blip3o_job_seconds_count', { kind: 'imagine', outcome: 'failed' })).toBe(2);
    // GPU-seconds charged per platform (three images and two failures); no channel, user or workspace id in any label
    expect(value(w, 'blip3o_gpu_seconds_total', { platform: 'discord', provider: 'cpu' })).toBeGreaterThan(0);
    for (const id of ['c-busy', 'c-quiet', 'g1', 'u1']) expect(w).not.toMatch(new RegExp(`="[^"]*\\b${id}\\b[^"]*"`));
    // failures by reason: the refused prompt once (not retried), the broken one on each of its two attempts
    expect(value(w, 'blip3o_failures_total', { component: 'worker', queue: 'jobs', reason: 'bad_request' })).toBe(1);
    expect(value(w, 'blip3o_failures_total', { component: 'worker', queue: 'jobs', reason: 'internal' })).toBe(2);
    expect(value(w, 'blip3o_queue_depth', { queue: 'jobs', state: 'completed' })).toBe(3);
    expect(value(w, 'blip3o_execution_provider', { provider: 'cpu', configured: 'auto' })).toBe(1);
    expect(w).toMatch(/^blip3o_process_cpu_seconds_total\{component="worker"\} /m);

    const b = await scrape(botHttp);
    expect(value(b, 'blip3o_deliveries_total', { platform: 'discord', outcome: 'delivered' })).toBe(5);
    expect(value(b, 'blip3o_deliveries_total', { platform: 'discord', outcome: 'retried' })).toBe(1);
    expect(value(b, 'blip3o_failures_total', { component: 'bot', queue: 'delivery-discord', reason: 'Error' })).toBe(1);
    expect(value(b, 'blip3o_queue_depth', { queue: 'delivery-discord', state: 'completed' })).toBe(5);
  });

  it('answers /healthz and /readyz, and names a failing readiness check', async () => {
    expect((await fetch(`${workerHttp.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${workerHttp.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, checks: { redis: 'ok' } });
    workerHttp.setCheck('model', () => 'model still downloading');
    const notReady = await fetch(`${workerHttp.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, checks: { redis: 'ok', model: 'model still downloading' } });
    expect((await fetch(`${workerHttp.url}/healthz`)).status).toBe(200); // alive while not ready
    expect((await fetch(`${workerHttp.url}/nope`)).status).toBe(404);
  });

  it('the worker process (worker/main.ts) serves them on worker.healthPort: ready once it takes jobs', async () => {
    const port = await freePort();
    const h = makeHarness({ worker: { healthPort: port }, http: { host: '127.0.0.1', botPort: 0 } });
    const proc = await startWorker(h);
    try {
      const base = `http://127.0.0.1:${port}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      const ready = await fetch(`${base}/readyz`);
      expect(await ready.json()).toEqual({ ready: true, checks: { jobs: 'ok', redis: 'ok' } });
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(value(text, 'blip3o_queue_depth', { queue: 'jobs', state: 'waiting' })).toBe(0);
      expect(text).toMatch(/^# TYPE blip3o_gpu_seconds_total counter$/m);
      expect(proc.output()).toMatch(/serving \/healthz, \/readyz and \/metrics/);
    } finally {
      await proc.kill('SIGTERM');
      await cleanup(redis, h.prefix);
    }
  });

  it('a worker process is not ready while its Redis is down, ready again once it is back, and not ready while it stops', async () => {
    const server = await startRedisServer();
    let redisServer = server;
    const url = `redis://127.0.0.1:${server.port}`;
    const port = await freePort();
    const h = makeHarness({ worker: { healthPort: port, stopGraceMs: 20_000, pipelineExtra: { stepDelayMs: 1500 } }, http: { host: '127.0.0.1', botPort: 0 } });
    const proc = await startWorker(h, { REDIS_URL: url });
    const base = `http://127.0.0.1:${port}`;
    const readyz = async () => {
      const r = await fetch(`${base}/readyz`);
      return { status: r.status, checks: ((await r.json()) as { checks: Record<string, string> }).checks };
    };
    const own = createRedis(url, 'metrics-test-own');
    try {
      expect((await readyz()).status).toBe(200);
      await redisServer.crash();
      // Each /readyz with Redis down waits out its check's timeout (2 s): keep the answer that said 503, not ask again.
      let down: Awaited<ReturnType<typeof readyz>> | undefined;
      await until(async () => (down = await readyz()).status === 503, 'not ready with Redis down');
      expect(down!.checks.redis).toMatch(/no answer within|Redis/);
      expect((await fetch(`${base}/healthz`)).status).toBe(200); // alive: not restarted for a Redis outage
      redisServer = await redisServer.restart();
      await until(async () => (await readyz()).status === 200, 'ready again with Redis back');

      // SIGTERM with a job running: the worker finishes it (worker.stopGraceMs) but takes no new one, so not ready
      const q = createJobsQueue(h.config, own);
      const job = imagine(randomUUID(), 'a slow fox', 'c-stop');
      await q.add(job.kind, job, { ...jobOptions(h.config), jobId: job.id });
      await until(async () => (await q.getJobCounts('active')).active === 1, 'the job running');
      proc.child.kill('SIGTERM');
      await until(async () => (await readyz()).status === 503, 'not ready while stopping', 5_000);
      expect((await readyz()).checks.jobs).toBe('stopping: finishing running jobs, taking no new ones');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      await q.close();
    } finally {
      await proc.kill('SIGKILL');
      await closeRedis(own);
      await redisServer.kill();
    }
  });

  it('the bots process (bots/main.ts) serves them on http.botPort, with its delivery queue; not ready while its gateway is down', async () => {
    const port = await freePort();
    const fake = await FakeDiscord.start();
    const h = makeHarness({
      http: { host: '127.0.0.1', botPort: port },
      // Each re-login below identifies (three in a row); a 300 ms IDENTIFY window, not Discord's 5 s, against the fake
      discord: { enabled: true, apiBaseUrl: fake.apiBase, downloadHosts: [new URL(fake.apiBase).host], identifyWindowMs: 300 },
      slack: { enabled: false },
    });
    const proc = spawnTs('bots/main.ts', h, [], { DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId });
    try {
      await proc.waitFor('bots ready', 60_000);
      const base = `http://127.0.0.1:${port}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect(await (await fetch(`${base}/readyz`)).json()).toEqual({ ready: true, checks: { started: 'ok', redis: 'ok', discord: 'ok' } });
      // The portal switches Message Content off: Discord ends the session, the bot logs in again without it
      fake.setMessageContentAllowed(false);
      const seen = new Set<string>();
      for (const end = Date.now() + 30_000; Date.now() < end && !(seen.has('down') && seen.has('up again')); ) {
        const r = await fetch(`${base}/readyz`);
        const body = (await r.json()) as { checks: Record<string, string> };
        if (r.status === 503) {
          expect(body.checks).toEqual({ started: 'ok', redis: 'ok', discord: 'the Discord gateway is not connected' });
          seen.add('down');
        } else if (seen.has('down')) seen.add('up again');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect([...seen]).toEqual(['down', 'up again']);
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(value(text, 'blip3o_queue_depth', { queue: 'delivery-discord', state: 'waiting', component: 'bot' })).toBe(0);
      expect(value(text, 'blip3o_queue_depth', { queue: 'jobs', state: 'waiting', component: 'bot' })).toBe(0);
      expect(text).toMatch(/^# TYPE blip3o_deliveries_total counter$/m);
    } finally {
      await proc.kill('SIGTERM');
      await fake.close();
      await cleanup(redis, h.prefix);
    }
  });
});

