// Redis Cluster failing over for real: 3 masters with a replica each (Debian redis-server processes on loopback,
// cluster-node-timeout 1 s), a real worker process and in-process cores on REDIS_URL=redis+cluster://…, 100 jobs in
// flight through the CLI path, and the master serving the deployment's hash tag SIGKILLed mid-load. Its replica takes
// the slot over; every accepted job is delivered exactly once, as across a Sentinel failover
// (redis-sentinel.redis.test.ts): acceptance waits for the replica (redis.acceptReplicas: 1).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { makeHarness, startWorker, until, type Proc } from '../doubles/spine-harness.ts';
import { slotOwnerPort, startCluster, type ClusterSet, type RedisProcess } from '../doubles/redis-processes.ts';
import { expectDeliveredOnce, expectServedAfter, loadAcrossKill, startClients, stopAll, type LoadClient } from '../doubles/failover-load.ts';

let cluster: ClusterSet;
let worker: Proc | undefined;
let clients: LoadClient[] = [];
let slot = 0;
/** The master the first test killed, and the replica that took its slot over. */
let victim: RedisProcess | undefined;
let promoted: RedisProcess | undefined;

const tag = `{f-${randomUUID().slice(0, 8)}}`;
const h = makeHarness({
  redis: { acceptReplicas: 1, acceptReplicaWaitMs: 2_000 },
  queue: { prefix: tag, attempts: 5, backoffMs: 200, lockDurationMs: 4_000, stalledIntervalMs: 2_000, maxStalledCount: 5 },
  worker: { concurrency: 4, pipelineExtra: { stepDelayMs: 20 } },
});

beforeAll(async () => {
  cluster = await startCluster({ replicasPerMaster: 1, nodeTimeoutMs: 1_000 });
  worker = await startWorker(h, { REDIS_URL: cluster.url });
}, 180_000);

afterAll(() => stopAll(clients, worker, cluster));

describe('Redis Cluster failover', () => {
  it("delivers every accepted job exactly once across a failover of the tag's master (SIGKILL mid-load)", async () => {
    clients = await startClients(h, cluster.url, 4);
    // Every key of the deployment is in the tag's slot, on one master: that one dies.
    const probe = createRedis(cluster.url, 'cluster-failover-test');
    slot = Number(await probe.call('CLUSTER', 'KEYSLOT', tag));
    await closeRedis(probe);
    const oldOwner = await slotOwnerPort(cluster.masters[0]!.port, slot);
    victim = cluster.masters.find((m) => m.port === oldOwner);
    expect(victim, `the master serving slot ${slot}`).toBeDefined();
    const survivor = [...cluster.masters, ...cluster.replicas].find((n) => n !== victim)!;

    // 100 submissions spread over ~2 s; the master dies after the 40th is accepted, with jobs queued and running.
    let killedAt = 0;
    const moved = (async () => {
      while (!killedAt) await new Promise((r) => setTimeout(r, 20));
      await until(async () => (await slotOwnerPort(survivor.port, slot)) !== oldOwner, 30_000, 'the replica to take the slot over');
      return Date.now() - killedAt;
    })();
    const load = await loadAcrossKill(clients, 0, 100, 40, async () => {
      await victim!.crash();
      killedAt = Date.now();
    });
    const failoverMs = await moved;
    const newOwner = await slotOwnerPort(survivor.port, slot);
    promoted = cluster.replicas.find((r) => r.port === newOwner);
    expect(promoted, 'the replica now serving the slot').toBeDefined();
    expect(load.replies).toHaveLength(100);
    expect(load.replies.filter((r) => r.i < 40).every((r) => r.reply.kind === 'queued')).toBe(true);
    console.log(`cluster failover: the replica served the slot ${failoverMs} ms after the kill; every request answered by ${load.answeredMs} ms`);
    await expectDeliveredOnce({ label: 'cluster failover', h, url: cluster.url, clients, worker }, load.replies, load.killedAt);
    await expectServedAfter(clients, 100);
  }, 240_000);

  it('fails back: the old master, restarted from its nodes.conf, rejoins as a replica; killed in turn, the promoted one hands the slot back', async () => {
    const promotedNode = createRedis(`redis://127.0.0.1:${promoted!.port}`, 'cluster-promoted');
    await promotedNode.config('SET', 'repl-diskless-sync-delay', '0'); // a test need not wait 5 s for more replicas
    await closeRedis(promotedNode);
    const returned = await victim!.restart();
    cluster.masters[cluster.masters.indexOf(victim!)] = returned;
    const node = createRedis(`redis://127.0.0.1:${returned.port}`, 'cluster-returned');
    await until(async () => {
      const info = await node.info('replication');
      return info.includes('role:slave') && info.includes('master_link_status:up');
    }, 30_000, 'the old master to replicate the promoted one');
    await closeRedis(node);
    const survivor = cluster.masters.find((m) => m !== returned)!;
    const { replies, killedAt } = await loadAcrossKill(clients, 200, 30, 10, () => promoted!.crash());
    await until(async () => (await slotOwnerPort(survivor.port, slot)) === returned.port, 30_000, 'the old master to take the slot back');
    expect(replies.filter((r) => r.i < 210).every((r) => r.reply.kind === 'queued')).toBe(true);
    await expectDeliveredOnce({ label: 'cluster fail-back', h, url: cluster.url, clients, worker }, replies, killedAt);
    await expectServedAfter(clients, 300);
  }, 240_000);
});
