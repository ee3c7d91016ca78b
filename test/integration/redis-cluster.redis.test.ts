// Redis Cluster for real: 3 masters (Debian redis-server processes on loopback, `redis-cli --cluster create`), a real
// worker process and in-process cores on REDIS_URL=redis+cluster://…, with queue.prefix a hash tag. Jobs go through
// the whole CLI path (result cache lookup/claim, budgets, rate limits, fair scheduling, the worker, the delivery
// ledger), every one delivered exactly once and its PNG released; every Lua script of ours runs on the cluster (a script touching a key
// of another slot fails there with CROSSSLOT or "non local key"), and a prefix that is not a hash tag is refused.
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import { QueueNames, type CliDestination } from '../../src/jobs/contract.ts';
import { createJobsQueue, createQueueWorker } from '../../src/jobs/queue.ts';
import { createBlobStore } from '../../src/blobs/index.ts';
import { createGate } from '../../src/limits/gate.ts';
import { addressOf, closeRedis, createRedis, duplicateRedis, isCluster, scanKeys, waitForReplicas, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, runs, startWorker, stopProcess, type Proc } from '../doubles/spine-harness.ts';
import { startCluster, type ClusterSet } from '../doubles/redis-processes.ts';
import { countWrites } from '../doubles/socket-writes.ts';

let cluster: ClusterSet;
let worker: Proc | undefined;
let redis: Redis;
const clients: { clientId: string; port: RecordingPort; core: Core }[] = [];

const LIMIT = { requestsPerWindow: 1_000, windowSeconds: 60, burst: 1_000, maxConcurrent: 100 }; // on, never refusing
const tag = `{t-${randomUUID().slice(0, 8)}}`;
const h = makeHarness({
  queue: { prefix: tag },
  limits: { channel: LIMIT, user: LIMIT, workspace: LIMIT },
  cache: { enabled: true, singleFlight: true },
  worker: { concurrency: 4, pipelineExtra: { stepDelayMs: 5 } },
});

beforeAll(async () => {
  cluster = await startCluster();
  redis = createRedis(cluster.url, 'cluster-test');
  worker = await startWorker(h, { REDIS_URL: cluster.url });
}, 180_000);

afterAll(async () => {
  for (const c of clients) await c.core.stop().catch(() => undefined);
  await stopProcess(worker);
  if (redis) await closeRedis(redis);
  await cluster?.stop();
});

