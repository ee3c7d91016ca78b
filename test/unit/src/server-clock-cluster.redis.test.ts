// ServerClock (src/server-clock.ts) on a Redis Cluster: TIME is read on the master that holds the deployment's keys,
// whose clock the scripts read (NOW_MS_LUA) and whose TTLs run. A TIME without a key goes to any master, each its own
// host with its own clock: a bot and a sweeper reading two of them were as far apart as those hosts. On real
// redis-server processes (one host here, so which node answered is read from each node's command counts).
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRedis, createRedis } from '../../../src/redis.ts';
import { SAMPLE_MS, ServerClock } from '../../../src/server-clock.ts';
import { slotOwnerPort, startCluster, type ClusterSet } from '../../doubles/redis-processes.ts';

let cluster: ClusterSet;

beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** How many TIME commands each master ran, by port (scripts' calls included). */
async function timeCalls(): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const m of cluster.masters) {
    const node = createRedis(`redis://127.0.0.1:${m.port}`, 'time-calls-probe');
    try {
      counts.set(m.port, Number(/cmdstat_time:calls=(\d+)/.exec(await node.info('commandstats'))?.[1] ?? 0));
    } finally {
      await closeRedis(node);
    }
  }
  return counts;
}

describe('ServerClock on a Redis Cluster', () => {
  it("reads TIME on the master of the deployment's slot, every time", async () => {
    const redis = createRedis(cluster.url, 'server-clock-cluster-test') as Cluster;
    try {
      const routeKey = '{blip3o}:server-clock';
      const owner = await slotOwnerPort(cluster.masters[0]!.port, Number(await redis.cluster('KEYSLOT', routeKey)));
      const before = await timeCalls();
      let monotonicMs = 0;
      const clock = new ServerClock(redis, Date.now, () => monotonicMs, routeKey); // as forDeployment(redis, "{blip3o}")
      for (let i = 0; i < 12; i++) {
        await clock.now();
        monotonicMs += SAMPLE_MS; // the next reading asks Redis again
      }
      const after = await timeCalls();
      const answered = [...after].map(([port, calls]) => ({ port, calls: calls - (before.get(port) ?? 0) }));
      expect(answered.filter((a) => a.port !== owner && a.calls > 0)).toEqual([]);
      expect(answered.find((a) => a.port === owner)?.calls).toBe(12);
    } finally {
      await closeRedis(redis);
    }
  }, 30_000);
});
