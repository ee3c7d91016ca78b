// Redis Cluster failing over for real: 3 masters with a replica each (Debian redis-server processes on loopback,
// cluster-node-timeout 1 s), a real worker process and in-process cores on REDIS_URL=redis+cluster://…, 100 jobs in
// flight through the CLI path, and the master serving the deployment's hash tag SIGKILLed mid-load. Its replica takes
// the slot over; every accepted job is delivered exactly once, as across a Sentinel failover
// (redis-sentinel.redis.test.ts): acceptance waits for the replica (redis.acceptReplicas: 1).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation, Reply } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { CliDestination } from '../../src/jobs/contract.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { makeHarness, RecordingPort, runs, spawnWithConfig, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { slotOwnerPort, startCluster, type ClusterSet } from '../doubles/redis-processes.ts';
import { jobState } from '../doubles/job-state.ts';

let cluster: ClusterSet;
let worker: Proc | undefined;
const clients: { clientId: string; port: RecordingPort; core: Core }[] = [];

const tag = `{f-${randomUUID().slice(0, 8)}}`;
const h = makeHarness({
  redis: { acceptReplicas: 1, acceptReplicaWaitMs: 2_000 },
  queue: { prefix: tag, attempts: 5, backoffMs: 200, lockDurationMs: 4_000, stalledIntervalMs: 2_000, maxStalledCount: 5 },
  worker: { concurrency: 4, pipelineExtra: { stepDelayMs: 20 } },
});

beforeAll(async () => {
  cluster = await startCluster({ replicasPerMaster: 1, nodeTimeoutMs: 1_000 });
  worker = spawnWithConfig('worker/main.ts', h.configFile, [], { REDIS_URL: cluster.url });
  await worker.waitFor('worker ready', 120_000);
}, 180_000);

afterAll(async () => {
  for (const c of clients) await c.core.stop().catch(() => undefined);
  await stopProcess(worker);
  await cluster?.stop();
});

describe('Redis Cluster failover', () => {
  it("delivers every accepted job exactly once across a failover of the tag's master (SIGKILL mid-load)", async () => {
    const secrets = loadSecrets({ REDIS_URL: cluster.url });
    for (let i = 0; i < 4; i++) {
      const clientId = randomUUID();
      const port = new RecordingPort('cli');
      const core = createCore({ config: h.config, secrets, ports: [port], cliClientId: clientId });
      await core.start();
      clients.push({ clientId, port, core });
    }
    // Every key of the deployment is in the tag's slot, on one master: that one dies.
    const probe = createRedis(cluster.url, 'cluster-failover-test');
    const slot = Number(await probe.call('CLUSTER', 'KEYSLOT', tag));
    await closeRedis(probe);
    const oldOwner = await slotOwnerPort(cluster.masters[0]!.port, slot);
    const victim = cluster.masters.find((m) => m.port === oldOwner)!;
    expect(victim, `the master serving slot ${slot}`).toBeDefined();
    const survivor = [...cluster.masters, ...cluster.replicas].find((n) => n !== victim)!;

    const submit = (i: number): Promise<{ i: number; reply: Reply }> => {
      const c = clients[i % clients.length]!;
      const destination: CliDestination = { platform: 'cli', clientId: c.clientId, channelId: 'local', userId: `u${i % 7}` };
      const inv: Invocation = { input: { command: 'imagine', prompt: `fox ${i}`, seed: i, ditSteps: 4, decoderSteps: 4 }, destination, dedupeKey: `k${i}`, isAdmin: false };
      return c.core.handle(inv).then((reply) => ({ i, reply }));
    };

    // 100 submissions spread over ~2 s; the master dies after the 40th is accepted, with jobs queued and running.
    const pending: Promise<{ i: number; reply: Reply }>[] = [];
    let killedAt = 0;
    const moved = (async () => {
      while (!killedAt) await new Promise((r) => setTimeout(r, 20));
      await until(async () => (await slotOwnerPort(survivor.port, slot)) !== oldOwner, 30_000, 'the replica to take the slot over');
      return Date.now() - killedAt;
    })();
    for (let i = 0; i < 100; i++) {
      pending.push(submit(i));
      if (i === 40) {
        await Promise.all(pending.slice(0, 40));
        await victim.kill('SIGKILL');
        killedAt = Date.now();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const replies = await Promise.all(pending);
    const answeredMs = Date.now() - killedAt;
    const failoverMs = await moved;
    expect(cluster.replicas.map((r) => r.port)).toContain(await slotOwnerPort(survivor.port, slot));

    const accepted = replies.filter((r) => r.reply.kind === 'queued').map((r) => ({ i: r.i, jobId: (r.reply as { jobId: string }).jobId }));
    const refused = replies.filter((r) => r.reply.kind !== 'queued');
    expect(accepted.length + refused.length).toBe(100);
    const refusedTexts = new Set(refused.map((r) => (r.reply as { text: string }).text));
    for (const text of refusedTexts) expect(text).toMatch(/^I lost my connection to the job queue for a moment/);
    expect(replies.filter((r) => r.i < 40).every((r) => r.reply.kind === 'queued')).toBe(true);
    console.log(`cluster failover: ${accepted.length} accepted, ${refused.length} refused with the retry message`);
    const missing: typeof accepted = [];
    await Promise.all(accepted.map((a) => clients[a.i % clients.length]!.port.waitFor(a.jobId, 120_000).catch(() => missing.push(a))));
    console.log(`cluster failover: the replica served the slot ${failoverMs} ms after the kill; every request answered by ${answeredMs} ms, every accepted job delivered by ${Date.now() - killedAt} ms`);
    if (missing.length > 0) {
      const r = createRedis(cluster.url, 'cluster-failover-dump');
      for (const { i, jobId } of missing) console.log(await jobState(r, h.prefix, jobId, clients[i % clients.length]!.clientId, worker?.output() ?? ''));
      await closeRedis(r);
    }
    expect(missing.map((a) => a.i), 'accepted jobs never delivered').toEqual([]);
    await new Promise((r) => setTimeout(r, 1_500)); // let a duplicate arrive, if one were coming
    for (const { i, jobId } of accepted) {
      const owner = clients[i % clients.length]!;
      expect(owner.port.count(jobId), `job ${i}`).toBe(1);
      for (const other of clients) if (other !== owner) expect(other.port.count(jobId)).toBe(0);
      expect(owner.port.deliveries.find((d) => d.result.jobId === jobId)!.result.status).toBe('succeeded');
    }
    const ran = new Set(runs(h).map((r) => r.prompt));
    for (const { i } of accepted) expect(ran.has(`fox ${i}`)).toBe(true);
    console.log(`cluster failover: ${runs(h).filter((r) => r.kind === 'generate').length} runs for ${accepted.length} jobs (a job whose completion the replica had not yet got runs again)`);

    // After the failover a new request is accepted and delivered: the deployment recovered by itself.
    const late = await submit(100);
    expect(late.reply.kind).toBe('queued');
    const lateId = (late.reply as { jobId: string }).jobId;
    await clients[100 % clients.length]!.port.waitFor(lateId, 120_000);
    expect(clients[100 % clients.length]!.port.count(lateId)).toBe(1);
  }, 240_000);
});