describe('Redis Cluster', () => {
  it('runs 40 jobs from 3 clients through the CLI path on a 3-master cluster, each delivered exactly once', async () => {
    expect(isCluster(redis)).toBe(true);
    expect(addressOf(redis)).toBe(`cluster ${cluster.masters.map((m) => `127.0.0.1:${m.port}`).join(',')}`); // what log lines name
    const secrets = loadSecrets({ REDIS_URL: cluster.url });
    for (let i = 0; i < 3; i++) {
      const clientId = randomUUID();
      const port = new RecordingPort('cli');
      const core = createCore({ config: h.config, secrets, ports: [port], cliClientId: clientId });
      await core.start();
      clients.push({ clientId, port, core });
    }
    const replies = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const c = clients[i % clients.length]!;
        // a few channels and users, so fair scheduling has lines to interleave
        const destination: CliDestination = { platform: 'cli', clientId: c.clientId, channelId: `ch${i % 4}`, userId: `u${i % 5}` };
        const inv: Invocation = { input: { command: 'imagine', prompt: `fox ${i}`, seed: i, ditSteps: 4, decoderSteps: 4 }, destination, dedupeKey: `k${i}`, isAdmin: false };
        return { i, reply: await c.core.handle(inv) };
      }),
    );
    for (const { reply } of replies) expect(reply.kind).toBe('queued');
    for (const { i, reply } of replies) await clients[i % clients.length]!.port.waitFor((reply as { jobId: string }).jobId, 120_000);
    await new Promise((r) => setTimeout(r, 1_000)); // let a duplicate arrive, if one were coming
    for (const { i, reply } of replies) {
      const jobId = (reply as { jobId: string }).jobId;
      const owner = clients[i % clients.length]!;
      expect(owner.port.count(jobId), `job ${i}`).toBe(1);
      for (const other of clients) if (other !== owner) expect(other.port.count(jobId)).toBe(0);
      const delivered = owner.port.deliveries.find((d) => d.result.jobId === jobId)!.result;
      expect(delivered.status).toBe('succeeded');
      expect(await redis.ttl(delivered.image!.blobKey)).toBeLessThanOrEqual(h.config.blobs.keepDeliveredSeconds); // released
    }
    const ran = runs(h).filter((r) => r.kind === 'generate').map((r) => r.prompt);
    for (let i = 0; i < 40; i++) expect(ran).toContain(`fox ${i}`);

    // The scripts the path above did not run (repair, position, sweeps) run on the cluster too, and every key of
    // ours is under the tag: all in the slot of the tag, on one master.
    const queue = createJobsQueue(h.config, redis);
    const gate = createGate(redis, h.config, queue);
    await gate.scheduler.repair();
    expect(await gate.scheduler.position('nope')).toEqual({ state: 'none' });
    await gate.limiter.sweep();
    await gate.usage.sweep();
    await queue.close();
    // the blob store's scripts: every delivered PNG was released above; a follower's copy (COPY) stays in the slot
    const blobs = createBlobStore(h.config, redis);
    const png = await blobs.put(Uint8Array.from([137, 80, 78, 71]), 'output');
    const copy = await blobs.share(png, 'follower');
    expect(await blobs.get(copy!)).toEqual(Uint8Array.from([137, 80, 78, 71]));
    await blobs.release(png, 1);
    expect(await redis.ttl(png)).toBeLessThanOrEqual(1);
    expect(await waitForReplicas(redis, 1, 100)).toBe(0); // WAIT goes to every master (none has a replica here)
    const keys: string[] = [];
    for await (const batch of scanKeys(redis, `${tag}:*`)) keys.push(...batch);
    expect(keys.length).toBeGreaterThan(10);
    const slots = new Set(await Promise.all(keys.map(async (k) => Number(await redis.call('CLUSTER', 'KEYSLOT', k)))));
    expect(slots.size).toBe(1);
    await cleanup(redis, tag);
    const left: string[] = [];
    for await (const batch of scanKeys(redis, `${tag}:*`)) left.push(...batch);
    expect(left).toEqual([]);
  }, 240_000);

  it('refuses a queue prefix that is not a hash tag, saying what to set', () => {
    const plain = makeHarness({ queue: { prefix: 'blip3o' } });
    expect(() => createJobsQueue(plain.config, redis)).toThrow(/queue.prefix "blip3o" must be a hash tag with Redis Cluster, e.g. "\{blip3o\}"/);
    expect(() => createQueueWorker(plain.config, redis, QueueNames.jobs, async () => undefined)).toThrow(/hash tag/);
  });

  it("batches each node connection's writes: twenty commands of one slot sent in one turn are one write (src/redis.ts)", async () => {
    for (const cluster of [redis, duplicateRedis(redis)]) {
      const keys = Array.from({ length: 20 }, (_, i) => `${tag}:batched:${i}`);
      await cluster.del(...keys); // every master connected, the slot's node known
      const connected = (cluster as Cluster).nodes('master').filter((node) => node.stream); // nodes connect lazily
      expect(connected.length).toBeGreaterThan(0);
      const counters = connected.map((node) => countWrites(node.stream as Socket));
      const replies = await Promise.all(keys.map((key, i) => cluster.incrby(key, i + 1)));
      expect(replies).toEqual(keys.map((_, i) => i + 1));
      expect(counters.map((writes) => writes()).reduce((a, b) => a + b)).toBe(1);
      await cluster.del(...keys);
      if (cluster !== redis) await closeRedis(cluster);
    }
  });
});
