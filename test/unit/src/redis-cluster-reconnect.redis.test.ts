// A Cluster connection that is reconnected while the cluster is failing over connects again (src/redis.ts,
// parseRedisUrl: enableReadyCheck off). ioredis 6's Cluster.connect() runs a ready check (CLUSTER INFO) once it has the
// slots; when that says cluster_state:fail it drops the connection and retries, and the promise connect() returned
// never settles. BullMQ's watchdog does exactly this to a worker's blocking connection (disconnect, then connect) when a
// blocking fetch outlives its timeout, which a failover makes it do: the Cluster fail-back test caught delivery workers
// parked on that promise for good, with their results waiting. Here the cluster is made to fail (a master without a
// replica killed) and the connection reconnected meanwhile, on real redis-server processes.
import { randomUUID } from 'node:crypto';
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRedis, createRedis } from '../../../src/redis.ts';
import { slotOwnerPort, startCluster, type ClusterSet } from '../../doubles/redis-processes.ts';
import { until } from '../../doubles/spine-harness.ts';

let cluster: ClusterSet;

beforeAll(async () => {
  cluster = await startCluster({ nodeTimeoutMs: 500 });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** CLUSTER INFO's cluster_state, as the node on `port` sees it. */
async function clusterState(port: number): Promise<string> {
  const node = createRedis(`redis://127.0.0.1:${port}`, 'cluster-state-probe');
  try {
    return /cluster_state:(\w+)/.exec(String(await node.call('CLUSTER', 'INFO')))![1]!;
  } finally {
    await closeRedis(node);
  }
}

describe('Redis Cluster: a connection reconnected while the cluster is down', () => {
  it("connects again (its connect() settles), and serves commands once the cluster is back", async () => {
    const redis = createRedis(cluster.url, 'cluster-reconnect-test') as Cluster;
    const key = `{cluster-reconnect}:${randomUUID()}`;
    expect(await redis.set(key, '1', 'EX', 60)).toBe('OK');

    // The master to kill is one that does not hold the key (the restarted one comes back empty).
    const keyOwner = await slotOwnerPort(cluster.masters[0]!.port, Number(await redis.cluster('KEYSLOT', key)));
    const victimIndex = cluster.masters.findIndex((m) => m.port !== keyOwner);
    const victim = cluster.masters[victimIndex]!;
    const witness = cluster.masters.find((m) => m !== victim)!;
    await victim.crash();
    await until(async () => (await clusterState(witness.port)) === 'fail', 20_000, 'the cluster to fail');

    // What BullMQ's watchdog does to a blocking connection: disconnect, wait for the end, connect again.
    const ended = new Promise<void>((resolve) => redis.once('end', () => resolve()));
    redis.disconnect();
    await ended;
    let settled: 'connected' | 'rejected' | undefined;
    const connecting = redis.connect().then(
      () => (settled = 'connected'),
      () => (settled = 'rejected'),
    );
    await new Promise((r) => setTimeout(r, 1_500)); // long enough for a ready check to fail and drop it

    cluster.masters[victimIndex] = await victim.restart();
    for (const m of cluster.masters) await until(async () => (await clusterState(m.port)) === 'ok', 20_000, 'the cluster to recover');
    await Promise.race([connecting, new Promise((r) => setTimeout(r, 10_000))]);
    // Before the fix: undefined for ever (a promise nobody settles), and BullMQ's fetch loop awaited it.
    expect(settled).toBe('connected');
    expect(await redis.get(key)).toBe('1');
    await closeRedis(redis);
  }, 60_000);
});
